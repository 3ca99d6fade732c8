// The tutorial's pool example ("Pool / 非阻塞添加任务-进程池") on Redis: ten tasks added with
// apply_async run on whatever workers serve pool "tutorial", on any machines; then a map
// spreads 100,000 squares over them, and a redis::queue carries a message between processes.
//
//   redis-server --port 6379 &                     # or your Redis (see the README)
//   ./redis_pool worker &                          # on each worker machine, as many as you like
//   ./redis_pool client                            # anywhere
//   ./redis_pool client redis://:password@db-host:6379   # a Redis elsewhere, with its password
//
// Workers and clients must be the same build of the same program: tasks name their
// functions by the registry, whose hash is part of every Redis key, so one binary with two
// modes is the natural shape. A worker runs until SIGTERM or SIGINT (systemd: see
// mproc-worker.service), finishing the tasks it holds.
#include <unistd.h>

#include <chrono>
#include <exception>
#include <iostream>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <mproc/redis.hpp>

namespace {

using namespace std::chrono_literals;

std::string where() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return std::string(" (") + host + ")";
}

// Runs in a worker process of some worker machine's pool.
void test(int num) {
  std::cout << "开始执行任务" << num << where() << std::endl;
  std::this_thread::sleep_for(100ms);
  std::cout << "结束执行任务" << num << where() << std::endl;
}
MPROC_REMOTE(test);

int run_client(const std::string& url) {
  mproc::redis::pool_options options;
  options.url = url;
  options.name = "tutorial";
  mproc::redis::pool pool(options);

  std::vector<mproc::async_result<void>> results;
  for (int i = 0; i < 10; ++i) results.push_back(pool.apply_async(test, i));  // 非阻塞方式

  std::vector<long long> numbers(100000);
  std::iota(numbers.begin(), numbers.end(), 1);
  const auto squares = pool.map([](long long x) { return x * x; }, numbers);
  const long long sum = std::accumulate(squares.begin(), squares.end(), 0LL);

  pool.close();
  pool.join();
  int failed = 0;
  for (auto& result : results) {
    try {
      result.get();
    } catch (const std::exception& e) {
      std::cerr << "任务失败: " << e.what() << std::endl;
      ++failed;
    }
  }
  if (failed != 0) return 1;
  std::cout << "平方和 1..100000 = " << sum << std::endl;
  std::cout << "进程池资源已回收, " << results.size() << "个任务全部执行完毕" << std::endl;

  // Python's remote-manager queue: any process that names it, on any machine.
  mproc::redis::queue<std::string> messages(url, "tutorial-messages");
  mproc::redis::queue<std::string> again(url, "tutorial-messages");  // another handle, as another machine would
  messages.put("来自客户端的消息");
  std::cout << "从队列取出: " << again.get(5s) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const std::string url = argc > 2 ? argv[2] : "redis://127.0.0.1:6379";
  try {
    if (mode == "worker") {
      mproc::redis::worker_options options;
      options.url = url;
      options.name = "tutorial";
      options.processes = 2;
      mproc::redis::serve(options);  // until SIGTERM or SIGINT
      return 0;
    }
    if (mode == "client") return run_client(url);
  } catch (const std::exception& e) {
    std::cerr << "redis_pool: " << e.what() << std::endl;
    return 1;
  }
  std::cerr << "usage: redis_pool worker|client [redis://host:port | unix:///path/redis.sock]" << std::endl;
  return 2;
}
