// The pause of a thread that spins on memory another process writes.
#pragma once

namespace mproc::detail {

// Tells the CPU that this is a spin-wait (x86 `pause`, Arm `yield`): the spinner yields
// the core's resources meanwhile, and polls the line it watches less often, which is then
// taken from its writer less often.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace mproc::detail
