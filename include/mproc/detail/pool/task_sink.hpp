// What mproc::pool's typed layer submits to: a pool that runs tasks as encoded bytes by a
// table of functions. pool_core runs them in this machine's worker processes; the
// distributed backends (mproc::mpi) spread them over other machines' pools.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "mproc/detail/pool/task_host.hpp"

namespace mproc::detail {

// Runs a task in a worker: decodes `arguments`, calls the function, appends the encoded
// result to `result`. `function` is the table's function pointer, or null for a stateless
// callable type that the invoker constructs itself.
using generic_function = void (*)();
using task_invoker = void (*)(generic_function function, std::span<const std::byte> arguments,
                              std::vector<std::byte>& result);

// A task's function as a table holds it: what function_id() registers.
struct task_function_ref {
  task_invoker invoker = nullptr;
  generic_function function = nullptr;
};

class task_sink : public task_host {
 public:
  // The first bytes of every task message, which submit() fills in.
  static constexpr std::size_t task_header_bytes = 16;

  // Workers in all.
  virtual unsigned size() const noexcept = 0;
  // The table index for (invoker, function), registering it on first use.
  virtual std::uint32_t function_id(task_invoker invoker, generic_function function) = 0;
  // Queues a task: `message` is task_header_bytes of room, then the encoded arguments.
  // closed_error after close() or terminate(), except for a `fed` task after close(): see
  // task_host::begin_feed.
  virtual void submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
                      bool fed = false) = 0;
  // The same for a task of `function`, registered on first use as function_id() does it.
  virtual void submit(task_function_ref function, std::span<std::byte> message, std::shared_ptr<task_state> state) = 0;
  // Every queued task fails with cancelled_error before this returns; running ones finish.
  virtual void cancel_pending() = 0;
  virtual void close() = 0;
  virtual void terminate() = 0;
  virtual void join() = 0;  // mproc::error unless closed or terminated
};

}  // namespace mproc::detail
