// Beyond the tutorial: Python's forkserver start method.
//   multiprocessing.set_start_method("forkserver")
//   p = Process(target=square, args=(i, results)); p.start()
//
// A program with threads of its own (a logger here; in real programs gRPC, an allocator's
// or a metrics library's) that forks can hand its child a lock one of those threads held
// at that instant, and the child hangs on it for ever. mproc::forkserver forks the child
// from a server that never ran those threads: this program re-executed before its first
// forkserver child, taking over before main.
//
// The target is found in the server by name: a lambda without captures, a function object,
// or (as here) a function registered with MPROC_REMOTE. The arguments travel serialised;
// a queue travels as a handle to the same queue, as it does to a pool task.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <mproc/mproc.hpp>

namespace {

using namespace std::chrono_literals;

std::mutex log_mutex;  // the logger thread holds it most of the time

void square(int n, mproc::queue<std::string> results) {
  std::lock_guard lock(log_mutex);  // a forked child could wait here for ever: no logger thread would let go
  results.put("子进程 " + std::to_string(n) + " (" + mproc::current_process().name + "): " + std::to_string(n * n));
}
MPROC_REMOTE(square);

}  // namespace

int main() {
  std::atomic<bool> stop{false};
  std::thread logger([&] {
    while (!stop) {
      std::lock_guard lock(log_mutex);
      std::this_thread::sleep_for(1ms);  // "writing a log line"
    }
  });

  mproc::queue<std::string> results;
  std::vector<mproc::process> workers;
  for (int i = 1; i <= 4; ++i) {
    workers.emplace_back(mproc::forkserver, square, i, results);
    workers.back().set_name("worker-" + std::to_string(i));
    workers.back().start();
  }
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < workers.size(); ++i) lines.push_back(results.get());
  for (auto& w : workers) w.join();
  std::sort(lines.begin(), lines.end());
  for (const auto& line : lines) std::cout << line << '\n';
  for (auto& w : workers) std::cout << w.name() << " exitcode " << *w.exitcode() << '\n';

  stop = true;
  logger.join();
  std::cout << "forkserver 示例结束" << std::endl;
}
