// What the forkserver and its client say to each other.
//
// The control socket (SOCK_SEQPACKET, one per server): the server says hello once it
// serves; then each request (forkserver_request, encoded) comes with the child's status
// socket riding along, and its reply is a forkserver_reply (then, on failure, the message)
// with the child's pidfd riding along. The child's status socket (SOCK_SEQPACKET, one per
// child): the caller sends the arguments (a u64 length, then chunks) to the child; the
// child sends status_record::ready once it has decoded them; the server sends
// status_record::exited once it has reaped the child, then closes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mproc::detail {

// The environment variable that puts the binary in server mode: the control socket's fd.
inline constexpr const char* forkserver_fd_variable = "MPROC_FORKSERVER_FD";

inline constexpr std::size_t forkserver_max_request = 64 * 1024;
inline constexpr std::size_t forkserver_argument_chunk = 32 * 1024;

struct forkserver_hello {
  static constexpr std::uint64_t expected_magic = 0x31736670726f636dULL;  // "mprocfs1"
  std::uint64_t magic = expected_magic;
  std::int32_t pid = 0;
};

struct forkserver_request {
  std::string invoker;  // registry names (forkserver_call)
  std::string function;
  std::string name;  // the child's process name and daemon flag
  bool daemon = false;
  std::string parent_name;  // what parent_process() says in the child
  std::int32_t parent_pid = 0;
  bool parent_daemon = false;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(invoker, function, name, daemon, parent_name, parent_pid, parent_daemon);
  }
};

struct forkserver_reply {
  std::int32_t pid = 0;    // the child's, or 0 when it was not started
  std::int32_t error = 0;  // errno of a failed fork, or -1: the reason follows as text
};

}  // namespace mproc::detail
