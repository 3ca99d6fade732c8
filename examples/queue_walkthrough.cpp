// Tutorial section "Queue进程间通信:消息队列": a Queue(3) walked through by hand — empty and
// full, three puts, a fourth put that times out after 3 s, three gets in order, a fourth
// get that times out.
//
// Python's bare `except:` around the timed put and get catches queue.Full and queue.Empty;
// mproc throws mproc::queue_full and mproc::queue_empty.
#include <chrono>
#include <iostream>
#include <string>

#include "python_repr.hpp"
#include <mproc/queue.hpp>

int main() {
  using namespace std::chrono_literals;
  mproc::queue<std::string> q(3);  // 初始化队列,设置最多可以添加3条信息

  std::cout << "判断是否为空" << example::repr(q.empty()) << std::endl;
  std::cout << "判断队列是否为满" << example::repr(q.full()) << std::endl;

  q.put("消息1");
  std::cout << "插入第一条消息,成功" << std::endl;
  q.put("消息2");
  std::cout << "插入第二条消息,成功" << std::endl;
  q.put("消息3");
  std::cout << "插入第三条消息,成功" << std::endl;

  std::cout << "判断是否为空" << example::repr(q.empty()) << std::endl;
  std::cout << "判断队列是否为满" << example::repr(q.full()) << std::endl;

  try {
    q.put("消息4", 3s);
  } catch (const mproc::queue_full&) {
    std::cout << "队列已满,无法继续添加" << std::endl;
  }

  std::cout << "第一条消息:" << q.get() << std::endl;
  std::cout << "第二条消息:" << q.get() << std::endl;
  std::cout << "第三条消息:" << q.get() << std::endl;
  try {
    const std::string ret = q.get(3s);
    std::cout << "第四条消息:" << ret << std::endl;
  } catch (const mproc::queue_empty&) {
    std::cout << "队列已空" << std::endl;
  }

  std::cout << "判断是否为空" << example::repr(q.empty()) << std::endl;
  std::cout << "判断队列是否为满" << example::repr(q.full()) << std::endl;
}
