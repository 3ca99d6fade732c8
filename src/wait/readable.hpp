// Waiting for a descriptor (a pipe, a pidfd) to become readable, until a deadline.
#pragma once

#include "mproc/detail/wait/deadline.hpp"

namespace mproc::detail {

// Blocks until `fd` is readable or `until` passes. EINTR never stretches the wait.
// Returns true when readable. A failure of poll(2) throws std::system_error whose message
// begins with `who`, the public call that waits ("mproc::connection::recv").
bool wait_readable(int fd, deadline until, const char* who);

}  // namespace mproc::detail
