// The tour of the tutorial: runs every example program in the tutorial's order, each under
// a heading naming the section it mirrors. Exits non-zero if any example fails.
//
// The examples are found next to this program, each started as a child with mproc::process
// whose target exec()s it, so the tour itself shows processes at work.
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <mproc/process.hpp>

namespace {

struct example {
  std::string_view heading;  // the tutorial section
  std::string_view program;  // the executable's name, next to the tour
};

// In the tutorial's order. Later sections (Pool, Queue) add their examples here.
constexpr example examples[] = {
    {"进程: os.fork() 与 os.wait()", "fork_wait"},
    {"孤儿进程", "orphan"},
    {"僵尸进程", "no_zombie"},
    {"Process: 使用Process类", "process_args"},
    {"Process: 继承Process类", "process_subclass"},
    {"Pool: 非阻塞添加任务-进程池", "pool_apply_async"},
    {"Pool: 阻塞添加任务-进程池", "pool_apply"},
    {"Pool: 异步添加任务:callback回调函数", "pool_callback"},
    {"Queue进程间通信:消息队列", "queue_walkthrough"},
    {"使用队列进行进程间通信", "queue_processes"},
    {"进程池的进程间通讯", "pool_queue"},
    // Beyond the tutorial: Python's Value, Lock and Barrier, for processes.
    {"同步: Value 与 get_lock()", "shared_counter"},
    {"同步: 用 Barrier 同步的流水线", "barrier_pipeline"},
    {"concurrent.futures: partial, as_completed, 进度条", "futures_progress"},
    {"connection.wait: 同时等待管道, 队列和进程", "wait_ready"},
    {"shared_memory.SharedMemory: 按名字共享内存", "shared_memory"},
};

// Runs `program` as a child and returns its exit code (-N when signal N ended it).
int run(const std::filesystem::path& program) {
  mproc::process child([path = program.string()]() mutable {
    char* argv[] = {path.data(), nullptr};
    ::execv(path.c_str(), argv);
    // Only reached when exec failed: mproc reports the exception and the child exits with 1.
    throw std::system_error(errno, std::system_category(), "execv " + path);
  });
  child.set_name(program.filename().string());
  child.start();
  child.join();
  return child.exitcode().value();
}

}  // namespace

int main() {
  const std::filesystem::path dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  std::vector<std::string_view> failed;
  for (const example& e : examples) {
    // Flushed before the child starts, so the heading precedes the example's output even
    // when stdout is a pipe.
    std::cout << "=== " << e.heading << " ===" << std::endl;
    const int code = run(dir / e.program);
    if (code != 0) {
      std::cerr << "tour: 示例 " << e.program << " 失败,"
                << (code < 0 ? "被信号 " + std::to_string(-code) + " 终止" : "退出码 " + std::to_string(code))
                << std::endl;
      failed.push_back(e.program);
    }
    std::cout << std::endl;
  }
  if (!failed.empty()) {
    std::cerr << "tour: " << failed.size() << " 个示例失败:";
    for (std::string_view name : failed) std::cerr << ' ' << name;
    std::cerr << std::endl;
    return 1;
  }
  std::cout << "tour: 全部 " << std::size(examples) << " 个示例运行成功" << std::endl;
}
