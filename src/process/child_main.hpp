// What every child mproc starts does between its start and its end, however it was made
// (forked from the caller by process::start, or from the forkserver).
#pragma once

#include <string>

#include "mproc/detail/os/function_ref.hpp"
#include "mproc/process.hpp"

namespace mproc::detail {

// Takes the identity (`name`, `daemon`, `parent`: they must outlive the call, which never
// returns), runs `body`, and ends the process: exit code 0 when body returns, 1 after
// printing `process <name> (pid N): <type>: <what>` when it throws; first it joins its
// own non-daemon children, terminates its daemon ones and flushes the standard streams.
// _exit, not exit: the atexit handlers and static destructors belong to the parent.
[[noreturn]] void run_child_main(const std::string& name, bool daemon, const process_info& parent,
                                 function_ref<void()> body) noexcept;

}  // namespace mproc::detail
