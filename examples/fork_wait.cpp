// Tutorial section "进程": os.fork(), os.getpid(), os.getppid() and os.wait().
//
// The child prints ten lines and the parent five, 0.1 s apart so that they interleave. Then
// the child raises an exception nothing catches, which ends it with exit code 1, and the
// parent's os.wait() reports the raw wait status 256 (the exit code shifted left by 8).
//
// Every line ends with std::endl, not '\n': flushing each line makes the two processes'
// lines appear as they are printed even when stdout is a pipe, as on the tutorial's terminal.
#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <thread>

#include <mproc/os.hpp>

namespace {

using namespace std::chrono_literals;

// A Python traceback names the line that raised; a C++ exception does not carry that, so
// raise_exception() notes it just before throwing.
struct location {
  const char* file = "";
  int line = 0;
  const char* function = "";
};
location raised_at;

// The defaults are evaluated where raise_exception() is called. std::source_location does
// the same but is missing from Clang 14 with libstdc++ 12; GCC and Clang build it from
// these builtins.
[[noreturn]] void raise_exception(const char* message, const char* file = __builtin_FILE(), int line = __builtin_LINE(),
                                  const char* function = __builtin_FUNCTION()) {
  raised_at = {file, line, function};
  throw std::runtime_error(message);
}

// What Python's interpreter prints for an exception that nothing caught.
void print_traceback(const std::exception& e) {
  std::cerr << "Traceback (most recent call last):\n"
            << "  File \"" << raised_at.file << "\", line " << raised_at.line << ", in " << raised_at.function << '\n'
            << "Exception: " << e.what() << std::endl;
}

[[noreturn]] void child() {
  std::cout << "我是子进程PID:" << mproc::os::getpid() << ",父进程PPID:" << mproc::os::getppid() << std::endl;
  for (int i = 0; i < 10; ++i) {
    std::cout << "我是子进程" << std::endl;
    std::this_thread::sleep_for(100ms);
  }
  raise_exception("抛出异常状态");
}

void parent() {
  std::cout << "我是父进程PID:" << mproc::os::getpid() << ",父进程PPID:" << mproc::os::getppid() << std::endl;
  for (int i = 0; i < 5; ++i) {
    std::cout << "父进程" << std::endl;
    std::this_thread::sleep_for(100ms);
  }
  std::cout << "父进程\"任务\"结束" << std::endl;
  // Blocks until the child ends and reaps it: its pid and its raw wait status.
  const auto [pid, result] = mproc::os::wait();
  std::cout << "子进程结束,pid为" << pid << ",结束状态" << result.raw() << std::endl;
}

}  // namespace

int main() {
  // Creates a child: fork() returns the child's pid in the parent and 0 in the child.
  const mproc::pid_t ret = mproc::os::fork();
  if (ret == 0) {
    // The child's top level plays Python's interpreter: an uncaught exception is reported
    // with a traceback and ends the program with exit code 1. std::exit() sits outside the
    // handler so that no exception is still in flight when the program ends.
    try {
      child();
    } catch (const std::exception& e) {
      print_traceback(e);
    }
    std::exit(1);
  }
  parent();
}
