// The pool's zygote process's main (zygote.cpp).
#pragma once

#include <sys/types.h>

#include "mproc/detail/pool/pool_core.hpp"

namespace mproc::detail {

// Forks and reaps pool `p`'s workers as the parent `parent` commands over `sock`.
[[noreturn]] void zygote_main(pool_core::impl& p, int sock, pid_t parent) noexcept;

}  // namespace mproc::detail
