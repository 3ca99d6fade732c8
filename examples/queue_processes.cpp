// Tutorial section "使用队列进行进程间通信": a writer process puts three numbers into a
// Queue(3), a reader process takes them out.
//
// The tutorial's reader loops `while not q.empty()`, which works only when the writer
// happens to be ahead of it (a reader that starts first sees an empty queue and ends at
// once). The twin reads exactly the three values the writer puts, which is what the
// tutorial's output shows, on any schedule.
#include <chrono>
#include <iostream>
#include <thread>

#include <mproc/process.hpp>
#include <mproc/queue.hpp>

namespace {

using namespace std::chrono_literals;

void process_write(mproc::queue<int> q) {
  for (int i = 0; i < 3; ++i) {
    q.put(i);
    std::cout << "子进程1写入了一个数据,成功" << std::endl;
    std::this_thread::sleep_for(100ms);
  }
}

void process_read(mproc::queue<int> q) {
  for (int i = 0; i < 3; ++i) {
    const int ret = q.get();
    std::cout << "子进程2获取了一个数据:" << ret << std::endl;
    std::this_thread::sleep_for(100ms);
  }
}

}  // namespace

int main() {
  mproc::queue<int> q(3);
  mproc::process p1(process_write, q);
  mproc::process p2(process_read, q);
  p1.start();
  p2.start();
  p1.join();
  p2.join();
}
