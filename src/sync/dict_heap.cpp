#include "sync/dict_heap.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "mproc/error.hpp"
#include "os/page_size.hpp"
#include "os/syscall.hpp"

namespace mproc::detail::dict {
namespace {

unsigned bin_of(u64 size) noexcept { return static_cast<unsigned>(std::bit_width(size)) - 1; }

u64 page_down(u64 n) noexcept { return n / page_size * page_size; }

// How many blocks of a bin an allocation looks at for one large enough, before it takes
// the first block of a larger bin (which always is).
constexpr unsigned bin_scan_limit = 8;

u64 mix(u64 x) noexcept {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

u64 hash_bytes(std::span<const std::byte> bytes, u64 seed) noexcept {
  u64 h = seed ^ (bytes.size() * 0x9e3779b97f4a7c15ULL);
  const std::byte* p = bytes.data();
  std::size_t n = bytes.size();
  for (; n >= 8; p += 8, n -= 8) {
    u64 w;
    std::memcpy(&w, p, 8);
    h = std::rotl(h ^ mix(w), 29) * 0x9fb21c651e98df25ULL;
  }
  if (n != 0) {
    u64 w = 0;
    std::memcpy(&w, p, n);
    h = std::rotl(h ^ mix(w ^ n), 29) * 0x9fb21c651e98df25ULL;
  }
  return mix(h);
}

void heap::damaged(const char* what) {
  throw error(std::string("mproc::shared_dict: the dict's shared memory is damaged (") + what +
              "); it cannot be used any more");
}

table& heap::table_at(u64 offset) const {
  if (offset < heap_start || offset % block_align != 0 || offset > h_.top || h_.top - offset < table_header) {
    damaged("a table lies outside the heap");
  }
  auto& t = *reinterpret_cast<table*>(bytes_at(offset));
  const u64 size = t.block & ~kind_mask;
  if ((t.block & kind_mask) != kind_table || size > h_.top - offset || t.capacity < min_capacity ||
      !std::has_single_bit(t.capacity) || t.capacity > (size - table_header) / sizeof(u64)) {
    damaged("a table is not one");
  }
  return t;
}

record& heap::record_at(u64 offset) const {
  if (offset < heap_start || offset % block_align != 0 || offset > h_.top || h_.top - offset < record_header) {
    damaged("a record lies outside the heap");
  }
  auto& r = *reinterpret_cast<record*>(bytes_at(offset));
  const u64 size = r.block & ~kind_mask;
  if ((r.block & kind_mask) != kind_record || size < record_header || size > h_.top - offset ||
      r.key_bytes > size - record_header || r.value_bytes > size - record_header - r.key_bytes) {
    damaged("a record is not one");
  }
  return r;
}

u64 heap::allocate(u64 bytes, block_kind kind) {
  if (bytes > max_offset) {
    throw_system_error(std::make_error_code(std::errc::not_enough_memory),
                       "mproc::shared_dict: an entry of " + std::to_string(bytes) + " bytes cannot be stored");
  }
  const u64 need = std::max(min_block, round_up(bytes, block_align));
  u64 at = take_from_bins(need);
  if (at == 0 && h_.top + need > h_.file_end && h_.freed_since_rebuild >= need) {
    // The bins hold enough freed bytes, in pieces: merge what lies side by side.
    rebuild();
    at = take_from_bins(need);
  }
  if (at == 0) at = take_from_wilderness(need);
  auto& word = *reinterpret_cast<u64*>(bytes_at(at));
  word = (word & ~kind_mask) | kind;
  crash_point(step::allocated);
  return at;
}

u64 heap::take_from_bins(u64 need) {
  for (unsigned b = bin_of(need); b < bin_count; ++b) {
    u64* link = &h_.bins[b];
    for (unsigned seen = 0; *link != 0 && seen < bin_scan_limit; ++seen) {
      const u64 at = *link;
      if (at < heap_start || at % block_align != 0 || at > h_.top || h_.top - at < min_block) {
        damaged("a free block lies outside the heap");
      }
      auto& f = *reinterpret_cast<free_block*>(bytes_at(at));
      const u64 size = f.block & ~kind_mask;
      if ((f.block & kind_mask) != kind_free || size < min_block || size > h_.top - at)
        damaged("a free block is not one");
      if (size < need) {
        link = &f.next;
        continue;
      }
      const u64 rest = size - need >= min_block ? size - need : 0;
      const u64 used = size - rest;
      if (size >= release_threshold) {
        // Pages back first: if that fails, the block is still in its bin.
        back(at, rest >= release_threshold ? at + used + sizeof(free_block) : at + size);
      }
      *link = f.next;
      f.block = used | kind_free;
      if (rest != 0) push(at + used, rest, false);
      return at;
    }
  }
  return 0;
}

u64 heap::take_from_wilderness(u64 need) {
  if (h_.top + need > h_.file_end) grow(h_.top + need);
  const u64 at = h_.top;
  *reinterpret_cast<u64*>(bytes_at(at)) = need | kind_free;
  commit(h_.top, at + need);
  return at;
}

void heap::grow(u64 end) {
  // By an eighth: the part not yet used is memory held for nothing.
  const u64 step = std::clamp<u64>(h_.file_end / 8, initial_file, u64{1} << 30);
  const u64 new_end = round_up_to_page(std::max(end, h_.file_end + step));
  if (new_end > max_offset) {
    throw_system_error(std::make_error_code(std::errc::not_enough_memory),
                       "mproc::shared_dict: the dict cannot grow past " + std::to_string(max_offset) + " bytes");
  }
  memory_.grow(new_end);
  crash_point(step::file_grown);
  commit(h_.file_end, new_end);
}

void heap::back(u64 offset, u64 end) {
  const u64 from = page_down(offset);
  const u64 to = std::min(round_up_to_page(end), h_.file_end);
  if (to > from) memory_.reallocate(from, to - from);
}

void heap::push(u64 offset, u64 size, bool punch) {
  auto& f = *reinterpret_cast<free_block*>(bytes_at(offset));
  if (punch && size >= release_threshold) {
    const u64 from = round_up_to_page(offset + sizeof(free_block));
    const u64 to = page_down(offset + size);
    if (to > from) memory_.release(from, to - from);
  }
  const unsigned b = bin_of(size);
  f.block = size | kind_free;
  f.next = h_.bins[b];
  h_.bins[b] = offset;
}

void heap::release(u64 offset) {
  const u64 size = *reinterpret_cast<const u64*>(bytes_at(offset)) & ~kind_mask;
  h_.freed_since_rebuild += size;
  push(offset, size, true);
  crash_point(step::freed);
}

void heap::rebuild() {
  memory_.ensure_mapped(h_.file_end);  // mproc::error if the memfd is shorter
  if (h_.top < heap_start || h_.top > h_.file_end || h_.top % block_align != 0) damaged("the heap's end is wrong");
  std::vector<std::pair<u64, u64>> reached;  // offset, size
  table& t = table_at(h_.table);
  reached.emplace_back(h_.table, t.block & ~kind_mask);
  const u64* s = slots(t);
  u64 live = 0, tombstones = 0;
  for (u64 i = 0; i < t.capacity; ++i) {
    if (s[i] == slot_tombstone) {
      ++tombstones;
    } else if (slot_live(s[i])) {
      ++live;
      const u64 at = slot_offset(s[i]);
      reached.emplace_back(at, record_at(at).block & ~kind_mask);
    }
  }
  std::sort(reached.begin(), reached.end());
  h_.live = live;
  h_.tombstones = tombstones;
  h_.freed_since_rebuild = 0;
  std::fill(std::begin(h_.bins), std::end(h_.bins), u64{0});
  u64 end = heap_start;  // of the blocks seen so far
  for (std::size_t k = 0; k <= reached.size(); ++k) {
    const u64 next = k < reached.size() ? reached[k].first : h_.top;
    if (next < end) damaged("two entries overlap");
    if (next - end >= min_block) push(end, next - end, true);
    crash_point(step::rebuilding);
    if (k < reached.size()) end = next + reached[k].second;
  }
}

}  // namespace mproc::detail::dict
