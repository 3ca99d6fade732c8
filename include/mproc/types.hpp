// Basic types shared by mproc's public headers.
#pragma once

namespace mproc {

// The process id type. It is the same type as POSIX `pid_t` (checked when mproc is built),
// declared here so that public headers need no system header.
using pid_t = int;

}  // namespace mproc
