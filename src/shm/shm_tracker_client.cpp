// The client's side of the resource tracker (shm_tracker.hpp): one connection per process
// tree, started on first use, inherited by forked children, restarted if the tracker died.
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "os/fd.hpp"
#include "os/syscall.hpp"
#include "os/unix_socket.hpp"
#include "shm/shm_tracker.hpp"

namespace mproc::detail {
namespace {

struct owned_name {
  std::string name;
  shm_identity id;
};

class tracker_connection {
 public:
  static tracker_connection& instance() {
    // Never destroyed: a creator's handle may be destroyed during exit, after statics.
    static tracker_connection* const the = new tracker_connection;
    return *the;
  }

  std::error_code track(const std::string& name, shm_identity id) {
    std::lock_guard lock(mutex_);
    forget_if_forked();
    const shm_tracker_message m = message(shm_tracker_message::kind::track, name, id);
    std::error_code ec = connected() ? send_hello_and(m) : std::make_error_code(std::errc::not_connected);
    if (ec) ec = restart_and_send(m);  // none yet, or it died
    if (!ec) owned_.push_back({name, id});
    return ec;
  }

  void untrack(const std::string& name, shm_identity id) noexcept {
    std::lock_guard lock(mutex_);
    forget_if_forked();
    std::erase_if(owned_, [&](const owned_name& o) { return o.name == name; });
    if (connected()) (void)send_hello_and(message(shm_tracker_message::kind::untrack, name, id));
  }

  pid_t tracker_pid() noexcept {
    std::lock_guard lock(mutex_);
    return connected() ? tracker_pid_ : 0;
  }

 private:
  tracker_connection() {
    // The mutex is held across fork(2), so a child never inherits it locked by a thread
    // that does not exist there.
    ::pthread_atfork([] { instance().mutex_.lock(); }, [] { instance().mutex_.unlock(); },
                     [] { instance().mutex_.unlock(); });
  }

  static shm_tracker_message message(shm_tracker_message::kind what, const std::string& name, shm_identity id) {
    shm_tracker_message m;
    m.what = what;
    m.pid = ::getpid();
    m.id = id;
    name.copy(m.name, sizeof m.name - 1);  // the caller checked the length
    return m;
  }

  // A forked child shares the connection, not the names: they are its parent's.
  void forget_if_forked() noexcept {
    if (owner_ != ::getpid()) {
      owned_.clear();
      owner_ = ::getpid();
    }
  }

  // Whether the descriptor is still the socket we made: a program may close descriptors
  // it did not open (closefrom in a child), and the number be given to another file.
  bool connected() const noexcept {
    if (socket_ < 0) return false;
    struct stat st {};
    return ::fstat(socket_, &st) == 0 && st.st_dev == socket_id_.device && st.st_ino == socket_id_.inode;
  }

  std::error_code send_hello_and(const shm_tracker_message& m) noexcept {
    if (hello_from_ != ::getpid()) {
      if (const std::error_code ec = send_hello()) return ec;
      hello_from_ = ::getpid();
    }
    return send(m, -1);
  }

  std::error_code send_hello() noexcept {
    std::error_code ignored;  // without pidfds the tracker learns of our end at end of file
    const unique_fd self(pidfd_open(::getpid(), ignored));
    return send(message(shm_tracker_message::kind::hello, {}, {}), self.get());
  }

  std::error_code send(const shm_tracker_message& m, int pass_fd) const noexcept {
    if (send_message(socket_, &m, sizeof m, pass_fd) < 0) return last_error();
    return {};
  }

  // Starts a tracker and tells it every name this process still owns, then `m`.
  std::error_code restart_and_send(const shm_tracker_message& m) {
    if (connected()) ::close(socket_);  // a dead tracker's: ours to close
    socket_ = -1;
    int ends[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) return last_error();
    std::error_code ec;
    const pid_t pid = start_shm_tracker(ends[0], ends[1], ec);
    if (pid < 0) {
      ::close(ends[0]);
      return ec;
    }
    struct stat st {};
    if (::fstat(ends[0], &st) != 0) {
      ec = last_error();
      ::close(ends[0]);
      return ec;
    }
    socket_ = ends[0];
    socket_id_ = {st.st_dev, st.st_ino};
    tracker_pid_ = pid;
    hello_from_ = 0;
    for (const owned_name& o : owned_) {
      if ((ec = send_hello_and(message(shm_tracker_message::kind::track, o.name, o.id)))) return ec;
    }
    return send_hello_and(m);
  }

  std::mutex mutex_;
  int socket_ = -1;
  shm_identity socket_id_;
  pid_t tracker_pid_ = 0;
  pid_t hello_from_ = 0;  // the process that said hello on socket_
  pid_t owner_ = 0;       // the process owned_ belongs to
  std::vector<owned_name> owned_;
};

}  // namespace

std::error_code track_shm_name(const std::string& name, shm_identity id) noexcept {
  try {
    return tracker_connection::instance().track(name, id);
  } catch (const std::bad_alloc&) {
    return std::make_error_code(std::errc::not_enough_memory);
  } catch (const std::system_error& e) {
    return e.code();
  }
}

void untrack_shm_name(const std::string& name, shm_identity id) noexcept {
  tracker_connection::instance().untrack(name, id);
}

pid_t shm_tracker_pid() noexcept { return tracker_connection::instance().tracker_pid(); }

}  // namespace mproc::detail
