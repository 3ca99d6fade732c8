// Tutorial section "Process / 使用Process类": a multiprocessing.Process with a target,
// args, kwargs and a name, which the parent terminates after 0.1 s.
//
// Python's *args and **kwargs become a tuple and a map, passed to the target as two
// ordinary arguments; mproc::process copies them into the child, as Python pickles them.
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

#include "python_repr.hpp"
#include <mproc/os.hpp>
#include <mproc/process.hpp>

namespace {

using namespace std::chrono_literals;

void process_fun(const std::tuple<int, int>& args, const std::map<std::string, std::string>& kwargs) {
  for (int i = 0; i < 10; ++i) {
    std::cout << "helloworld" << std::endl;
    std::cout << example::repr(args) << std::endl;
    std::cout << example::repr(kwargs) << std::endl;
    std::cout << "子进程pid:" << mproc::os::getpid() << std::endl;
    std::this_thread::sleep_for(100ms);
  }
}

}  // namespace

int main() {
  // Python: Process(target=process_fun, args=(1,2), kwargs={'A':'a'}, name='test')
  mproc::process p(process_fun, std::tuple{1, 2}, std::map<std::string, std::string>{{"A", "a"}});
  p.set_name("test");
  p.start();  // runs the child
  std::cout << "父进程PID:" << mproc::os::getpid() << std::endl;
  std::cout << p.name() << std::endl;
  std::this_thread::sleep_for(100ms);
  p.terminate();  // ends the child at once, whether or not its task is done
  p.join();       // blocks until the child has ended, and reaps it
  std::cout << example::repr(p.is_alive()) << std::endl;
  std::cout << "父进程结束" << std::endl;
}
