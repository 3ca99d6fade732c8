// mproc::shared_value and shared_array: elements in a memfd, after the recursive lock that
// get_lock() returns, so that one descriptor serves both.
//
// Layout: [lock][block state][padding to the elements' alignment][the elements].
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/error.hpp"
#include "os/page_size.hpp"
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

shared_block::shared_block(std::size_t element_size, std::size_t alignment, std::size_t count) : count_(count) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > page_size) {
    throw error("mproc::shared_array: unsupported alignment " + std::to_string(alignment));
  }
  const std::size_t data_offset = round_up(state_offset + sizeof(state), std::max(alignment, object_alignment));
  if (element_size != 0 && count > (std::numeric_limits<std::size_t>::max() - data_offset) / element_size) {
    throw std::length_error("mproc::shared_array: " + std::to_string(count) + " elements do not fit in memory");
  }
  memory_ = sync_memory::create("mproc-shared", data_offset + count * element_size);
  lock_ = std::make_shared<lock_core>(memory_, lock_offset, true, true);
  auto* s = reinterpret_cast<state*>(memory_->make_object(state_offset, sync_kind::shared_block, sizeof(state)));
  s->element_size = element_size;
  s->alignment = alignment;
  s->count = count;
  s->data_offset = data_offset;
  data_ = memory_->at(data_offset, count * element_size);
}

shared_block::shared_block(const sync_token& token, std::size_t element_size, std::size_t alignment)
    : memory_(sync_memory::open(token.memory)) {
  if (token.offset != state_offset) throw error("the handle received does not name an mproc shared value or array");
  auto* s = reinterpret_cast<state*>(memory_->open_object(state_offset, sync_kind::shared_block, sizeof(state)));
  if (s->element_size != element_size || s->alignment != alignment) {
    throw error("the handle received names an mproc shared value or array of another element type (" +
                std::to_string(s->element_size) + "-byte elements aligned to " + std::to_string(s->alignment) +
                ", expected " + std::to_string(element_size) + " and " + std::to_string(alignment) + ")");
  }
  if (s->data_offset % std::max(alignment, object_alignment) != 0 ||
      (element_size != 0 && s->count > (std::numeric_limits<std::size_t>::max() - s->data_offset) / element_size)) {
    throw error("the handle received names a damaged mproc shared value or array");
  }
  count_ = static_cast<std::size_t>(s->count);
  data_ = memory_->at(static_cast<std::size_t>(s->data_offset), count_ * element_size);  // throws beyond the file
  lock_ = std::make_shared<lock_core>(memory_, lock_offset, false, true);
  if (!lock_->recursive()) throw error("the handle received names a damaged mproc shared value or array");
}

sync_token shared_block::token() const { return memory_->token(state_offset); }

}  // namespace mproc::detail
