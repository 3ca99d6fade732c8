// Python's shared_memory.SharedMemory: a block of bytes another process attaches to by its
// name alone. Then what Python's resource tracker is for: a creator killed with SIGKILL
// never removes its name itself, and the tracker removes it for it.
//
// The Python it mirrors:
//   shm = shared_memory.SharedMemory(create=True, size=16)
//   def work(name):
//       block = shared_memory.SharedMemory(name=name)
//       block.buf[:5] = b'hello'
//       block.close()
//   p = Process(target=work, args=(shm.name,)); p.start(); p.join()
//   print(bytes(shm.buf[:5]))   # b'hello'
//   shm.close(); shm.unlink()
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <mproc/process.hpp>
#include <mproc/shared_memory.hpp>
#include <mproc/sync.hpp>

namespace {

void write_hello(const std::string& name) {
  mproc::shared_memory block = mproc::shared_memory::open(name);  // by name, nothing else
  std::memcpy(block.bytes().data(), "hello", 5);
}  // an opener's handle only unmaps: the name stays

bool exists(const std::string& name) { return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

// Polls until the name is gone or five seconds pass.
bool gone_within_five_seconds(const std::string& name) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (exists(name)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace

int main() {
  const std::string name = "mproc_example_" + std::to_string(::getpid());
  {
    mproc::shared_memory shm = mproc::shared_memory::create(name, 16);
    mproc::process p(write_hello, shm.name());
    p.start();
    p.join();
    std::printf("子进程按名字打开共享内存写入: %.5s\n", reinterpret_cast<const char*>(shm.bytes().data()));
  }  // the creator's handle removes the name (Python's close() and unlink())
  std::printf("创建者的句柄销毁后, /dev/shm 中%s\n", exists(name) ? "还有这个名字" : "已没有这个名字");

  // A creator killed before it could remove its name.
  const std::string orphaned = name + "_killed";
  mproc::event created;
  mproc::process creator([&] {
    mproc::shared_memory shm = mproc::shared_memory::create(orphaned, 16);
    created.set();
    ::pause();
  });
  creator.start();
  created.wait();
  creator.kill();
  creator.join();
  std::printf("创建者被 SIGKILL 杀死 (退出码 %d)\n", creator.exitcode().value());
  const bool removed = gone_within_five_seconds(orphaned);
  std::printf("资源跟踪器%s\n", removed ? "删除了它留下的名字" : "没有删除它留下的名字!");
  return removed && !exists(name) ? 0 : 1;
}
