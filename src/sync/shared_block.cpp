// mproc::shared_value and shared_array: elements in a memfd, after the recursive lock that
// get_lock() returns, so that one descriptor serves both.
//
// Layout: [lock][block state][padding to the elements' alignment][the elements].
#include <algorithm>
#include <cassert>
#include <limits>
#include <stdexcept>
#include <string>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/error.hpp"
#include "os/page_size.hpp"
#include "shm/shared_memory.hpp"
#include "sync/sync_memory.hpp"

namespace mproc::detail {

struct shared_block::state {
  object_header header;
  std::uint64_t element_size;
  std::uint64_t alignment;
  std::uint64_t count;
  std::uint64_t data_offset;
};

namespace {

constexpr std::size_t lock_offset = 0;
constexpr std::size_t state_offset = lock_bytes;

}  // namespace

shared_block::shared_block(std::size_t element_size, std::size_t alignment, std::size_t count, const char* type)
    : count_(count) {
  // <mproc/shared.hpp> admits only alignof(T), a power of two, at most 4096 (a page at least).
  assert(alignment != 0 && (alignment & (alignment - 1)) == 0 && alignment <= page_size);
  const std::size_t data_offset = round_up(state_offset + sizeof(state), std::max(alignment, object_alignment));
  if (element_size != 0 && count > (std::numeric_limits<std::size_t>::max() - data_offset) / element_size) {
    throw std::length_error(constructor_name(type) + ": " + std::to_string(count) + " elements of " +
                            std::to_string(element_size) + " bytes do not fit in memory");
  }
  memory_ = sync_memory::create("mproc-shared", data_offset + count * element_size, type);
  lock_ = std::make_shared<lock_core>(memory_, lock_offset, true, true);
  auto* s = reinterpret_cast<state*>(memory_->make_object(state_offset, sync_kind::shared_block, sizeof(state)));
  s->element_size = element_size;
  s->alignment = alignment;
  s->count = count;
  s->data_offset = data_offset;
  data_ = memory_->at(data_offset, count * element_size);
}

shared_block::shared_block(const sync_token& token, std::size_t element_size, std::size_t alignment, const char* type)
    : memory_(sync_memory::open(token.memory, type)) {
  const std::string who = std::string(type) + "::load";
  if (token.offset != state_offset) {
    throw error(who + ": the handle received does not name an mproc::shared_value or shared_array");
  }
  auto* s = reinterpret_cast<state*>(memory_->open_object(state_offset, sync_kind::shared_block, sizeof(state)));
  if (s->element_size != element_size || s->alignment != alignment) {
    throw error(who + ": the handle received names one of another element type (" + std::to_string(s->element_size) +
                "-byte elements aligned to " + std::to_string(s->alignment) + ", where this one has " +
                std::to_string(element_size) + " and " + std::to_string(alignment) +
                "); receive it into one of the same element type");
  }
  if (s->data_offset % std::max(alignment, object_alignment) != 0 ||
      (element_size != 0 && s->count > (std::numeric_limits<std::size_t>::max() - s->data_offset) / element_size)) {
    throw error(who + ": the handle received names damaged shared memory");
  }
  count_ = static_cast<std::size_t>(s->count);
  data_ = memory_->at(static_cast<std::size_t>(s->data_offset), count_ * element_size);  // throws beyond the file
  lock_ = std::make_shared<lock_core>(memory_, lock_offset, false, true);
  if (!lock_->recursive()) throw error(who + ": the handle received names damaged shared memory");
}

sync_token shared_block::token() const { return memory_->token(state_offset); }

}  // namespace mproc::detail
