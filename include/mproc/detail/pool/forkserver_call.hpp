// The compiled side of <mproc/forkserver.hpp>: what its templates call, defined in
// src/pool/forkserver_client.cpp and forkserver_server.cpp.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "mproc/detail/pool/task_sink.hpp"
#include "mproc/process.hpp"

namespace mproc::detail {

// The target as the server finds it: its invoker's and function pointer's registered
// names (mproc::error naming MPROC_REMOTE for an unregistered function pointer).
struct forkserver_call {
  std::string invoker;
  std::string function;  // empty: the invoker makes the callable itself
};
forkserver_call forkserver_call_of(task_invoker invoker, generic_function function);

// Starts a child of the forkserver running `call` on `arguments`; returns once the child
// has decoded them (or ended).
std::shared_ptr<child_record> start_forkserver_child(const forkserver_call& call, std::span<const std::byte> arguments,
                                                     const std::string& name, bool daemon, const process_info& parent);

// In the forkserver's child, once the arguments are decoded (each handle's descriptor
// claimed): the caller's start() may now return and drop its copies.
void forkserver_arguments_received() noexcept;

}  // namespace mproc::detail
