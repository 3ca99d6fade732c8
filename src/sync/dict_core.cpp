// mproc::shared_dict's core: an open-addressing hash table (linear probing) of records in
// a memfd that grows in place (layout: dict_layout.hpp; allocator: dict_heap.cpp), under
// one robust process-shared mutex.
//
// Crash safety. Every change writes what is new into space no committed word reaches, then
// publishes it with ONE aligned store of a committed word (`commit`), then tidies up:
//   set / update   record written into a free block; its slot stored (new key: over an
//                  empty slot or a tombstone; existing key: over the old record's offset);
//                  then the counts, and the old record to a bin.
//   erase          the slot stored as a tombstone (or empty, when the next slot is);
//                  then the counts, and the record to a bin.
//   rehash         (before an insert that would fill the table past 3/4, or after an erase
//                  that leaves it under 1/8) a new table built in a free block, published
//                  by storing `table` in the header; then the old table to a bin.
//   clear          a new empty table published the same way; then a rebuild frees the rest.
//   growth         the memfd extended (fallocate), then `file_end` stored; other holders
//                  map the new end when they next take the lock.
// So a holder killed at any instant has published all of its change or none of it, and
// what it left undone is only derived state: the live and tombstone counts, the bins, the
// blocks it took but had not published. The next locker gets EOWNERDEAD from the mutex and
// recomputes all of that from the committed words (`heap::rebuild`: the table, the records
// its slots reach; every other byte below `top` becomes free space, merged with its
// neighbours). The windows, each a `step` a test stops a process at (dict_test):
//   allocated, record_written   the record is unreachable: freed by the rebuild;
//   slot_committed              the change happened: counts recounted, the old record freed;
//   table_built                 the new table is unreachable: freed; the old one serves;
//   table_committed             the new table serves (a clear happened); the old freed;
//   file_grown                  the memfd is larger than `file_end` says: the next growth
//                               takes up from its real size;
//   freed                       a bin half linked: rebuilt from scratch;
//   rebuilding                  a recoverer killed: the next one rebuilds again.
// A holder killed inside `update`'s function (user code, under the lock) made no store.
//
// Every offset read from the shared memory is checked against the heap's bounds and the
// kind of block it should name before it is used (heap::table_at, record_at): memory
// damaged by anything but a kill throws mproc::error, it never crashes a reader.
#include "mproc/detail/sync/dict_core.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <random>
#include <string>

#include "mproc/error.hpp"
#include "os/fd.hpp"
#include "os/syscall.hpp"
#include "shm/shared_memory.hpp"
#include "sync/dict_heap.hpp"
#include "sync/dict_layout.hpp"
#include "wait/robust_mutex.hpp"

namespace mproc::detail {

using dict::u64;

namespace {

constexpr const char* type_name = "mproc::shared_dict";
// Address space reserved for each dict: it grows to this much without moving.
constexpr std::size_t reservation = shared_memory::queue_reservation;

// The dicts whose lock this thread holds (their seeds), so that a call from inside a
// callback throws instead of waiting for itself.
struct held_locks {
  std::array<u64, 8> ids{};
  unsigned count = 0;
};
thread_local held_locks held;

u64 new_seed() {
  std::random_device device;
  const u64 clock = static_cast<u64>(std::chrono::steady_clock::now().time_since_epoch().count());
  return ((u64{device()} << 32) ^ device() ^ clock ^ static_cast<u64>(::getpid())) | 1;
}

struct stat stat_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_system_error(last_error(), std::string(type_name) + ": fstat");
  return st;
}

}  // namespace

// One hold of the dict's lock, and the table operations made under it.
class dict_core::locked {
 public:
  locked(const dict_core& core, const char* call)
      : memory_(*core.memory_), h_(*core.header_), heap_(memory_, h_), id_(core.id_) {
    for (unsigned i = 0; i < held.count && i < held.ids.size(); ++i) {
      if (held.ids[i] == id_) {
        throw error(std::string(type_name) + "::" + call +
                    ": called from inside a callback of the same dict (update's function, or a key's or value's "
                    "serialisation), which holds its lock; call it after the callback returns");
      }
    }
    if (robust_mutex_lock_raw(h_.lock, deadline::never(), type_name, call) == 1) {
      h_.owner_deaths.fetch_add(1, std::memory_order_relaxed);
      dict::commit(h_.repair_pending, 1);
      robust_mutex_mark_consistent(h_.lock);
    }
    if (h_.repair_pending != 0) repair();
    if (held.count < held.ids.size()) held.ids[held.count] = id_;
    ++held.count;
    try {
      if (h_.broken != 0) dict::heap::damaged("found by the repair after a holder died");
      memory_.ensure_mapped(h_.file_end);
      table_ = &heap_.table_at(h_.table);
    } catch (...) {
      unlock();
      throw;
    }
  }
  ~locked() { unlock(); }
  locked(const locked&) = delete;
  locked& operator=(const locked&) = delete;

  struct probe_result {
    u64 found;   // index of the key's slot, or npos
    u64 insert;  // where a new key goes: the first tombstone or empty slot on its path
  };
  static constexpr u64 npos = ~u64{0};

  u64 hash(bytes key) const noexcept { return dict::hash_bytes(key, h_.seed); }

  probe_result probe(bytes key, u64 hash) const {
    const u64 mask = table_->capacity - 1;
    const u64* s = heap_.slots(*table_);
    const u64 tag = hash >> (64 - dict::tag_bits);
    u64 insert = npos;
    for (u64 i = hash & mask, n = 0; n <= mask; i = (i + 1) & mask, ++n) {
      const u64 slot = s[i];
      if (slot == dict::slot_empty) return {npos, insert == npos ? i : insert};
      if (slot == dict::slot_tombstone) {
        if (insert == npos) insert = i;
        continue;
      }
      if (dict::slot_tag(slot) != tag) continue;
      const dict::record& r = heap_.record_at(dict::slot_offset(slot));
      if (r.hash == hash && r.key_bytes == key.size() &&
          std::memcmp(heap_.bytes_at(dict::slot_offset(slot)) + dict::record_header, key.data(), key.size()) == 0) {
        return {i, insert};
      }
    }
    if (insert == npos) dict::heap::damaged("the table has no empty slot");
    return {npos, insert};
  }

  bytes value_at(u64 index) const {
    const u64 at = dict::slot_offset(heap_.slots(*table_)[index]);
    const dict::record& r = heap_.record_at(at);
    return {heap_.bytes_at(at) + dict::record_header + r.key_bytes, r.value_bytes};
  }

  // Stores `value` under `key`, whose probe `p` found (or not) in the table in use.
  void store(bytes key, u64 hash, bytes value, probe_result p) {
    if (p.found == npos && (h_.live + h_.tombstones + 1) * 4 > table_->capacity * 3) {
      rehash(std::bit_ceil(std::max(dict::min_capacity, 2 * (h_.live + 1))));
      p = probe(key, hash);
    }
    const u64 at = heap_.allocate(dict::record_header + key.size() + value.size(), dict::kind_record);
    auto& r = *reinterpret_cast<dict::record*>(heap_.bytes_at(at));
    r.hash = hash;
    r.key_bytes = key.size();
    r.value_bytes = value.size();
    std::byte* data = heap_.bytes_at(at) + dict::record_header;
    if (!key.empty()) std::memcpy(data, key.data(), key.size());
    if (!value.empty()) std::memcpy(data + key.size(), value.data(), value.size());
    dict::crash_point(dict::step::record_written);

    const u64 index = p.found != npos ? p.found : p.insert;
    u64& slot = heap_.slots(*table_)[index];
    const u64 old = slot;
    dict::commit(slot, dict::slot_of(at, hash));
    dict::crash_point(dict::step::slot_committed);
    if (dict::slot_live(old)) {
      heap_.release(dict::slot_offset(old));
    } else {
      ++h_.live;
      if (old == dict::slot_tombstone) --h_.tombstones;
    }
  }

  void remove(u64 index) {
    u64* s = heap_.slots(*table_);
    const u64 old = s[index];
    const u64 next = s[(index + 1) & (table_->capacity - 1)];
    // Linear probing: a slot before an empty one ends no other key's path.
    const bool empty = next == dict::slot_empty;
    dict::commit(s[index], empty ? dict::slot_empty : dict::slot_tombstone);
    dict::crash_point(dict::step::slot_committed);
    --h_.live;
    if (!empty) ++h_.tombstones;
    heap_.release(dict::slot_offset(old));
    if (table_->capacity > dict::min_capacity && h_.live * 8 < table_->capacity) {
      rehash(std::bit_ceil(std::max(dict::min_capacity, 2 * h_.live)));
    }
  }

  void clear() {
    publish(new_table(dict::min_capacity));
    heap_.rebuild();  // frees every record and the old table
  }

  std::size_t size() const noexcept { return h_.live; }

  template <class Sink>
  void for_each(Sink sink) const {
    const u64* s = heap_.slots(*table_);
    for (u64 i = 0; i < table_->capacity; ++i) {
      if (!dict::slot_live(s[i])) continue;
      const u64 at = dict::slot_offset(s[i]);
      const dict::record& r = heap_.record_at(at);
      const std::byte* data = heap_.bytes_at(at) + dict::record_header;
      sink(bytes(data, r.key_bytes), bytes(data + r.key_bytes, r.value_bytes));
    }
  }

 private:
  // A holder died (or the repair after one failed): recompute what it may have left half
  // done. The mutex is marked consistent first, and `repair_pending` keeps the repair due
  // until it succeeds, so that the mutex never becomes ENOTRECOVERABLE (glibc 2.36's trylock
  // of such a mutex reports the error but leaves it locked by the caller).
  void repair() {
    try {
      memory_.ensure_mapped(h_.file_end);
      heap_.rebuild();
    } catch (const error&) {
      dict::commit(h_.broken, 1);  // damaged: every later call is told so
      dict::commit(h_.repair_pending, 0);
      ::pthread_mutex_unlock(&h_.lock);
      throw;
    } catch (...) {
      ::pthread_mutex_unlock(&h_.lock);  // out of memory: the next locker tries again
      throw;
    }
    dict::commit(h_.repair_pending, 0);
  }

  void unlock() noexcept {
    if (held.count > 0) --held.count;
    ::pthread_mutex_unlock(&h_.lock);
  }

  u64 new_table(u64 capacity) {
    const u64 at = heap_.allocate(dict::table_header + capacity * sizeof(u64), dict::kind_table);
    auto& t = *reinterpret_cast<dict::table*>(heap_.bytes_at(at));
    t.capacity = capacity;
    t.unused[0] = t.unused[1] = 0;
    std::memset(heap_.slots(t), 0, capacity * sizeof(u64));
    return at;
  }

  void rehash(u64 capacity) {
    const u64 at = new_table(capacity);
    dict::table& t = *reinterpret_cast<dict::table*>(heap_.bytes_at(at));
    u64* to = heap_.slots(t);
    const u64* from = heap_.slots(*table_);
    for (u64 i = 0; i < table_->capacity; ++i) {
      if (!dict::slot_live(from[i])) continue;
      u64 k = heap_.record_at(dict::slot_offset(from[i])).hash & (capacity - 1);
      while (to[k] != dict::slot_empty) k = (k + 1) & (capacity - 1);
      to[k] = from[i];
    }
    dict::crash_point(dict::step::table_built);
    const u64 old = h_.table;
    publish(at);
    heap_.release(old);
  }

  void publish(u64 table_offset) {
    dict::commit(h_.table, table_offset);
    dict::crash_point(dict::step::table_committed);
    table_ = &heap_.table_at(table_offset);
    h_.tombstones = 0;  // a rehash leaves them behind; a clear's rebuild recounts everything
  }

  shared_memory& memory_;
  dict::header& h_;
  dict::heap heap_;
  u64 id_;
  dict::table* table_ = nullptr;
};

dict_core::dict_core(std::uint64_t types)
    : memory_(shared_memory::create("mproc-dict", dict::initial_file, reservation, type_name)),
      header_(reinterpret_cast<dict::header*>(memory_->base())) {
  dict::header& h = *header_;
  h.magic = dict::magic;
  h.version = dict::layout_version;
  h.types = types;
  h.seed = new_seed();
  robust_mutex_init(h.lock, "mproc::shared_dict::shared_dict");
  h.file_end = memory_->reserved() < dict::initial_file ? memory_->reserved() : dict::initial_file;
  h.top = dict::heap_start;
  dict::heap heap(*memory_, h);
  const u64 at = heap.allocate(dict::table_header + dict::min_capacity * sizeof(u64), dict::kind_table);
  auto& t = *reinterpret_cast<dict::table*>(heap.bytes_at(at));
  t.capacity = dict::min_capacity;  // the slots are zero: the memfd was
  h.table = at;
  id_ = h.seed;
}

dict_core::dict_core(const fd_token& token, std::uint64_t types) {
  const std::string who = std::string(type_name) + "::load";
  unique_fd fd(claim_fd_token(token, who.c_str()));
  memory_ = shared_memory::adopt(std::move(fd), reservation, type_name);
  if (static_cast<std::size_t>(stat_of(memory_->fd()).st_size) < dict::heap_start) {
    throw error(who + ": the handle received does not name an mproc::shared_dict");
  }
  header_ = reinterpret_cast<dict::header*>(memory_->base());
  if (header_->magic != dict::magic) throw error(who + ": the handle received does not name an mproc::shared_dict");
  if (header_->version != dict::layout_version) {
    throw error(who + ": the handle received names a dict of layout version " + std::to_string(header_->version) +
                ", and this build uses " + std::to_string(dict::layout_version) +
                "; send handles only between processes of the same build");
  }
  if (header_->types != types) {
    throw error(who +
                ": the handle received names a shared_dict of other key or value types; receive it into a "
                "shared_dict<K, V> of the same K and V");
  }
  id_ = header_->seed;
}

dict_core::~dict_core() = default;

bool dict_core::find(bytes key, function_ref<void(bytes)> sink) const {
  locked l(*this, "get");
  const auto p = l.probe(key, l.hash(key));
  if (p.found == locked::npos) return false;
  if (sink) sink(l.value_at(p.found));
  return true;
}

void dict_core::assign(bytes key, bytes value) {
  locked l(*this, "set");
  const u64 hash = l.hash(key);
  l.store(key, hash, value, l.probe(key, hash));
}

void dict_core::update(bytes key, function_ref<void(const bytes*, std::vector<std::byte>&)> make) {
  thread_local std::vector<std::byte> buffer;
  locked l(*this, "update");
  const u64 hash = l.hash(key);
  const auto p = l.probe(key, hash);
  std::vector<std::byte> out = std::move(buffer);  // a callback's own update may use the buffer meanwhile
  out.clear();
  if (p.found != locked::npos) {
    const bytes old = l.value_at(p.found);
    make(&old, out);
  } else {
    make(nullptr, out);
  }
  l.store(key, hash, out, p);
  buffer = std::move(out);
}

bool dict_core::erase(bytes key) {
  locked l(*this, "erase");
  const auto p = l.probe(key, l.hash(key));
  if (p.found == locked::npos) return false;
  l.remove(p.found);
  return true;
}

void dict_core::clear() {
  locked l(*this, "clear");
  l.clear();
}

std::size_t dict_core::size() const {
  locked l(*this, "size");
  return l.size();
}

void dict_core::for_each(function_ref<void(bytes, bytes)> sink) const {
  locked l(*this, "items");
  l.for_each(sink);
}

std::uint64_t dict_core::owner_deaths() const noexcept { return header_->owner_deaths.load(std::memory_order_relaxed); }

std::size_t dict_core::file_bytes() const { return static_cast<std::size_t>(stat_of(memory_->fd()).st_size); }

std::size_t dict_core::memory_bytes() const { return static_cast<std::size_t>(stat_of(memory_->fd()).st_blocks) * 512; }

fd_token dict_core::token() const { return make_fd_token(memory_->fd(), "mproc::shared_dict::save"); }

std::uint64_t dict_types_fingerprint(const char* key_type, std::size_t key_length, const char* value_type,
                                     std::size_t value_length) noexcept {
  const u64 k = dict::hash_bytes({reinterpret_cast<const std::byte*>(key_type), key_length}, 0x6b6579);
  return dict::hash_bytes({reinterpret_cast<const std::byte*>(value_type), value_length}, k);
}

}  // namespace mproc::detail
