// Fuzz target: the channel's record framing (src/channel_stream.hpp), the code that reads
// message lengths, block links and positions from shared memory that other processes
// wrote, and may have written badly.
//
// The store here is not shared memory but blocks of 256 bytes (a real channel's are
// 64 KiB), each its own allocation, so that a record crosses blocks after a few bytes and
// a sanitizer sees any read or write outside a block.
//
// Input, first byte even: hostile memory, as a dead or malicious peer could leave it.
//   [0][blocks-1 (mod 8)][max records - 1 (mod 16)][append length / 8][head: u64]
//   [tail: u64, a lane's end word (channel_stream.hpp pack_end)][taken: u64][block bytes...]
//   Each block is filled from the bytes that follow (256 each, the rest zero), block
//   headers and links included; then the records published from head on are read as
//   channel::get does, and one record is appended at the tail as channel::put does. Promised: every
//   record read either lies whole inside one block's data or was gathered, positions stay
//   valid, and anything inconsistent is mproc::error; never an access outside the blocks, a
//   block index past the count, or another exception. The end word's count, read against
//   `taken`, is at least `taken` and less than publish_room beyond it, and a valid end
//   position survives packing with any count.
// Input, first byte odd: a round trip, as producers and consumers use the stream.
//   [1][start offset selector][flags][records: [len: u16][len bytes]...]
//   Records are written with stream_writer in up to three batches from a start position
//   anywhere in a block, into blocks full of stale bytes (as reused ones are), each batch
//   read back with stream_reader once published. Promised: nothing of a batch is seen
//   before its publish(); then exactly the records written, with their tags, in order, and
//   the reader ends where the writer did.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "fuzz_target.hpp"
#include "ipc/channel_stream.hpp"
#include "mproc/error.hpp"

namespace channel_record_fuzz {

namespace cs = mproc::detail::channel_stream;
using mproc_fuzz::require;

struct store {
  static constexpr std::size_t block_bytes = 256;

  std::vector<std::unique_ptr<std::byte[]>> blocks;
  std::size_t max_blocks = 64;

  std::byte* block(std::uint32_t index) {
    require(index < blocks.size(), "the stream touched a block index beyond block_count()");
    return blocks[index].get();
  }
  std::uint32_t block_count() const { return static_cast<std::uint32_t>(blocks.size()); }
  std::uint32_t allocate_block() {
    if (blocks.size() >= max_blocks) throw mproc::error("out of blocks");
    blocks.push_back(std::make_unique<std::byte[]>(block_bytes));
    const auto index = static_cast<std::uint32_t>(blocks.size() - 1);
    cs::meta(*this, index).next.store(cs::no_block);
    return index;
  }
  // Whether [p, p + n) lies inside one block's data.
  bool inside_one_block(const std::byte* p, std::size_t n) const {
    for (const auto& b : blocks) {
      const std::byte* data = b.get() + cs::block_data_begin;
      const std::byte* end = b.get() + block_bytes;
      if (p >= data && p <= end) return n <= static_cast<std::size_t>(end - p);
    }
    return false;
  }
};

struct input {
  std::span<const std::uint8_t> rest;
  std::uint8_t byte() {
    if (rest.empty()) return 0;
    const std::uint8_t b = rest[0];
    rest = rest.subspan(1);
    return b;
  }
  template <class T>
  T word() {
    T v{};
    const std::size_t n = std::min(sizeof v, rest.size());
    std::memcpy(&v, rest.data(), n);
    rest = rest.subspan(n);
    return v;
  }
};

// What a consumer does with a message: reads every byte of it.
std::uint8_t consume(std::span<const std::byte> message) {
  std::uint8_t sum = 0;
  for (std::byte b : message) sum = static_cast<std::uint8_t>(sum + std::to_integer<std::uint8_t>(b));
  return sum;
}

void hostile(input in) {
  store s;
  const std::size_t count = 1 + in.byte() % 8;
  const std::size_t max_records = 1 + in.byte() % 16;
  const std::size_t append_bytes = 8 * in.byte();
  const auto head = cs::unpack(in.word<std::uint64_t>());
  const std::uint64_t end_word = in.word<std::uint64_t>();
  // A lane's count of messages taken: below 2^63 (at a billion a second, 292 years).
  const std::uint64_t taken = in.word<std::uint64_t>() >> 1;
  const auto [tail, seq] = cs::unpack_end(end_word);
  const std::uint64_t put = cs::published(end_word, taken);
  require(put >= taken && put - taken < cs::publish_room, "a lane end word gave a count outside its window");
  require(cs::pack_end(tail, seq) == end_word, "a lane end word does not survive unpacking and packing");
  for (std::size_t i = 0; i < count; ++i) {
    s.blocks.push_back(std::make_unique<std::byte[]>(store::block_bytes));
    const std::size_t n = std::min(store::block_bytes, in.rest.size());
    if (n != 0) std::memcpy(s.blocks.back().get(), in.rest.data(), n);
    in.rest = in.rest.subspan(n);
  }
  std::vector<std::byte> gathered;
  volatile std::uint8_t sink = 0;
  try {
    cs::stream_reader<store> r(s, head);
    for (std::size_t records = 0; records < max_records; ++records) {
      const std::optional<cs::record_head> record = r.next_head();
      if (!record) break;
      const std::span<const std::byte> message = r.payload(record->length, gathered);
      require(message.data() == gathered.data() || s.inside_one_block(message.data(), message.size()),
              "a record read in place does not lie inside one block's data");
      require(cs::valid_position<store>(r.pos, s.block_count()), "the reader left a position a writer cannot");
      sink = static_cast<std::uint8_t>(sink + consume(message));
    }
  } catch (const mproc::error&) {
    // Corrupted memory, detected: what channel::get turns into dropping the unread records.
  }
  // A producer then appends a record at the tail, following the links it finds there.
  try {
    cs::stream_writer<store> w(s, tail);
    w.write_record(std::vector<std::byte>(append_bytes, std::byte{0x5a}), 1);
    w.publish();
    require(cs::valid_position<store>(w.pos, s.block_count()), "the writer left a position a writer cannot");
  } catch (const mproc::error&) {
    // Corrupted memory detected, or out of blocks.
  }
}

// A tag for record i that sets every one of the 40 bits somewhere, and is never 0.
std::uint64_t tag_of(std::size_t i) {
  const std::uint64_t tag = ((i + 1) * 0x9e37'79b9'7f4a'7c15) & cs::tag_mask;
  return tag == 0 ? 1 : tag;
}

// Fills a block's data with bytes a reader must never take for a head (a reused block's).
void stale(store& s, std::uint32_t block) {
  std::memset(s.block(block) + cs::block_data_begin, 0xa5, store::block_bytes - cs::block_data_begin);
}

void round_trip(input in) {
  store s;
  s.allocate_block();
  stale(s, 0);
  const std::uint8_t selector = in.byte();
  const std::uint8_t flags = in.byte();
  // Anywhere in the block, its very end included (where a record that filled it left the tail).
  const cs::position start{0, static_cast<std::uint32_t>(cs::block_data_begin + 8 * (selector % 25))};
  // As the put before left it: the word where the next head goes is 0.
  if (start.offset < store::block_bytes) std::memset(s.block(0) + start.offset, 0, 8);
  if ((flags & 1) != 0) {
    // A producer died after linking the next block and before publishing: the writer reuses it.
    const std::uint32_t spare = s.allocate_block();
    stale(s, spare);
    cs::meta(s, 0).next.store(spare);
    if (start.offset == store::block_bytes) std::memset(s.block(spare) + cs::block_data_begin, 0, 8);
  }
  std::vector<std::vector<std::byte>> records;
  while (!in.rest.empty() && records.size() < 64) {
    const std::size_t length = std::min<std::size_t>(in.word<std::uint16_t>() % 1024, in.rest.size());
    records.emplace_back(length);
    if (length != 0) std::memcpy(records.back().data(), in.rest.data(), length);
    in.rest = in.rest.subspan(length);
  }

  cs::position tail = start;
  cs::position head = start;
  std::vector<std::byte> gathered;
  std::size_t written = 0;
  std::size_t read = 0;
  const std::size_t batches = 1 + (flags >> 1) % 3;
  for (std::size_t batch = 1; batch <= batches; ++batch) {
    const std::size_t until = batch == batches ? records.size() : records.size() * batch / batches;
    cs::stream_writer<store> w(s, tail);
    try {
      for (; written < until; ++written) w.write_record(records[written], tag_of(written));
    } catch (const mproc::error&) {
      return;  // out of blocks: nothing was published
    }
    require(!cs::stream_reader<store>(s, head).next_head(), "a record was seen before its put published it");
    w.publish();
    tail = w.pos;
    require(cs::valid_position<store>(tail, s.block_count()), "the writer left an invalid position");

    cs::stream_reader<store> r(s, head);
    while (const std::optional<cs::record_head> record = r.next_head()) {
      require(read < written, "the reader found more records than were written");
      require(record->tag == tag_of(read), "a record's tag read back differs from the one written");
      const std::span<const std::byte> message = r.payload(record->length, gathered);
      require(std::equal(message.begin(), message.end(), records[read].begin(), records[read].end()),
              "a record read back differs from the one written");
      ++read;
    }
    require(read == written, "the reader found fewer records than were written");
    require(r.pos == tail, "the reader stopped elsewhere than the writer");
    head = r.pos;
  }
}

std::vector<std::uint8_t> bytes_of(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::uint8_t*>(p);
  return {b, b + n};
}

void append(std::vector<std::uint8_t>& out, const std::vector<std::uint8_t>& more) {
  out.insert(out.end(), more.begin(), more.end());
}

// A hostile-mode input that is in fact a valid stream, as writers leave it.
std::vector<std::uint8_t> valid_memory(std::uint32_t start_offset, const std::vector<std::size_t>& lengths) {
  store s;
  s.allocate_block();
  const cs::position start{0, start_offset};
  cs::stream_writer<store> w(s, start);
  std::uint8_t fill = 'a';
  for (std::size_t n : lengths) {
    const std::vector<std::byte> payload(n, std::byte{fill++});
    w.write_record(payload, fill);
  }
  w.publish();
  std::vector<std::uint8_t> out{0, static_cast<std::uint8_t>(s.blocks.size() - 1),
                                static_cast<std::uint8_t>(lengths.size() - 1), 3};
  const std::uint64_t head = cs::pack(start);
  const std::uint64_t taken = 0x3fff'fff0;  // the count wraps past 2^30 in the window
  const std::uint64_t tail = cs::pack_end(w.pos, taken + lengths.size());
  append(out, bytes_of(&head, sizeof head));
  append(out, bytes_of(&tail, sizeof tail));
  append(out, bytes_of(&taken, sizeof taken));
  for (const auto& b : s.blocks) append(out, bytes_of(b.get(), store::block_bytes));
  return out;
}

std::vector<std::uint8_t> trip(std::uint8_t selector, std::uint8_t flags, const std::vector<std::size_t>& lengths) {
  std::vector<std::uint8_t> out{1, selector, flags};
  std::uint8_t fill = '0';
  for (std::size_t n : lengths) {
    const auto length = static_cast<std::uint16_t>(n);
    append(out, bytes_of(&length, sizeof length));
    out.insert(out.end(), n, fill++);
  }
  return out;
}

}  // namespace channel_record_fuzz

std::vector<std::vector<std::uint8_t>> mproc_fuzz::seeds() {
  using namespace channel_record_fuzz;
  return {
      valid_memory(64, {5}),         valid_memory(64, {0, 8, 3}),
      valid_memory(232, {20}),      // the length and the payload cross into the next block
      valid_memory(248, {300, 7}),  // the length straddles, the payload spans two blocks
      valid_memory(256, {1}),       // starts at the very end of a full block
      trip(0, 0, {1, 2, 3}),         trip(24, 2, {0, 190, 200}),  // records that fill a block exactly, across batches
      trip(23, 5, {500, 1, 17, 64}),                              // a spare block left linked by a dead producer
  };
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace channel_record_fuzz;
  if (size == 0) return 0;
  const input in{{data + 1, size - 1}};
  try {
    if ((data[0] & 1) == 0) {
      hostile(in);
    } else {
      round_trip(in);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc fuzz: unexpected %s\n", e.what());
    mproc_fuzz::fail("the record stream threw something other than mproc::error");
  }
  return 0;
}
