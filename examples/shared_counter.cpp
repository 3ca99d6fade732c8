// Python's Value and its lock: four processes each add 1 to one shared counter ten thousand
// times. With get_lock() held around each `+= 1` the total is exactly 40000; without it,
// two processes that read the same old value both write old + 1, and an update is lost.
//
// The Python it mirrors:
//   counter = Value('i', 0)
//   def work(counter):
//       for _ in range(10000):
//           with counter.get_lock():
//               counter.value += 1
//   ps = [Process(target=work, args=(counter,)) for _ in range(4)]
//   for p in ps: p.start()
//   for p in ps: p.join()
//   print(counter.value)   # 40000
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include <mproc/process.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

namespace {

constexpr int processes = 4;
constexpr int increments = 10000;

void add_with_lock(mproc::shared_value<int> counter, mproc::event go) {
  go.wait();  // all four start together
  for (int i = 0; i < increments; ++i) {
    std::lock_guard guard(counter.get_lock());
    counter.value() += 1;
  }
}

// The same without the lock: a read, then a write. (std::atomic_ref keeps each step well
// defined in C++; what goes wrong is only what Python's `counter.value += 1` gets wrong.)
// The yield between them stands for the moment the scheduler takes the CPU away there,
// which Python's interpreter makes likely and this tiny loop would make rare.
void add_without_lock(mproc::shared_value<int> counter, mproc::event go) {
  std::atomic_ref<int> value(counter.value());
  go.wait();
  for (int i = 0; i < increments; ++i) {
    const int read = value.load(std::memory_order_relaxed);
    std::this_thread::yield();
    value.store(read + 1, std::memory_order_relaxed);
  }
}

int run(void (*work)(mproc::shared_value<int>, mproc::event)) {
  mproc::shared_value<int> counter(0);
  mproc::event go;
  std::vector<mproc::process> ps;
  for (int i = 0; i < processes; ++i) ps.emplace_back(work, counter, go);  // each child shares both
  for (auto& p : ps) p.start();
  go.set();
  for (auto& p : ps) p.join();
  return counter.get();
}

}  // namespace

int main() {
  const int locked = run(add_with_lock);
  std::printf("%d 个进程各加 %d 次, 每次持有 get_lock(): counter.value = %d\n", processes, increments, locked);
  const int unlocked = run(add_without_lock);
  std::printf("不加锁再来一次: counter.value = %d (丢失了 %d 次更新)\n", unlocked, processes * increments - unlocked);
  return locked == processes * increments ? 0 : 1;
}
