// Helpers for tests that run real processes.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

// Clang 14 cannot compile libstdc++ 12's range adaptors (std::views::iota, transform,
// take); tests of them are built by GCC (and newer Clang) only, and the others read
// mproc_test::generated instead.
#if !defined(__clang__) || __clang_major__ >= 15
#define MPROC_TEST_RANGE_ADAPTORS 1
#endif

namespace mproc_test {

// fn(0), fn(1), ..., fn(n - 1), each made as it is read (n < 0: without end): an input
// range built of nothing from <ranges>.
template <class Fn>
class generated {
 public:
  generated(long long n, Fn fn) : n_(n), fn_(std::move(fn)) {}
  class iterator {
   public:
    using value_type = decltype(std::declval<Fn&>()(0LL));
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(generated* g, long long i) : g_(g), i_(i) {}
    value_type operator*() const { return g_->make(i_); }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    void operator++(int) { ++i_; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.i_ == it.g_->size_or_endless(); }

   private:
    generated* g_ = nullptr;
    long long i_ = 0;
  };
  iterator begin() { return iterator(this, 0); }
  std::default_sentinel_t end() const { return {}; }
  long long size_or_endless() const { return n_; }
  auto make(long long i) { return fn_(i); }

 private:
  long long n_;
  Fn fn_;
};

// A pipe owned by the test; both ends O_CLOEXEC so exec'd programs do not keep them.
class test_pipe {
 public:
  test_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    read_ = fds[0];
    write_ = fds[1];
  }
  ~test_pipe() {
    close_read();
    close_write();
  }
  test_pipe(const test_pipe&) = delete;
  test_pipe& operator=(const test_pipe&) = delete;

  int read_fd() const { return read_; }
  int write_fd() const { return write_; }
  void close_read() {
    if (read_ >= 0) ::close(read_);
    read_ = -1;
  }
  void close_write() {
    if (write_ >= 0) ::close(write_);
    write_ = -1;
  }

  void write(const std::string& s) const {
    std::size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::write(write_, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::system_error(errno, std::generic_category(), "write");
      done += static_cast<std::size_t>(n);
    }
  }

  // Reads until EOF (every write end closed).
  std::string read_all() const {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(read_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return out;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }

  // Reads one '\n'-terminated line (without the '\n'); nullopt at EOF.
  std::optional<std::string> read_line() const {
    std::string line;
    char c;
    for (;;) {
      const ssize_t n = ::read(read_, &c, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return line.empty() ? std::nullopt : std::optional(line);
      if (c == '\n') return line;
      line += c;
    }
  }

 private:
  int read_ = -1;
  int write_ = -1;
};

// Holds children until the test releases them: a child calls wait(), the test release().
class gate {
 public:
  void wait() const {
    char c;
    while (::read(pipe_.read_fd(), &c, 1) < 0 && errno == EINTR) {
    }
  }
  void release(int waiters = 1) const { pipe_.write(std::string(static_cast<std::size_t>(waiters), 'g')); }

 private:
  test_pipe pipe_;
};

struct proc_stat {
  char state = '?';
  pid_t ppid = 0;
};

// State and parent of `pid` from /proc; nullopt once it is gone (reaped).
inline std::optional<proc_stat> read_proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  const auto close_paren = text.rfind(')');  // comm may contain spaces and parentheses
  if (close_paren == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close_paren + 1));
  proc_stat st;
  rest >> st.state >> st.ppid;
  return st;
}

// Whether `pid` runs: it is in /proc and not a zombie.
inline bool running(pid_t pid) {
  const auto st = read_proc_stat(pid);
  return st && st->state != 'Z';
}

// The pids of `pid`'s children, from every one of its threads, in ascending order.
inline std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(tasks + "/" + e->d_name + "/children");
    pid_t child = 0;
    while (in >> child) out.push_back(child);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

// The children of this process, from /proc, with their states.
inline std::vector<std::pair<pid_t, char>> children_of_self() {
  std::vector<std::pair<pid_t, char>> out;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    if (auto st = read_proc_stat(static_cast<pid_t>(pid)); st && st->ppid == ::getpid()) {
      out.emplace_back(static_cast<pid_t>(pid), st->state);
    }
  }
  ::closedir(dir);
  return out;
}

inline int count_zombie_children() {
  int n = 0;
  for (const auto& [pid, state] : children_of_self()) n += state == 'Z';
  return n;
}

// The names in /dev/shm, to show that nothing was left there.
inline std::set<std::string> dev_shm_entries() {
  std::set<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) out.insert(e->d_name);
    ::closedir(d);
  }
  return out;
}

// /dev/shm less the names mproc::shared_memory makes on purpose (its tests' "mproc-test-",
// its example's "mproc_example_", and the private ".mproc-" names its create() builds blocks
// under): what every other mproc object must leave as it found it, while those tests run
// beside it under ctest --parallel.
inline std::set<std::string> dev_shm_entries_but_named_shm() {
  std::set<std::string> out = dev_shm_entries();
  std::erase_if(out, [](const std::string& n) {
    return n.rfind("mproc-test-", 0) == 0 || n.rfind("mproc_example_", 0) == 0 || n.rfind(".mproc-", 0) == 0;
  });
  return out;
}

inline int count_open_fds() {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (const dirent* e = ::readdir(dir)) n += e->d_name[0] != '.';
  ::closedir(dir);
  return n - 1;  // the directory's own fd
}

// Polls `condition` until it holds or `limit` passes; returns whether it held. For
// conditions no event announces (a pid leaving /proc), with a deadline, never a blind sleep.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

inline bool fd_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  return n > 0;
}

// The message of the `E` that `call` throws, or "(nothing thrown)"; any other exception
// goes on (and fails the test).
template <class E, class Call>
std::string what_of(Call call) {
  try {
    call();
  } catch (const E& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

// A T in anonymous memory shared with the processes forked while it lives (value-initialised
// in place; unmapped, not destroyed, at the end): what a test of a process-shared primitive
// puts its lock or word in.
template <class T>
class shared_mapping {
 public:
  shared_mapping() {
    void* memory = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
    object_ = new (memory) T{};
  }
  ~shared_mapping() { ::munmap(object_, sizeof(T)); }
  shared_mapping(const shared_mapping&) = delete;
  shared_mapping& operator=(const shared_mapping&) = delete;
  T* operator->() const noexcept { return object_; }
  T& operator*() const noexcept { return *object_; }

 private:
  T* object_;
};

}  // namespace mproc_test
