// Beyond the tutorial: the C++ twin of a typical concurrent.futures script, with
// functools.partial and a tqdm bar:
//
//     from concurrent.futures import ProcessPoolExecutor, as_completed
//     from functools import partial
//     from tqdm import tqdm
//
//     def count_primes(start, width):           # primes in [start, start + width)
//         return sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(max(start, 2), start + width))
//
//     with ProcessPoolExecutor(4) as ex:
//         futures = [ex.submit(partial(count_primes, width=2000), start) for start in range(0, 200000, 2000)]
//         total = 0
//         for f in tqdm(as_completed(futures), total=len(futures), desc="素数"):
//             total += f.result()
//     print("20万以内的素数:", total)
//
// Here the bound value comes first (mproc::partial binds leading arguments), the bar goes
// to stderr like tqdm's, and the sum is the same whatever order the results come in.
#include <cstdint>
#include <iostream>
#include <vector>

#include <mproc/pool.hpp>
#include <mproc/progress.hpp>

namespace {

// The primes in [start, start + width).
int count_primes(int width, int start) {
  int count = 0;
  for (int n = start < 2 ? 2 : start; n < start + width; ++n) {
    bool prime = true;
    for (int d = 2; d * d <= n && prime; ++d) prime = n % d != 0;
    count += prime ? 1 : 0;
  }
  return count;
}

}  // namespace

int main() {
  mproc::pool pool(4);
  const auto count = mproc::partial(count_primes, 2000);
  std::vector<mproc::async_result<int>> futures;
  for (int start = 0; start < 200'000; start += 2000) futures.push_back(pool.apply_async(count, start));
  std::int64_t total = 0;
  for (std::size_t i : mproc::progress(mproc::as_completed(futures), "素数")) total += futures[i].get();
  std::cout << "20万以内的素数: " << total << std::endl;
  pool.close();
  pool.join();
}
