// The tutorial's pool example ("Pool / 非阻塞添加任务-进程池") across the ranks of an MPI job:
// ten tasks added with apply_async run on the workers of every rank, the root's too, and
// close() + join() wait for them. Then a map spreads 100,000 squares over the same workers.
//
//   mpirun --bind-to none -np 2 ./pool_across_ranks   # one machine, two ranks
//   sbatch examples/mpi/slurm.sbatch          # a Slurm cluster (see that file)
//
// Every rank runs main; the pool's constructor serves the root's tasks on the other ranks
// and returns there only when the root's pool ends, so `if (!pool) return 0;` is all they
// do. A function pointer is named across machines by MPROC_REMOTE; a lambda without
// captures needs nothing.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <mproc/mpi.hpp>

namespace {

using namespace std::chrono_literals;

std::string where() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");  // mpirun's; Slurm's srun sets SLURM_PROCID
  if (rank == nullptr) rank = std::getenv("SLURM_PROCID");
  return std::string(" (rank ") + (rank != nullptr ? rank : "0") + ", " + host + ")";
}

// Runs in a worker process of some rank's pool.
void test(int num) {
  std::cout << "开始执行任务" << num << where() << std::endl;
  std::this_thread::sleep_for(100ms);
  std::cout << "结束执行任务" << num << where() << std::endl;
}
MPROC_REMOTE(test);

}  // namespace

int main(int argc, char** argv) {
  mproc::mpi::pool_options options;
  options.processes_per_rank = 2;
  mproc::mpi::pool pool(argc, argv, options);
  if (!pool) return 0;  // another rank: it ran the root's tasks until the root's pool ended
  std::cout << pool.ranks() << "个进程 (ranks), 共" << pool.size() << "个工作进程" << std::endl;

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
}
