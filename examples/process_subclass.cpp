// Tutorial section "Process / 继承Process类": a subclass of multiprocessing.Process that
// overrides run(), which the parent terminates after 0.1 s.
//
// The tutorial calls process_fun(args=(1,2), kwargs={'A':'a'}): two keyword arguments, both
// of which its __init__(self, *args, **kwargs) collects into self.kwargs, so run() prints
// {'args': (1, 2), 'kwargs': {'A': 'a'}}. The C++ class takes the two as ordinary
// parameters and prints that same dictionary.
//
// Every line ends with std::endl, not '\n': flushing each line makes the two processes'
// lines appear as they are printed even when stdout is a pipe, and a child ended by
// terminate() loses none of the lines it printed.
#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include "python_repr.hpp"
#include <mproc/os.hpp>
#include <mproc/process.hpp>

namespace {

using namespace std::chrono_literals;

class process_fun : public mproc::process {
 public:
  process_fun(std::tuple<int, int> args, std::map<std::string, std::string> kwargs)
      : args_(std::move(args)), kwargs_(std::move(kwargs)) {}

  // Runs in the child, which start() forked with a copy of this object.
  void run() override {
    for (int i = 0; i < 10; ++i) {
      std::cout << "helloworld" << std::endl;
      std::cout << "{'args': " << example::repr(args_) << ", 'kwargs': " << example::repr(kwargs_) << "}" << std::endl;
      std::cout << "子进程pid:" << mproc::os::getpid() << std::endl;
      std::this_thread::sleep_for(100ms);
    }
  }

 private:
  std::tuple<int, int> args_;
  std::map<std::string, std::string> kwargs_;
};

}  // namespace

int main() {
  process_fun p({1, 2}, {{"A", "a"}});
  p.start();  // runs the child
  std::cout << "父进程PID:" << mproc::os::getpid() << std::endl;
  std::this_thread::sleep_for(100ms);
  p.terminate();  // ends the child at once, whether or not its task is done
  p.join();       // blocks until the child has ended, and reaps it
  std::cout << example::repr(p.is_alive()) << std::endl;
  std::cout << "父进程结束" << std::endl;
}
