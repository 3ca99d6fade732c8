// Python's Manager().dict(): four processes count words into one shared dict. update()
// reads, changes and writes an entry under the dict's lock, so no count is lost (Python
// needs a Lock around `d[w] = d.get(w, 0) + 1` for that); and no server process relays
// each call: the dict lives in shared memory.
//
// The Python it mirrors:
//   def work(d, lock, words):
//       for w in words:
//           with lock:
//               d[w] = d.get(w, 0) + 1
//   with Manager() as m:
//       d, lock = m.dict(), m.Lock()
//       ps = [Process(target=work, args=(d, lock, part)) for part in parts]
//       for p in ps: p.start()
//       for p in ps: p.join()
//       print(sorted(d.items()))
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <mproc/process.hpp>
#include <mproc/shared.hpp>

namespace {

void count(mproc::shared_dict<std::string, int> counts, std::vector<std::string> words) {
  for (const auto& w : words) counts.update(w, [](std::optional<int> n) { return n.value_or(0) + 1; });
}

}  // namespace

int main() {
  const std::vector<std::string> text = {"苹果", "香蕉", "苹果", "橙子", "香蕉", "苹果"};
  mproc::shared_dict<std::string, int> counts;
  std::vector<mproc::process> ps;
  for (int i = 0; i < 4; ++i) {
    std::vector<std::string> part;
    for (int round = 0; round < 1000; ++round) part.insert(part.end(), text.begin(), text.end());
    ps.emplace_back(count, counts, std::move(part));  // each child shares the dict
  }
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();

  auto items = counts.items();  // one consistent snapshot
  std::sort(items.begin(), items.end());
  for (const auto& [word, n] : items) std::printf("%s: %d\n", word.c_str(), n);
  counts.erase("橙子");
  std::printf("删除橙子之后: %zu 个键, 苹果 = %d\n", counts.size(), counts.at("苹果"));
  return counts.at("苹果") == 12000 ? 0 : 1;
}
