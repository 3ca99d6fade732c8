// The tracker process itself (shm_tracker.hpp says why it is built this way). Everything
// here after the fork is async-signal-safe: syscalls, memcpy, no allocator, no locks.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "os/syscall.hpp"
#include "os/unix_socket.hpp"
#include "shm/shm_tracker.hpp"

namespace mproc::detail {
namespace {

// A growable array of trivially copyable T in memory of its own (mmap/mremap): the
// tracker cannot use the allocator, which another thread may have held at the fork.
template <class T>
class raw_array {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  std::size_t size() const noexcept { return size_; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  // False when memory ran out: the caller carries on without the element.
  bool push(const T& value) noexcept {
    if (size_ == capacity_ && !grow()) return false;
    std::memcpy(static_cast<void*>(data_ + size_), &value, sizeof(T));
    ++size_;
    return true;
  }
  // Order is not kept: the last element takes the place of element i.
  void erase(std::size_t i) noexcept {
    if (i + 1 != size_) std::memcpy(static_cast<void*>(data_ + i), data_ + size_ - 1, sizeof(T));
    --size_;
  }
  void clear() noexcept { size_ = 0; }

 private:
  bool grow() noexcept {
    const std::size_t bytes = capacity_ * sizeof(T);
    const std::size_t new_bytes = bytes == 0 ? std::size_t{64} << 10 : bytes * 2;
    void* p = bytes == 0 ? ::mmap(nullptr, new_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                         : ::mremap(data_, bytes, new_bytes, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) return false;
    data_ = static_cast<T*>(p);
    capacity_ = new_bytes / sizeof(T);
    return true;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

struct tracked_name {
  pid_t owner;
  shm_identity id;
  char name[sizeof shm_tracker_message::name];
};

struct client {
  pid_t pid;
  int pidfd;             // -1 without pidfds: its end is learnt at the end of file only
  std::uint64_t serial;  // unique, unlike the pid and the pidfd's number, both reused
};

struct address_range {
  std::uintptr_t begin;
  std::uintptr_t end;
};

// Parses "start-end perms ..." of one /proc/self/maps line; true for a shared mapping.
bool parse_shared_mapping(const char* line, std::size_t length, address_range& range) noexcept {
  std::uintptr_t values[2] = {0, 0};
  std::size_t i = 0;
  for (std::uintptr_t& value : values) {
    for (; i < length; ++i) {
      const char c = line[i];
      const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (digit < 0) break;
      value = value * 16 + static_cast<std::uintptr_t>(digit);
    }
    ++i;  // '-' or ' '
  }
  // perms are four letters: rwxs or rwxp
  if (i + 4 > length || line[i + 3] != 's') return false;
  range = {values[0], values[1]};
  return true;
}

// The tracker inherited the caller's mappings; the shared ones (memfds of queues and
// locks, other named blocks) would keep that memory alive as long as the tracker lives.
// Best effort: what cannot be read stays mapped.
void unmap_shared_mappings() noexcept {
  const int maps = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (maps < 0) return;
  raw_array<address_range> shared;
  char buffer[4096];
  std::size_t held = 0;
  bool skipping = false;  // the rest of a line longer than the buffer
  for (;;) {
    const ssize_t got = retry_on_eintr([&] { return ::read(maps, buffer + held, sizeof buffer - held); });
    if (got <= 0) break;
    held += static_cast<std::size_t>(got);
    std::size_t start = 0;
    for (;;) {
      const void* newline = std::memchr(buffer + start, '\n', held - start);
      address_range range{};
      if (newline == nullptr) {
        if (start == 0 && held == sizeof buffer) {  // a line longer than the buffer: its start will do
          if (!skipping && parse_shared_mapping(buffer, held, range)) (void)shared.push(range);
          skipping = true;
          start = held;
        }
        break;  // else an incomplete line: read the rest first
      }
      const auto end = static_cast<std::size_t>(static_cast<const char*>(newline) - buffer);
      if (!skipping && parse_shared_mapping(buffer + start, end - start, range)) (void)shared.push(range);
      skipping = false;
      start = end + 1;
    }
    std::memmove(buffer, buffer + start, held - start);
    held -= start;
  }
  ::close(maps);
  for (std::size_t i = 0; i < shared.size(); ++i) {
    ::munmap(reinterpret_cast<void*>(shared[i].begin), shared[i].end - shared[i].begin);  // NOLINT
  }
}

void close_all_but(int keep) noexcept {
  const auto last = ~0U;
  const auto k = static_cast<unsigned>(keep);
  const bool below = k == 0 || ::close_range(0, k - 1, 0) == 0;
  const bool above = ::close_range(k + 1, last, 0) == 0;
  if (below && above) return;
  rlimit limit{};  // close_range(2) is Linux 5.9+
  const long most =
      ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 65536 ? static_cast<long>(limit.rlim_cur) : 65536;
  for (int fd = 0; fd < most; ++fd) {
    if (fd != keep) ::close(fd);
  }
}

void become_quiet(int socket) noexcept {
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);  // NOLINT(concurrency-mt-unsafe): single-threaded
  close_all_but(socket);
  for (int i = 0; i < 3; ++i) {
    if (::fcntl(i, F_GETFD) < 0) ::open("/dev/null", O_RDWR);  // takes the lowest free: i
  }
  ::prctl(PR_SET_NAME, "mproc-shm-track", 0, 0, 0);
  rlimit limit{};  // one pidfd per client: take all the descriptors we may
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  unmap_shared_mappings();
}

class tracker {
 public:
  explicit tracker(int socket) noexcept : socket_(socket) {}

  [[noreturn]] void run() noexcept {
    for (;;) {
      // Out of memory for the poll set (mmap failed), the socket alone is polled and every
      // client is asked by pid.
      polled_.clear();
      pollfd only_socket{socket_, POLLIN, 0};
      const bool have_set = polled_.push(only_socket);
      bool unwatched = !have_set && clients_.size() != 0;
      for (std::size_t i = 0; have_set && i < clients_.size(); ++i) {
        const bool watched = clients_[i].pidfd >= 0 && polled_.push({clients_[i].pidfd, POLLIN, 0});
        unwatched = unwatched || !watched;
      }
      pollfd* const set = have_set ? &polled_[0] : &only_socket;
      const std::size_t count = have_set ? polled_.size() : 1;
      if (retry_on_eintr([&] { return ::poll(set, count, unwatched ? pid_check_ms : -1); }) < 0) continue;
      ended_.clear();
      for (std::size_t p = 1; p < count; ++p) {
        if (set[p].revents != 0) note_end_of(set[p].fd);
      }
      if (unwatched) note_ends_by_pid(set, count);
      // Messages first: a client that died sent its last ones before dying.
      const bool end_of_file = !read_messages();
      for (std::size_t e = 0; e < ended_.size(); ++e) forget_client_with_serial(ended_[e]);
      if (end_of_file) unlink_all_and_exit();
    }
  }

 private:
  // Reads every queued message; false at the end of file (no client left).
  bool read_messages() noexcept {
    for (;;) {
      shm_tracker_message m;
      int passed = -1;
      const ssize_t got = receive(m, passed);
      if (got == 0) return false;
      if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      if (got != static_cast<ssize_t>(sizeof m)) {
        if (passed >= 0) ::close(passed);
        continue;
      }
      m.name[sizeof m.name - 1] = '\0';
      handle(m, passed);
    }
  }

  ssize_t receive(shm_tracker_message& m, int& passed) noexcept {
    return receive_message(socket_, &m, sizeof m, &passed, MSG_DONTWAIT);
  }

  void handle(const shm_tracker_message& m, int passed) noexcept {
    switch (m.what) {
      case shm_tracker_message::kind::hello:
        // A pid we know already: that process ended and the pid was reused.
        for (std::size_t i = 0; i < clients_.size(); ++i) {
          if (clients_[i].pid == m.pid) forget_client(i);
        }
        if (!clients_.push({m.pid, passed, ++serials_}) && passed >= 0) ::close(passed);
        return;
      case shm_tracker_message::kind::track: {
        drop_name(m.name);  // a name unlinked by someone else and made again
        tracked_name t{m.pid, m.id, {}};
        std::memcpy(t.name, m.name, sizeof t.name);
        (void)names_.push(t);
        break;
      }
      case shm_tracker_message::kind::untrack:
        drop_name(m.name);
        break;
    }
    if (passed >= 0) ::close(passed);
  }

  void drop_name(const char* name) noexcept {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      if (std::strcmp(names_[i].name, name) == 0) {
        names_.erase(i);
        return;
      }
    }
  }

  void note_end_of(int pidfd) noexcept {
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      if (clients_[i].pidfd == pidfd) (void)ended_.push(clients_[i].serial);
    }
  }

  // Without pidfds (Linux < 5.3, or the MPROC_FORCE_NO_PIDFD test hook) a client is asked
  // by pid now and then. A pid reused since its process ended looks alive: its names then
  // wait for the end of file, and nothing is ever unlinked by mistake.
  static constexpr int pid_check_ms = 100;
  void note_ends_by_pid(const pollfd* set, std::size_t count) noexcept {
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      bool watched = false;
      for (std::size_t p = 1; p < count && !watched; ++p) watched = set[p].fd == clients_[i].pidfd;
      if (!watched && ::kill(clients_[i].pid, 0) != 0 && errno == ESRCH) (void)ended_.push(clients_[i].serial);
    }
  }

  void forget_client_with_serial(std::uint64_t serial) noexcept {
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      if (clients_[i].serial == serial) {
        forget_client(i);
        return;
      }
    }
  }

  // The client ended: its names go.
  void forget_client(std::size_t i) noexcept {
    const pid_t pid = clients_[i].pid;
    if (clients_[i].pidfd >= 0) ::close(clients_[i].pidfd);
    clients_.erase(i);
    for (std::size_t n = 0; n < names_.size();) {
      if (names_[n].owner == pid) {
        unlink_shm_if_same(names_[n].name, names_[n].id);
        names_.erase(n);
      } else {
        ++n;
      }
    }
  }

  [[noreturn]] void unlink_all_and_exit() noexcept {
    for (std::size_t n = 0; n < names_.size(); ++n) unlink_shm_if_same(names_[n].name, names_[n].id);
    ::_exit(0);
  }

  int socket_;
  raw_array<client> clients_;
  raw_array<tracked_name> names_;
  raw_array<pollfd> polled_;
  raw_array<std::uint64_t> ended_;  // clients whose pidfd reported their end
  std::uint64_t serials_ = 0;
};

[[noreturn]] void tracker_main(int socket) noexcept {
  become_quiet(socket);
  const pid_t self = ::getpid();
  if (::send(socket, &self, sizeof self, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof self)) ::_exit(1);
  tracker(socket).run();
}

}  // namespace

void unlink_shm_if_same(const char* name, shm_identity id) noexcept {
  // shm_open and shm_unlink only prefix "/dev/shm/" on the stack: async-signal-safe.
  if (id.device == 0 && id.inode == 0) {
    ::shm_unlink(name);
    return;
  }
  const int fd = ::shm_open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0) return;
  struct stat st {};
  const bool same = ::fstat(fd, &st) == 0 && st.st_dev == id.device && st.st_ino == id.inode;
  ::close(fd);
  if (same) ::shm_unlink(name);
}

pid_t start_shm_tracker(int client, int socket, std::error_code& ec) noexcept {
  const pid_t middle = ::_Fork();
  if (middle < 0) {
    ec = last_error();
    return -1;
  }
  if (middle == 0) {
    ::setsid();
    const pid_t tracker = ::_Fork();
    if (tracker == 0) tracker_main(socket);
    ::_exit(tracker < 0 ? 1 : 0);
  }
  int status = 0;
  retry_on_eintr([&] { return ::waitpid(middle, &status, 0); });  // ECHILD when SIGCHLD is ignored: fine
  ::close(socket);  // now the tracker's alone: its end of file means it is gone
  pollfd ready{client, POLLIN, 0};
  const int wait_ms = 10'000;  // a tracker that cannot even say hello is as good as none
  if (retry_on_eintr([&] { return ::poll(&ready, 1, wait_ms); }) <= 0) {
    ec = std::make_error_code(std::errc::timed_out);
    return -1;
  }
  pid_t pid = 0;
  const ssize_t got = retry_on_eintr([&] { return ::recv(client, &pid, sizeof pid, MSG_DONTWAIT); });
  if (got != static_cast<ssize_t>(sizeof pid)) {
    ec = got < 0 ? last_error() : std::make_error_code(std::errc::no_child_process);
    return -1;
  }
  ec.clear();
  return pid;
}

}  // namespace mproc::detail
