// Vectors too big for the page-fault path: a map's output of millions of results.
//
// A fresh vector of 80 MB faults in 20,480 pages of 4 KiB as it is zeroed; on the
// virtual machines mproc is measured on each fault costs ~12 µs, so the allocation alone
// took 230 ms, half of a 10M-item map. Asking for transparent huge pages first (where the
// system allows them on request, /sys/kernel/mm/transparent_hugepage/enabled "madvise"
// or "always") makes it 40 faults and 13 ms. NumPy does the same for arrays of 4 MiB and
// more.
#pragma once

#include <cstddef>
#include <vector>

namespace mproc::detail {

// Buffers of at least this many bytes get the advice.
inline constexpr std::size_t huge_page_advice_bytes = std::size_t{4} << 20;

// Asks the kernel to back the whole 2 MiB pages inside [data, data + bytes) with huge
// pages. Memory outside that range is untouched; failure (no THP support) is ignored.
void advise_huge_pages(void* data, std::size_t bytes) noexcept;

// c.reserve(n) for a contiguous container (a vector, a string), with the advice above when
// the n elements take huge_page_advice_bytes or more and need a new allocation.
template <class C>
void reserve_big(C& c, std::size_t n) {
  if (c.capacity() >= n) return;
  const std::size_t bytes = n * sizeof(typename C::value_type);
  if (bytes >= huge_page_advice_bytes) c.clear();  // nothing to move into the new buffer
  c.reserve(n);
  if (bytes >= huge_page_advice_bytes) advise_huge_pages(c.data(), bytes);
}

// c.resize(n), through reserve_big: reserve, advise, then construct the elements.
template <class C>
void resize_big(C& c, std::size_t n) {
  if (n * sizeof(typename C::value_type) >= huge_page_advice_bytes) reserve_big(c, n);
  c.resize(n);
}

// std::vector<T>(n), through resize_big.
template <class T>
std::vector<T> make_big_vector(std::size_t n) {
  std::vector<T> v;
  resize_big(v, n);
  return v;
}

}  // namespace mproc::detail
