// Tutorial section "Pool / 阻塞添加任务-进程池": the same ten tasks on a Pool(4), added
// with apply, which blocks until its task is done and returns the task's result (here
// void; a task's exception would be rethrown). So the tasks run one after another, whatever
// the number of workers, and the output is strictly ordered: 开始执行任务0, 结束执行任务0,
// 开始执行任务1, ...
//
// A worker flushes its output before it hands back the result (std::endl here, and the
// pool flushes the worker's std streams after each task), so each task's lines are on
// stdout before apply returns and the next task starts.
#include <chrono>
#include <iostream>
#include <thread>

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
  int done = 0;
  for (int i = 0; i < 10; ++i) {
    pool.apply(test, i);  // 向进程池添加任务, 阻塞方式: returns when task i has finished
    ++done;
  }
  pool.close();  // 关闭进程池,不再接收新的任务
  pool.join();   // 回收进程池资源
  std::cout << "进程池资源已回收, " << done << "个任务全部执行完毕" << std::endl;
}
