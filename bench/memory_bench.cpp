// What an idle pool worker and a queue holding unconsumed messages cost in memory (DESIGN.md:
// "a queue or lock costs no more than its buffer; a pool worker's private memory stays
// small"). bench/memory.py runs it beside its Python peer, bench/memory_bench.py, which
// measures multiprocessing.Pool and multiprocessing.Queue (fork) the same way.
//
// Every figure comes from the kernel: /proc/PID/smaps_rollup of each process (RSS; PSS;
// USS = Private_Clean + Private_Dirty; Pss_Anon, the process's heap, stacks and other
// anonymous memory; Pss_Shmem) and, for memory that lives in a file rather than in one
// process (mproc's memfds), the file's allocated size: st_blocks × 512 of a stat() through
// /proc/PID/fd/N, each file counted once (by inode) however many processes map it. That
// counts shared-memory pages once, touched or not (mproc allocates them with fallocate:
// they are memory in use even before anyone writes them), and never twice.
//
// --part pool: a pool of --processes workers (default 2), made after a baseline of this
//   process, warmed up with map(x*x) over 100000 ints (default chunksize) and then tasks
//   that return the worker's pid (mproc::os::getpid(), 100 ms each, all workers busy at
//   once, until every worker has answered), then left idle for --idle-ms (default 500).
//   Workers are the pool's zygote's children (the zygote is this process's child); the
//   pids the tasks return must be exactly those. Prints, per quantity:
//     workers, worker_{rss,pss,uss,anon,shmem} (mean over the workers), worker_uss_max,
//     zygote_{rss,pss,uss,anon,shmem}; parent_{pss,uss}_delta (this process, after the
//     warm-up minus before the pool: its pages that the pool's processes now share leave
//     its USS, which may then shrink); total_pss_delta, the PSS of this process and of every
//     process of the pool after, minus this process's PSS before: what the pool costs in
//     all, each page counted once (PSS splits a shared page among its sharers, so the sum
//     over the processes that share it is the page; this includes the memfd pages they
//     touched); shared_files, the memfds made for the pool (allocated bytes).
// --part queue: an unbounded mproc::queue<std::vector<std::uint8_t>> made by this process
//   (which later consumes), and a producer child (a daemon mproc::process) that puts
//   --buffered-bytes B of messages of --message-bytes S each (B / S messages, each a fresh
//   vector built, put and dropped, as a Python producer builds a fresh bytes object), then
//   idles. Measured after --idle-ms with nobody consuming ("buffered"), then again after
//   this process has taken and checked every message ("drained"):
//     messages, payload (B), file (the queue's memfd), pipe (0: mproc has none),
//     producer_anon / consumer_anon (Pss_Anon now minus just before the first put),
//     producer_uss / consumer_uss (likewise, USS: it also counts the memfd pages only that
//     process has touched, so it is shown, not summed), total = file + pipe + both anon
//     deltas; then drained_file, drained_pipe, drained_producer_anon,
//     drained_consumer_anon, drained_total.
//   The producer's own message is not part of its baseline (it is built after it), so its
//   delta is what putting costs it: mproc's encoding buffer, which it keeps for reuse.
//
// Output (stdout), CSV: contender,quantity,value (bytes, or a count for workers/messages);
// contender is "mproc". Verification: the pool's warm-up results are checked one by one;
// every queue message carries its index in its first and last 8 bytes, checked with its size
// in order, and the indices are folded into a checksum. A mismatch exits with 2.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.hpp"
#include "mproc/os.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/sync.hpp"

namespace {

using bench::checksum;
using bench::u64;

constexpr bench::program program{
    "memory_bench",
    "usage: mproc_memory_bench --part pool [--processes P] [--idle-ms T]\n"
    "       mproc_memory_bench --part queue --message-bytes S --buffered-bytes B [--idle-ms T]\n"
    "  pool: an idle pool of P workers (default 2) after a warm-up; queue: B bytes of\n"
    "  S-byte messages (S a multiple of 8, at least 8; B a multiple of S) left in a\n"
    "  queue, then drained. T: idle time before each measurement (default 500 ms).\n"
    "Prints CSV: contender,quantity,value (bytes)\n"};

struct options {
  std::string_view part;
  unsigned processes = 2;
  long message_bytes = 0;
  long buffered_bytes = -1;
  long idle_ms = 500;
};

// ---- what the kernel says -------------------------------------------------------------

struct rollup {
  long long rss = 0, pss = 0, uss = 0, anon = 0, shmem = 0;  // bytes
};

rollup read_rollup(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/smaps_rollup";
  std::ifstream in(path);
  if (!in) program.die("cannot read " + path);
  std::map<std::string, long long> kib;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    long long value = 0;
    if (fields >> key >> value && key.size() > 1 && key.back() == ':') kib[key.substr(0, key.size() - 1)] = value;
  }
  for (const char* key : {"Rss", "Pss", "Private_Clean", "Private_Dirty", "Pss_Anon", "Pss_Shmem"}) {
    if (kib.find(key) == kib.end()) program.die(path + " has no " + key);
  }
  return {kib["Rss"] * 1024, kib["Pss"] * 1024, (kib["Private_Clean"] + kib["Private_Dirty"]) * 1024,
          kib["Pss_Anon"] * 1024, kib["Pss_Shmem"] * 1024};
}

// The memfds process `pid` has open whose name starts with `prefix` ("mproc-queue"; empty:
// any mproc memfd): inode -> allocated bytes.
std::map<ino_t, long long> memfds(pid_t pid, const std::string& prefix) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::map<ino_t, long long> files;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) program.die_errno(("opendir " + dir).c_str());
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = dir + "/" + e->d_name;
    char target[512];
    const ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    const std::string link(target, static_cast<std::size_t>(n));
    if (link.rfind("/memfd:" + (prefix.empty() ? std::string("mproc-") : prefix), 0) != 0) continue;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;  // closed meanwhile
    files[st.st_ino] = static_cast<long long>(st.st_blocks) * 512;
  }
  ::closedir(d);
  return files;
}

long long total_of(const std::map<ino_t, long long>& files) {
  long long sum = 0;
  for (const auto& [inode, bytes] : files) sum += bytes;
  return sum;
}

pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) program.die("cannot read /proc/" + std::to_string(pid) + "/stat");
  std::istringstream rest(all.substr(close + 2));
  char state = 0;
  pid_t ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> kids;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return kids;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/children");
    pid_t p = 0;
    while (in >> p) kids.push_back(p);
  }
  ::closedir(d);
  return kids;
}

void print(const char* quantity, long long value) { std::printf("mproc,%s,%lld\n", quantity, value); }

void print_rollup(const std::string& who, const rollup& r) {
  print((who + "_rss").c_str(), r.rss);
  print((who + "_pss").c_str(), r.pss);
  print((who + "_uss").c_str(), r.uss);
  print((who + "_anon").c_str(), r.anon);
  print((who + "_shmem").c_str(), r.shmem);
}

void idle(const options& o) { std::this_thread::sleep_for(std::chrono::milliseconds(o.idle_ms)); }

// ---- pool -----------------------------------------------------------------------------

std::int64_t square(int x) { return std::int64_t{x} * x; }

int pid_after(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return mproc::os::getpid();
}

void pool_part(const options& o) {
  const pid_t self = mproc::os::getpid();
  const rollup before = read_rollup(self);
  const auto files_before = memfds(self, "");
  mproc::pool p(o.processes);

  {  // freed before measuring, as the Python peer's lists are
    std::vector<int> items(100'000);
    std::iota(items.begin(), items.end(), 1);
    const std::vector<std::int64_t> squares = p.map(square, items);
    if (squares.size() != items.size()) {
      program.die("warm-up map returned " + std::to_string(squares.size()) + " results");
    }
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (squares[i] != square(items[i])) program.die("warm-up map: result " + std::to_string(i) + " is wrong");
    }
  }
  std::set<pid_t> pids;
  for (int attempt = 0; attempt < 20 && pids.size() < o.processes; ++attempt) {
    std::vector<mproc::async_result<int>> answers;
    for (unsigned i = 0; i < o.processes; ++i) answers.push_back(p.apply_async(pid_after, 100));
    for (auto& a : answers) pids.insert(a.get());
  }
  if (pids.size() != o.processes) {
    program.die("the pid tasks reached " + std::to_string(pids.size()) + " of " + std::to_string(o.processes) +
                " workers");
  }
  idle(o);

  // The workers are the zygote's children, and the zygote is ours.
  const pid_t zygote = parent_of(*pids.begin());
  if (parent_of(zygote) != self) program.die("worker " + std::to_string(*pids.begin()) + "'s parent is not our child");
  std::vector<pid_t> workers = children_of(zygote);
  std::sort(workers.begin(), workers.end());
  if (!std::equal(workers.begin(), workers.end(), pids.begin(), pids.end())) {
    program.die("the zygote's children are not the pids the tasks returned");
  }
  rollup sum;
  long long uss_max = 0;
  for (const pid_t w : workers) {
    const rollup r = read_rollup(w);
    sum.rss += r.rss;
    sum.pss += r.pss;
    sum.uss += r.uss;
    sum.anon += r.anon;
    sum.shmem += r.shmem;
    uss_max = std::max(uss_max, r.uss);
  }
  const auto n = static_cast<long long>(workers.size());
  const rollup zygote_memory = read_rollup(zygote);
  const rollup after = read_rollup(self);
  // PSS adds up: the pages the parent shares with the pool's processes are counted once.
  const long long total_pss = after.pss + zygote_memory.pss + sum.pss;
  auto files = memfds(self, "");
  for (const auto& [inode, bytes] : files_before) files.erase(inode);

  std::printf("contender,quantity,value\n");
  print("workers", n);
  print_rollup("worker", {sum.rss / n, sum.pss / n, sum.uss / n, sum.anon / n, sum.shmem / n});
  print("worker_uss_max", uss_max);
  print_rollup("zygote", zygote_memory);
  print("parent_pss_delta", after.pss - before.pss);
  print("parent_uss_delta", after.uss - before.uss);
  print("total_pss_delta", total_pss - before.pss);
  print("shared_files", total_of(files));
}

// ---- queue ----------------------------------------------------------------------------

u64 stamp_of(long i) { return 0x5eed'0000'0000'0000ULL + static_cast<u64>(i); }

std::vector<std::uint8_t> message(long i, std::size_t size) {
  std::vector<std::uint8_t> m(size);
  for (std::size_t k = 0; k < size; ++k) m[k] = static_cast<std::uint8_t>(k * 131 + 7);
  const u64 v = stamp_of(i);
  std::memcpy(m.data(), &v, sizeof v);
  std::memcpy(m.data() + size - sizeof v, &v, sizeof v);
  return m;
}

void queue_part(const options& o) {
  const auto size = static_cast<std::size_t>(o.message_bytes);
  const long count = o.buffered_bytes / o.message_bytes;
  const pid_t self = mproc::os::getpid();
  mproc::queue<std::vector<std::uint8_t>> q;
  mproc::event ready, go, done, quit;
  auto producer = bench::start_child([q, ready, go, done, quit, count, size]() mutable {
    ready.set();
    go.wait();
    for (long i = 0; i < count; ++i) q.put(message(i, size));
    done.set();
    quit.wait();
  });
  ready.wait();
  idle(o);
  const pid_t child = *producer.pid();
  const rollup producer_before = read_rollup(child);
  const rollup consumer_before = read_rollup(self);
  go.set();
  done.wait();
  idle(o);
  const rollup producer_buffered = read_rollup(child);
  const rollup consumer_buffered = read_rollup(self);
  const long long file = total_of(memfds(self, "mproc-queue"));
  if (q.qsize() != static_cast<std::size_t>(count))
    program.die("the queue holds " + std::to_string(q.qsize()) + " messages");

  checksum got, want;
  for (long i = 0; i < count; ++i) {
    const std::vector<std::uint8_t> m = q.get();
    u64 first = 0, last = 0;
    if (m.size() == size) {
      std::memcpy(&first, m.data(), sizeof first);
      std::memcpy(&last, m.data() + size - sizeof last, sizeof last);
    }
    if (m.size() != size || first != stamp_of(i) || last != stamp_of(i)) {
      program.die("message " + std::to_string(i) + " is not the one put (" + std::to_string(m.size()) + " bytes)");
    }
    got.add(first);
    want.add(stamp_of(i));
  }
  if (got.h != want.h || !q.empty()) program.die("queue: checksum mismatch or messages left over");
  idle(o);
  const rollup producer_drained = read_rollup(child);
  const rollup consumer_drained = read_rollup(self);
  const long long drained_file = total_of(memfds(self, "mproc-queue"));
  quit.set();
  producer.join();
  if (producer.exitcode() != 0) program.die("the producer failed");

  const long long producer_anon = producer_buffered.anon - producer_before.anon;
  const long long consumer_anon = consumer_buffered.anon - consumer_before.anon;
  const long long drained_producer_anon = producer_drained.anon - producer_before.anon;
  const long long drained_consumer_anon = consumer_drained.anon - consumer_before.anon;
  std::printf("contender,quantity,value\n");
  print("messages", count);
  print("payload", count * o.message_bytes);
  print("file", file);
  print("pipe", 0);
  print("producer_anon", producer_anon);
  print("consumer_anon", consumer_anon);
  print("producer_uss", producer_buffered.uss - producer_before.uss);
  print("consumer_uss", consumer_buffered.uss - consumer_before.uss);
  print("total", file + producer_anon + consumer_anon);
  print("drained_file", drained_file);
  print("drained_pipe", 0);
  print("drained_producer_anon", drained_producer_anon);
  print("drained_consumer_anon", drained_consumer_anon);
  print("drained_total", drained_file + drained_producer_anon + drained_consumer_anon);
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  program.parse(argc, argv,
                {{"--part", &o.part},
                 {"--processes", &o.processes, 1},
                 {"--message-bytes", &o.message_bytes, 8},
                 {"--buffered-bytes", &o.buffered_bytes, 0},
                 {"--idle-ms", &o.idle_ms, 0}});
  try {
    if (o.part == "pool") {
      pool_part(o);
    } else if (o.part == "queue") {
      if (o.message_bytes == 0 || o.buffered_bytes < 0)
        program.misuse("--part queue needs --message-bytes and --buffered-bytes");
      if (o.message_bytes % 8 != 0 || o.buffered_bytes % o.message_bytes != 0) {
        program.misuse("--message-bytes must be a multiple of 8, --buffered-bytes a multiple of it");
      }
      queue_part(o);
    } else {
      program.misuse("--part must be pool or queue");
    }
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
