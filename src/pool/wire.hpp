// What the pool's parent, zygote and workers say to each other: the shared control block
// (the function table, then the workers' claims), the headers of task and result
// messages in the channels, and the commands and reports on the zygote's socket.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

#include "mproc/detail/pool/pool_core.hpp"
#include "os/page_size.hpp"
#include "pool/task_board.hpp"
#include "pool/task_claim.hpp"

namespace mproc::detail {

constexpr std::size_t max_functions = 4096;
constexpr int retire_exit_code = 0;    // a worker that took its sentinel after close()
constexpr int recycle_exit_code = 98;  // a worker that ran max_tasks_per_child tasks
// A worker's claim on a sentinel (task ids count up from 1 and never reach it).
constexpr std::uint64_t retire_claim = task_claims::condemned - 1;

struct function_entry {
  std::atomic<std::uintptr_t> invoker;
  std::atomic<std::uintptr_t> function;
};

// Shared with every worker; only the parent writes the function table. The workers'
// claims (task_claim.hpp), then the task board (task_board.hpp), follow it in the same
// memory.
struct control_block {
  std::atomic<std::uint32_t> function_count;
  function_entry functions[max_functions];
};
// The workers' claims start on the page after the table, so that workers can map the
// table read-only: a worker gone rogue cannot point the others at its own code.
constexpr std::size_t table_bytes = round_up_to_page(sizeof(control_block));
static_assert(table_bytes % alignof(task_claim_slot) == 0);

inline std::size_t claims_bytes(unsigned processes) { return sizeof(task_claim_slot) * processes; }
inline std::size_t control_bytes(unsigned processes) {
  return table_bytes + claims_bytes(processes) + sizeof(task_board::memory);
}

struct task_header {
  // The flags.
  static constexpr std::uint32_t sentinel = 1;  // no task: the worker retires (close)
  static constexpr std::uint32_t on_board = 2;  // the task has a word on the task board

  std::uint64_t task;
  std::uint32_t function;
  std::uint32_t flags;
  bool is_sentinel() const noexcept { return (flags & sentinel) != 0; }
};
static_assert(sizeof(task_header) == pool_core::task_header_bytes);

// wake: makes the result thread return from its read (to run posted work, to stop, or to
// step aside for a caller that reads the results itself).
enum class result_kind : std::uint32_t { ok, exception, lost, timed_out };

struct result_header {
  std::uint64_t task;
  result_kind kind;
  std::int32_t exitcode;
};

// The header at the start of a frame; nullopt when the frame is too short to hold one.
template <class Header>
std::optional<Header> read_header(std::span<const std::byte> frame) {
  if (frame.size() < sizeof(Header)) return std::nullopt;
  Header h;
  std::memcpy(&h, frame.data(), sizeof h);
  return h;
}

// Parent <-> zygote, over a SOCK_SEQPACKET socket pair.
enum class command_kind : std::uint32_t { spawn, quit, kill_all };
struct command {
  command_kind kind;
  std::uint32_t slot;
};
enum class report_kind : std::uint32_t { spawned, exited, spawn_failed };
struct report {
  report_kind kind;
  std::uint32_t slot;
  std::int32_t pid;
  std::int32_t exitcode;  // exited: n, or -N for signal N; spawn_failed: the errno
};
}  // namespace mproc::detail
