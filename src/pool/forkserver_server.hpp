// The forkserver's main (forkserver_server.cpp).
#pragma once

namespace mproc::detail {

// Serves the client on the control socket whose number `fd_text` spells, until the
// client's process dies or closes the socket; then _exits. Called before main in a binary
// re-executed as the server; never returns.
[[noreturn]] void serve_as_forkserver(const char* fd_text) noexcept;

}  // namespace mproc::detail
