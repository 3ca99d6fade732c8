// Tutorial section "进程池的进程间通讯": two tasks of a process pool talk through a queue.
// The writer task puts three numbers into it, the reader task takes them out, as the
// processes of "使用队列进行进程间通信" do.
//
// Python cannot pass a multiprocessing.Queue to a pool task ("Queue objects should only be
// shared between processes through inheritance"): it needs a Manager().Queue(), a proxy
// served by an extra process. An mproc::queue is a handle that can be passed as a task
// argument, and the task uses the very same shared queue, at the same speed as in the
// process that made it. The queue here is made after the pool, whose workers therefore did
// not inherit it: it reaches them as an argument.
//
// The pool has two workers, so the writer and the reader run at the same time: the reader
// waits in get() for each number the writer puts (with one worker, a reader that ran first
// would wait forever for a writer queued behind it). The reader takes exactly the three
// numbers the writer puts, on any schedule (see queue_processes.cpp).
#include <chrono>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>

#include <mproc/pool.hpp>
#include <mproc/queue.hpp>

namespace {

using namespace std::chrono_literals;

// One whole line, flushed: the two workers' lines stay whole and appear as printed.
void say(std::string_view line) { std::cout << (std::string(line) + '\n') << std::flush; }

// Runs in a worker of the pool, with the queue passed as its argument.
void process_write(mproc::queue<int> q) {
  for (int i = 0; i < 3; ++i) {
    q.put(i);
    say("子进程1写入了一个数据,成功");
    std::this_thread::sleep_for(100ms);
  }
}

// Runs in the other worker; returns the sum of what it read, for the main program to check.
int process_read(mproc::queue<int> q) {
  int sum = 0;
  for (int i = 0; i < 3; ++i) {
    const int ret = q.get();
    say("子进程2获取了一个数据:" + std::to_string(ret));
    sum += ret;
    std::this_thread::sleep_for(100ms);
  }
  return sum;
}

}  // namespace

int main() {
  mproc::pool pool(2);
  mproc::queue<int> q(3);  // Python: Manager().Queue(3)
  auto written = pool.apply_async(process_write, q);
  auto read = pool.apply_async(process_read, q);
  pool.close();
  pool.join();
  try {
    written.get();  // rethrows a task's exception, if any
    if (read.get() != 0 + 1 + 2) {
      std::cerr << "子进程2获取的数据不对" << std::endl;
      return 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "任务失败: " << e.what() << std::endl;
    return 1;
  }
  say("进程池资源已回收");
}
