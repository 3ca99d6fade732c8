// A worker process's main (worker.cpp).
#pragma once

#include <sys/types.h>

#include "mproc/detail/pool/pool_core.hpp"

namespace mproc::detail {

// Runs tasks from pool `p`'s task channel in the worker for `slot`, forked by the
// zygote `zygote`, until a sentinel, max_tasks_per_child, or death.
[[noreturn]] void worker_main(pool_core::impl& p, unsigned slot, pid_t zygote) noexcept;

}  // namespace mproc::detail
