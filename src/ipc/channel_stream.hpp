// The record stream inside a channel's shared memory, apart from the memory that holds it,
// so that its framing can be tested on its own (tests/fuzz/channel_record_fuzz.cpp).
//
// Format: a chain of fixed-size blocks. Each block starts with a block_header; its data
// runs from block_data_begin to its end. Messages are records, [u64 head][payload] padded
// to 8 bytes (see record_head), one after another, running on into the next block of the chain when
// one is full, so a record may span any number of blocks. A place in the stream is a
// position: block index and byte offset in the block.
//
// Publication: each record publishes itself. Its head word is never 0 (its tag is not), and
// the word where the next record's head will go is 0 until that record is published: a
// writer zeroes it (or, when a put ends at a block's end, the first word of a block it
// finds linked there; a block it links is zeroed first) before it stores the first head of
// its put, last, with release. So a reader polls the word at its place, a line it reads
// anyway, and never the writer's end word, a line the writer rewrites on every put: with
// the consumer caught up, each put waited for that line to come back (see
// bench/publication_bench.cpp).
//
// Trust: every byte a reader sees (positions, links, lengths) was written by another
// process, which may have died or be hostile. The reader checks each against the store's
// bounds and links, and throws mproc::error ("memory is corrupted") rather
// than touch memory outside a block's data or read past the end; so does the writer for
// the position and links it finds in the memory.
//
// Store: the memory, a type with
//   static constexpr std::size_t block_bytes;  // a multiple of 8, > block_data_begin
//   std::byte* block(std::uint32_t index);     // for index < block_count()
//   std::uint32_t block_count() const;         // blocks that exist
//   std::uint32_t allocate_block();            // writer only: a block whose next is no_block
// Not thread-safe: a writer holds the producers' lock, a reader the consumers'.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mproc/error.hpp"

namespace mproc::detail::channel_stream {

inline constexpr std::size_t block_data_begin = 64;
inline constexpr std::uint32_t no_block = UINT32_MAX;

struct block_header {
  std::atomic<std::uint32_t> next;       // the chain: set by the producer that filled this block
  std::atomic<std::uint32_t> next_free;  // the free or released stack (channel.cpp)
};
static_assert(sizeof(block_header) <= block_data_begin);

// A place in the stream, packed in one word so that it is published with a single atomic
// store.
struct position {
  std::uint32_t block;
  std::uint32_t offset;
  friend bool operator==(position, position) = default;
};
inline std::uint64_t pack(position p) { return std::uint64_t{p.block} << 32 | p.offset; }
inline position unpack(std::uint64_t v) { return {static_cast<std::uint32_t>(v >> 32), static_cast<std::uint32_t>(v)}; }

// A lane's published end (channel.cpp), in one word so that a put publishes with a single
// store, and a producer killed at any instant has published all of its put or none of it:
// the block (20 bits: a channel's reservation holds 2^20 blocks of 64 KiB), the offset in
// it / 8 (14 bits), and the low 30 bits of the lane's message count. A consumer learns the
// full count from its own (the lane's messages taken) and the difference, which the
// producer keeps below publish_room.
inline constexpr unsigned end_seq_bits = 30;
inline constexpr std::uint64_t end_seq_mask = (std::uint64_t{1} << end_seq_bits) - 1;
inline constexpr std::uint64_t publish_room = std::uint64_t{1} << 29;
inline constexpr std::uint32_t max_blocks = std::uint32_t{1} << 20;

struct lane_end {
  position pos;
  std::uint64_t seq;  // the low end_seq_bits of the count
};
// `p` must be valid: block below max_blocks, offset 8-aligned and at most 2^17 - 8.
inline std::uint64_t pack_end(position p, std::uint64_t seq) {
  return std::uint64_t{p.block} << 44 | std::uint64_t{p.offset / 8} << 30 | (seq & end_seq_mask);
}
inline lane_end unpack_end(std::uint64_t v) {
  return {{static_cast<std::uint32_t>(v >> 44), static_cast<std::uint32_t>((v >> 30) & 0x3fff) * 8}, v & end_seq_mask};
}
// The full count of messages published in a lane, from its end and a count `taken` read no
// later: at least `taken`, and less than publish_room beyond it, whatever the word holds.
// Records publish themselves before the end word is stored (see Publication), so consumers
// may have taken more than it counts: a count publish_room or more ahead of `taken` is
// one behind it, and reads as `taken`.
inline std::uint64_t published(std::uint64_t end, std::uint64_t taken) {
  const std::uint64_t ahead = (unpack_end(end).seq - taken) & end_seq_mask;
  return ahead < publish_room ? taken + ahead : taken;
}

inline std::size_t round8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

// A word another process may be reading or writing at the same time: a record's head, or
// the 0 after a put's last record. Stream memory is 8-aligned.
inline std::uint64_t load_word(const std::byte* at) noexcept {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(const_cast<std::byte*>(at)))
      .load(std::memory_order_acquire);
}
inline void store_word(std::byte* at, std::uint64_t value, std::memory_order order) noexcept {
  std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(at)).store(value, order);
}

// A record's head word: the payload's length in the top 24 bits and a 40-bit tag of the
// writer's (the channel's ticket) below. A length of 2^24 - 1 or more reads long_length
// there, and the length follows in a u64 of its own. One word, not two, for the common
// small record: an 8-byte message takes 16 bytes, four to a cache line, and each line the
// consumer reads is one more the producer must fetch back before it writes there again.
inline constexpr unsigned tag_bits = 40;
inline constexpr std::uint64_t tag_mask = (std::uint64_t{1} << tag_bits) - 1;
inline constexpr std::uint64_t long_length = (std::uint64_t{1} << (64 - tag_bits)) - 1;

struct record_head {
  std::uint64_t length;
  std::uint64_t tag;  // below 2^40, never 0
};
// A head word no record has (its tag is 0): what a consumer reads for a lane whose head
// lies in memory it cannot map (channel::state::first_word), so that its get goes to that
// lane and reports why, instead of taking the lane for empty and waiting.
inline constexpr std::uint64_t unmappable_word = long_length << tag_bits;
inline std::uint64_t head_word(std::uint64_t length, std::uint64_t tag) noexcept {
  return std::min(length, long_length) << tag_bits | (tag & tag_mask);
}

// A reader's (get's) and a writer's (put's) finding that the memory cannot be trusted. A
// get drops what is unread, so that the lane stays usable (channel_get.cpp).
[[noreturn]] inline void corrupted_read(const std::string& what) {
  throw error("mproc::queue::get: the queue's shared memory is corrupted (" + what +
              "); the unread messages were dropped");
}
[[noreturn]] inline void corrupted_write(const std::string& what) {
  throw error("mproc::queue::put: the queue's shared memory is corrupted (" + what + ")");
}

template <class Store>
block_header& meta(Store& s, std::uint32_t index) {
  return *reinterpret_cast<block_header*>(s.block(index));
}

// A position a writer can leave behind: in a block that exists, 8-aligned, within the
// block's data (at its very end when a record filled it exactly).
template <class Store>
bool valid_position(position p, std::uint32_t block_count) {
  return p.block < block_count && p.offset >= block_data_begin && p.offset <= Store::block_bytes && p.offset % 8 == 0;
}

// Where the head of the record after position `p` goes: at `p`, or, when `p` is a full
// block's end, at the start of the block linked after it (no_block when none is linked
// yet). The block is not checked against the store: callers do, each with its own error.
template <class Store>
position head_place(Store& s, position p) {
  if (p.offset != Store::block_bytes) return p;
  return {meta(s, p.block).next.load(std::memory_order_acquire), block_data_begin};
}

// Appends records at a position, linking in blocks as it goes; publish() makes them
// visible, all at once.
template <class Store>
struct stream_writer {
  Store& s;
  position pos;
  std::byte* first_head = nullptr;  // held back until publish()
  std::uint64_t first_word = 0;

  // Throws error if `start` is not a valid position.
  stream_writer(Store& store, position start) : s(store), pos(start) {
    if (!valid_position<Store>(start, s.block_count())) corrupted_write("bad tail position");
  }

  // A record is its head, then its payload in any number of write()s, then align(). `tag`
  // must not be 0 in its low tag_bits.
  void write_head(std::uint64_t length, std::uint64_t tag) {
    if (pos.offset == Store::block_bytes) next_block();
    std::byte* at = s.block(pos.block) + pos.offset;
    const std::uint64_t word = head_word(length, tag);
    if (first_head == nullptr) {
      first_head = at;
      first_word = word;
    } else {
      store_word(at, word, std::memory_order_relaxed);
    }
    pos.offset += 8;
    if (length >= long_length) write(&length, sizeof length);
  }
  void write_record(std::span<const std::byte> payload, std::uint64_t tag) {
    write_head(payload.size(), tag);
    write(payload.data(), payload.size());
    align();
  }
  // Publishes the records written since the last publish: zeroes the word where the next
  // head goes, then stores the first head.
  void publish() {
    const position next_head = head_place(s, pos);
    if (next_head.block != no_block) {
      if (next_head.block >= s.block_count()) corrupted_write("bad block link");
      store_word(s.block(next_head.block) + next_head.offset, 0, std::memory_order_relaxed);
    }
    if (first_head != nullptr) store_word(first_head, first_word, std::memory_order_release);
    first_head = nullptr;
  }

  void write(const void* source, std::size_t n) {
    if (n == 0) return;  // an empty message's data may be null, which memcpy must not see
    if (pos.offset + n <= Store::block_bytes) [[likely]] {  // inline for a small constant n
      std::memcpy(s.block(pos.block) + pos.offset, source, n);
      pos.offset += static_cast<std::uint32_t>(n);
      return;
    }
    auto from = static_cast<const std::byte*>(source);
    while (n > 0) {
      if (pos.offset == Store::block_bytes) next_block();
      const std::size_t k = std::min(n, Store::block_bytes - pos.offset);
      std::memcpy(s.block(pos.block) + pos.offset, from, k);
      pos.offset += static_cast<std::uint32_t>(k);
      from += k;
      n -= k;
    }
  }
  void next_block() {
    block_header& b = meta(s, pos.block);
    // A producer that died after linking a block but before publishing left it here: reuse it.
    // Either way its first word is 0 before a reader can find the link (see Publication).
    std::uint32_t next = b.next.load(std::memory_order_acquire);
    const bool linked = next != no_block;
    if (!linked) {
      next = s.allocate_block();
    } else if (next >= s.block_count()) {
      corrupted_write("bad block link");
    }
    store_word(s.block(next) + block_data_begin, 0, std::memory_order_relaxed);
    if (!linked) b.next.store(next, std::memory_order_release);
    pos = {next, block_data_begin};
  }
  void align() { pos.offset = static_cast<std::uint32_t>(round8(pos.offset)); }
};

// Reads the published records from `pos` on.
template <class Store>
struct stream_reader {
  Store& s;
  position pos;

  // Throws error unless `start` is a valid position.
  stream_reader(Store& store, position start) : s(store), pos(start) {
    if (!valid_position<Store>(start, s.block_count())) corrupted_read("bad head position");
  }

  // The next record's head, once its writer has published it; then its payload (or, for a
  // consumer that cannot hold it, skip_payload after reading a prefix with read()). Empty,
  // the reader staying where it was, when the next record is not published (yet). Throws
  // error when the record's length or links do not fit the store.
  std::optional<record_head> next_head() {
    const position at = head_place(s, pos);
    if (at.block == no_block) return std::nullopt;
    if (at.block >= s.block_count()) corrupted_read("bad block link");
    const std::uint64_t word = load_word(s.block(at.block) + at.offset);
    if (word == 0) return std::nullopt;
    pos = {at.block, at.offset + 8};
    record_head head{word >> tag_bits, word & tag_mask};
    if (head.length == long_length) {
      read(&head.length, sizeof head.length);
      if (head.length < long_length) corrupted_read("bad message length");
    }
    if (head.length > std::size_t{s.block_count()} * Store::block_bytes) corrupted_read("bad message length");
    return head;
  }
  std::span<const std::byte> payload(std::uint64_t length, std::vector<std::byte>& gathered) {
    const std::byte* bytes = contiguous(length);
    if (bytes == nullptr) {
      gathered.resize(length);
      read(gathered.data(), length);
      bytes = gathered.data();
    }
    align();
    return {bytes, static_cast<std::size_t>(length)};
  }
  void skip_payload(std::size_t n) {
    while (n > 0) {
      enter_next_block_if_full();
      const std::size_t k = std::min(n, available_here());
      pos.offset += static_cast<std::uint32_t>(k);
      n -= k;
    }
    align();
  }

  // A published record's bytes in the next block: its writer linked it before it published.
  void enter_next_block_if_full() {
    if (pos.offset != Store::block_bytes) return;
    const std::uint32_t next = meta(s, pos.block).next.load(std::memory_order_acquire);
    if (next == no_block) corrupted_read("message runs past the published end");
    if (next >= s.block_count()) corrupted_read("bad block link");
    pos = {next, block_data_begin};
  }
  std::size_t available_here() const { return Store::block_bytes - pos.offset; }
  void read(void* target, std::size_t n) {
    if (n == 0) return;
    // Inline for a small constant n.
    if (pos.offset + n <= Store::block_bytes) [[likely]] {
      std::memcpy(target, s.block(pos.block) + pos.offset, n);
      pos.offset += static_cast<std::uint32_t>(n);
      return;
    }
    auto to = static_cast<std::byte*>(target);
    while (n > 0) {
      const std::span<const std::byte> piece = read_in_place(n);
      std::memcpy(to, piece.data(), piece.size());
      to += piece.size();
      n -= piece.size();
    }
  }
  // Whether the next n bytes lie in one block (moving into the next block first if this
  // one is full).
  bool fits_here(std::size_t n) {
    if (n == 0) return true;
    enter_next_block_if_full();
    return available_here() >= n;
  }
  // The next bytes in place, no copy: as many of the next n (n > 0) as this block holds
  // (moving into the next block first if this one is full).
  std::span<const std::byte> read_in_place(std::size_t n) {
    enter_next_block_if_full();
    const std::size_t k = std::min(n, available_here());
    const std::byte* p = s.block(pos.block) + pos.offset;
    pos.offset += static_cast<std::uint32_t>(k);
    return {p, k};
  }
  // The next n bytes when they lie in one block (read in place, no copy); else null.
  const std::byte* contiguous(std::size_t n) {
    if (!fits_here(n)) return nullptr;
    const std::byte* p = s.block(pos.block) + pos.offset;
    pos.offset += static_cast<std::uint32_t>(n);
    return p;
  }
  void align() { pos.offset = static_cast<std::uint32_t>(round8(pos.offset)); }
};

}  // namespace mproc::detail::channel_stream
