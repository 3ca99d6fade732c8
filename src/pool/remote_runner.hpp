// Runs tasks that came from another machine (an MPI root, a Redis client) in this
// machine's pool, the one path the distributed backends share. A task is the local pool's
// message whose 16-byte header room holds the sender's task id and its function as
// registry indices (every process of the binary has the same table); an outcome goes back
// as one reply: the id, whether it failed, then the result or the encoded exception.
//
// The indices are validated against the table, so a forged or corrupt task fails with
// serialization_error in its reply, never calls a wrong function.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/detail/pool/registry.hpp"

namespace mproc::detail {

struct remote_task_header {
  std::uint64_t id;
  std::uint32_t invoker;   // function_table index
  std::uint32_t function;  // function_table index, or function_table::no_function
};
static_assert(sizeof(remote_task_header) == task_sink::task_header_bytes, "fills the room task_sink leaves");

struct remote_result_header {
  std::uint64_t id;
  std::uint64_t failed;  // 1: the bytes are an encoded exception
};

// A reply: the header, then `body`.
std::vector<std::byte> remote_reply(std::uint64_t id, bool failed, std::span<const std::byte> body);
// A failed reply carrying `error`, by its type and message.
std::vector<std::byte> remote_failure_reply(std::uint64_t id, std::exception_ptr error);
// Reads a reply's header; false when `reply` is too short to hold one.
bool read_remote_result(std::span<const std::byte> reply, remote_result_header& header) noexcept;
// The outcome a reply carries, for the sender: `complete` with the result's bytes or
// `fail` with the exception it decodes to.
template <class State>
void deliver_remote_reply(State& state, const remote_result_header& header, std::span<const std::byte> reply) {
  const auto body = reply.subspan(sizeof(remote_result_header));
  if (header.failed != 0) {
    state.fail(decode_exception(body));
  } else {
    state.complete(body);
  }
}

class remote_runner {
 public:
  // Called once per task with its reply, on the local pool's result thread (or at once,
  // on the calling thread, for a task that could not be submitted).
  using reply_sink = std::function<void(std::vector<std::byte> reply)>;

  remote_runner(pool_core& local, const function_table& table) : local_(local), table_(table) {}

  // Submits `message` (a remote_task_header, then the encoded arguments) to the local pool.
  // `time_limit` > 0 overrides the pool's task_timeout for this task. Returns false, after
  // nothing, for a message too short to hold a header (no id to reply to).
  bool run(std::span<std::byte> message, const reply_sink& sink, std::chrono::nanoseconds time_limit = {});

 private:
  pool_core& local_;
  const function_table& table_;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> local_ids_;  // indices → local id
};

}  // namespace mproc::detail
