// The shared memory of an mproc::shared_dict: the header, the blocks of its heap (records,
// tables, free blocks) and the words that commit a change. See dict_core.cpp for how the
// words are written, and why a holder killed between any two of its stores loses nothing.
//
//   [0, 4096)          dict_header: identity, the robust lock, the committed words, and
//                      the allocator's state (derived: rebuilt after a holder died)
//   [4096, top)        blocks, each `[u64 block word][...]`, 16-aligned, back to back
//   [top, file_end)    never used yet ("wilderness"), allocated in the memfd
//
// Block word: the block's size in bytes (a multiple of 16, at least 32) | its kind (low 4
// bits). A record is `[block][hash][key bytes][value bytes]` then the key, then the value;
// a table is `[block][capacity][0][0]` then `capacity` slot words; a free block is
// `[block][next free block in its bin]`.
//
// Slot word: 0 empty; 1 a tombstone (an erased entry, so probing goes on past it); else
// (record offset / 16) << 24 | the top 24 bits of the key's hash.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mproc::detail::dict {

using u64 = std::uint64_t;

inline constexpr std::uint32_t magic = 0x6d70'6463;  // "mpdc"
inline constexpr std::uint32_t layout_version = 1;

inline constexpr u64 heap_start = 4096;
inline constexpr u64 initial_file = u64{64} << 10;
inline constexpr u64 block_align = 16;
inline constexpr u64 min_block = 32;
inline constexpr u64 record_header = 32;  // block, hash, key bytes, value bytes
inline constexpr u64 table_header = 32;   // block, capacity, two words unused
inline constexpr u64 min_capacity = 16;
// A free block this large gives its pages back to the system (a punched hole), and one
// carved from it takes them again first (fallocate), so that running out of memory is an
// error, never a SIGBUS. Smaller free blocks keep their pages for the next record.
inline constexpr u64 release_threshold = u64{256} << 10;
inline constexpr unsigned bin_count = 48;  // bin b holds free blocks of [2^b, 2^(b+1)) bytes

enum block_kind : u64 { kind_record = 1, kind_table = 2, kind_free = 3 };
inline constexpr u64 kind_mask = 0xf;

inline constexpr u64 slot_empty = 0;
inline constexpr u64 slot_tombstone = 1;
inline constexpr unsigned tag_bits = 24;
inline constexpr u64 max_offset = (u64{1} << (64 - tag_bits)) * block_align;

constexpr u64 slot_of(u64 offset, u64 hash) noexcept {
  return ((offset / block_align) << tag_bits) | (hash >> (64 - tag_bits));
}
constexpr u64 slot_offset(u64 slot) noexcept { return (slot >> tag_bits) * block_align; }
constexpr u64 slot_tag(u64 slot) noexcept { return slot & ((u64{1} << tag_bits) - 1); }
constexpr bool slot_live(u64 slot) noexcept { return slot > slot_tombstone; }

struct record {
  u64 block;
  u64 hash;
  u64 key_bytes;
  u64 value_bytes;
};
struct table {
  u64 block;
  u64 capacity;
  u64 unused[2];
};
struct free_block {
  u64 block;
  u64 next;  // 0: the last of its bin
};
static_assert(sizeof(record) == record_header && sizeof(table) == table_header);

struct header {
  std::uint32_t magic;
  std::uint32_t version;
  u64 types;  // a fingerprint of the handle's K and V, checked when a handle is received
  u64 seed;   // of the key hash
  alignas(64) pthread_mutex_t lock;
  alignas(64) std::atomic<u64> owner_deaths;
  // Set when a repair found the memory damaged: every later call throws. (Not the mutex's
  // own ENOTRECOVERABLE: glibc 2.36's trylock of such a mutex returns that error but leaves
  // the mutex locked by the caller, whose next call would wait for itself.)
  u64 broken;
  // Set while a repair runs: one that failed for want of memory is run again by the next
  // locker.
  u64 repair_pending;
  // The committed words: what a change publishes with one aligned store.
  u64 table;     // offset of the table block in use
  u64 file_end;  // the memfd's size as far as the heap knows (it is at least this large)
  u64 top;       // blocks lie in [heap_start, top)
  // Derived from the committed words and the blocks: rebuilt by whoever takes the lock
  // from a dead holder.
  u64 live;        // live slots
  u64 tombstones;  // tombstone slots
  u64 freed_since_rebuild;
  u64 bins[bin_count];
};
static_assert(sizeof(header) <= heap_start);

// The points of a change where a test can stop the process (SIGKILL from the hook).
enum class step {
  allocated,        // a block was taken from the bins or the wilderness, not yet written
  record_written,   // a record was written, its slot not yet stored
  slot_committed,   // a slot was stored; counts not yet updated, the old record not yet freed
  table_built,      // a new table was filled, not yet published
  table_committed,  // a new table was published, the old one not yet freed
  file_grown,       // the memfd grew, file_end not yet stored
  freed,            // a block went to its bin
  rebuilding,       // a recovery is rewriting the free space
};

// Called at each step when set; null in normal use. A test sets it in a child that it
// then expects to die at a chosen step.
inline void (*crash_hook)(step) = nullptr;

inline void crash_point(step s) {
  if (crash_hook != nullptr) [[unlikely]]
    crash_hook(s);
}

// Publishes `value` in `word` with one aligned store that the compiler keeps in program
// order with the stores around it: a process killed at any instant has made exactly the
// stores before some point of its program, since SIGKILL lands between instructions and
// the kernel keeps every store that reached the shared page.
inline void commit(u64& word, u64 value) noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::atomic_ref<u64>(word).store(value, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

}  // namespace mproc::detail::dict
