// The page size mproc lays its shared memory out by, a compile-time constant so that
// layouts are constants too. mproc assumes 4 KiB pages (x86-64, and arm64 kernels built
// with 4 KiB pages): the pool maps its function table read-only by pages.
#pragma once

#include <cstddef>

namespace mproc::detail {

inline constexpr std::size_t page_size = 4096;

constexpr std::size_t round_up(std::size_t n, std::size_t to) noexcept { return (n + to - 1) / to * to; }
constexpr std::size_t round_up_to_page(std::size_t n) noexcept { return round_up(n, page_size); }

}  // namespace mproc::detail
