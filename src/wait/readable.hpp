// Waiting for a descriptor (a pipe, a pidfd) to become readable, until a deadline.
#pragma once

#include "mproc/detail/wait/deadline.hpp"

namespace mproc::detail {

// Blocks until `fd` is readable or `until` passes. EINTR never stretches the wait.
// Returns true when readable.
bool wait_readable(int fd, deadline until);

}  // namespace mproc::detail
