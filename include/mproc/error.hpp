// mproc's error family.
//
// Contract:
// - Every error mproc raises for a misuse or a fault of the work it manages derives from
//   `mproc::error`, itself a `std::runtime_error`, so one `catch (const mproc::error&)`
//   catches them all.
// - Failures of the operating system (fork, pidfd, memfd, ...) are `std::system_error`
//   carrying the errno, never a `mproc::error`.
// - Each type is constructible from a message string, so it can be recreated in another
//   process from its `what()` alone.
// - All types are copyable and their members never throw.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace mproc {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `async_result::get(timeout)` expired, or a pool task ran past `task_timeout`.
class timeout_error : public error {
 public:
  using error::error;
};

// `put(v, timeout)` or `put_nowait` on a full queue (Python's `queue.Full`).
class queue_full : public error {
 public:
  using error::error;
};

// `get(timeout)` or `get_nowait` on an empty queue (Python's `queue.Empty`).
class queue_empty : public error {
 public:
  using error::error;
};

// Use of a closed queue, connection or pool.
class closed_error : public error {
 public:
  using error::error;
};

// A pool task cancelled before a worker started it (`async_result::cancel`,
// `pool::cancel_pending`): it never ran.
class cancelled_error : public error {
 public:
  using error::error;
};

// The worker running a task died. `exitcode()` tells how: n for `_exit(n)`, -N for signal N.
class worker_lost : public error {
 public:
  explicit worker_lost(const std::string& what, int exitcode = 0) : error(what), exitcode_(exitcode) {}
  int exitcode() const noexcept { return exitcode_; }

 private:
  int exitcode_;
};

// A task threw a type mproc cannot recreate. `type_name()` is the thrown type's name and
// `what()` its message.
class remote_error : public error {
 public:
  explicit remote_error(const std::string& what, std::string type_name = "unknown")
      : error(what), type_name_(std::move(type_name)) {}
  const std::string& type_name() const noexcept { return type_name_; }

 private:
  std::string type_name_;
};

// `barrier::wait` on a broken or aborted barrier.
class broken_barrier : public error {
 public:
  using error::error;
};

// A value cannot be encoded, or bytes received do not decode.
class serialization_error : public error {
 public:
  using error::error;
};

}  // namespace mproc
