// A rank other than the root: runs the tasks the root sends in this rank's local pool and
// sends back each outcome, until the root says stop (finish what runs) or terminate.
#pragma once

#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/detail/pool/registry.hpp"

namespace mproc::detail {

// Returns once the local pool has joined and the root knows this rank has stopped.
void serve_root(pool_core& local, const function_table& table);

}  // namespace mproc::detail
