// Futex waits and wakes on a 32-bit word, for the typed layer's own waits (async_state)
// as well as the library's (src/wait/futex.hpp builds on them). Defined in src/wait/futex.cpp.
#pragma once

#include <atomic>
#include <cstdint>

#include "mproc/detail/wait/deadline.hpp"

namespace mproc::detail {

// Sleeps while word == expected, until woken or `until` passes. Returns false only when
// the deadline passed; spurious returns are allowed. The word may lie in memory shared
// between processes.
bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, deadline until) noexcept;
// Wakes up to `count` sleepers on the word.
void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept;

}  // namespace mproc::detail
