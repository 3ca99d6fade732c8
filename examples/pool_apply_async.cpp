// Tutorial section "Pool / 非阻塞添加任务-进程池": a Pool(4) runs ten tasks added with
// apply_async, which returns at once; close() takes no more tasks and join() waits for the
// ten to finish and the workers to end.
//
// Four workers run the tasks four at a time, so the lines of different tasks interleave
// in an order that changes from run to run, as in the tutorial's output. Each line ends
// with std::endl: it reaches stdout whole and at once even when stdout is a pipe, so no
// worker's line is held back or mixed into another's ("结束执行任务2结束执行任务1" in the
// tutorial's output is Python's print racing between workers).
//
// Python's apply_async drops a failed task's exception unless someone calls get(); the
// twin keeps the ten async_results and checks them after join(), so a task that failed
// (or a worker that died) is reported, not lost.
#include <chrono>
#include <exception>
#include <iostream>
#include <thread>
#include <vector>

#include <mproc/pool.hpp>

namespace {

using namespace std::chrono_literals;

// Runs in a worker process of the pool.
void test(int num) {
  std::cout << "开始执行任务" << num << std::endl;
  std::this_thread::sleep_for(100ms);
  std::cout << "结束执行任务" << num << std::endl;
}

}  // namespace

int main() {
  mproc::pool pool(4);
  std::vector<mproc::async_result<void>> results;
  for (int i = 0; i < 10; ++i) {
    results.push_back(pool.apply_async(test, i));  // 向进程池添加任务, 非阻塞方式
  }
  pool.close();  // 关闭进程池,不再接收新的任务
  pool.join();   // 回收进程池资源: waits for the ten tasks and the workers

  int failed = 0;
  for (auto& result : results) {
    try {
      result.get();  // ready after join(); rethrows the task's exception
    } catch (const std::exception& e) {
      std::cerr << "任务失败: " << e.what() << std::endl;
      ++failed;
    }
  }
  if (failed != 0) return 1;
  std::cout << "进程池资源已回收, " << results.size() << "个任务全部执行完毕" << std::endl;
}
