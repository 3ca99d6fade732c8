// The resource tracker of named shared memory (Python's resource_tracker): a small process
// that unlinks the /dev/shm names whose creator died without doing so.
//
// Why it is built this way:
// - It must outlive the creator long enough to unlink the names, so it cannot be the
//   creator's child dying with it (PDEATHSIG), nor its child at all (it would become a
//   zombie, or be counted by active_children()). It is double-forked: an intermediate
//   child forks it and exits at once, the creator reaps the intermediate, and the tracker
//   is adopted by init (or the nearest subreaper), which reaps it. The intermediate calls
//   setsid(2), so the terminal's Ctrl-C and a kill of the caller's process group miss it.
// - It must be safe to start from a multi-threaded caller: it is forked with _Fork(3)
//   (no atfork handlers) and, for its whole life, calls only async-signal-safe functions
//   (poll, recvmsg, open, fstat, unlink, close, mmap, _exit): no malloc, no lock another
//   thread may have held at the fork. It keeps only the socket: every descriptor it
//   inherited is closed (a pipe end kept open would hide an end of file from the
//   program), stdin/stdout/stderr become /dev/null, and the shared mappings it inherited
//   are unmapped (they would keep the program's shared memory alive). Every signal is
//   blocked: only SIGKILL ends it early.
// - Clients talk to it over one SOCK_SEQPACKET socket (whole messages, never interleaved),
//   whose client end every process forked from the starter inherits (O_CLOEXEC: exec'd
//   programs do not). The first message of each process is a hello carrying a pidfd of
//   itself (SCM_RIGHTS): the tracker learns a creator's death from it without ever
//   opening a pid that may have been reused. Without pidfds (Linux < 5.3), it asks by
//   kill(pid, 0) every 100 ms instead (a reused pid only delays the unlink).
// - When a client's pidfd reports its end, the tracker first reads every message still
//   queued (the dead client sent them before dying), then unlinks the names it still had.
// - When the last process holding the client end is gone (end of file), it unlinks every
//   name left and exits: it never lives on once its clients are gone.
// - A name is unlinked only if it still names the block its creator registered (device
//   and inode compared): a name unlinked by an opener and made again by someone else is
//   left alone. The private name a block is made under (named_shared_memory.cpp, create)
//   is tracked with no identity, before it exists, and unlinked whatever it names.
#pragma once

#include <sys/types.h>

#include <string>
#include <system_error>

namespace mproc::detail {

// The identity of a block in /dev/shm, beside its name (without the leading '/').
struct shm_identity {
  dev_t device = 0;
  ino_t inode = 0;
};

// Tells this process's tracker (started on first use) that the calling process created
// `name`: it is unlinked if this process dies without untrack_shm_name(). An error when
// the tracker cannot be started (descriptors or processes exhausted).
std::error_code track_shm_name(const std::string& name, shm_identity id) noexcept;
// The name was unlinked (by its creator or another process that shares the tracker).
void untrack_shm_name(const std::string& name, shm_identity id) noexcept;

// The tracker's pid, 0 when this process has none (tests).
pid_t shm_tracker_pid() noexcept;

// Where shm_open(3) keeps its names (glibc: always there on Linux).
inline constexpr char shm_directory[] = "/dev/shm/";

// Removes `name` from /dev/shm if it still names the block `id`, or whatever it names
// when `id` is all zero (a private name). Async-signal-safe.
void unlink_shm_if_same(const char* name, shm_identity id) noexcept;

// The tracker's side: forks it (twice) with `socket` as its end; returns its pid (sent
// back over `client`) or -1 with `ec` set.
pid_t start_shm_tracker(int client, int socket, std::error_code& ec) noexcept;

// What travels on the socket: fixed size, well under PIPE_BUF.
struct shm_tracker_message {
  enum class kind : int { hello, track, untrack };
  kind what = kind::hello;
  pid_t pid = 0;
  shm_identity id;
  char name[256] = {};
};

}  // namespace mproc::detail
