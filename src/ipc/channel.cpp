// The channel: creation, handles, message ids, holding every lane, and the joinable
// queue's count. Putting is in channel_put.cpp, taking in channel_get.cpp.
#include <new>
#include <string>

#include "ipc/channel_state.hpp"

namespace mproc::detail {

channel::channel(std::size_t maxsize, const char* type) : state_(std::make_unique<state>()) {
  state_->mem = shared_memory::create("mproc-queue", header_bytes, shared_memory::queue_reservation, type);
  const std::string who = constructor_name(type);
  header* h = new (state_->mem->base()) header{};
  h->magic = channel_magic;
  h->version = layout_version;
  h->maxsize = maxsize;
  robust_mutex_init(h->put_lock, who.c_str());
  h->block_count.store(0);
  h->lanes_used.store(1);  // the shared lane
  h->free.top.store(no_block);
  h->released.top.store(no_block);
  state_->h = h;
}

channel::channel(const fd_token& token) : state_(std::make_unique<state>()) {
  unique_fd fd(claim_fd_token(token, "mproc::queue::load"));
  state_->mem = shared_memory::adopt(std::move(fd), shared_memory::queue_reservation, "mproc::queue");
  auto* h = reinterpret_cast<header*>(state_->mem->base());
  if (h->magic != channel_magic || h->version != layout_version) {
    throw error(
        "mproc::queue::load: the handle received does not name an mproc queue of this version; send handles only "
        "between processes of the same build");
  }
  state_->h = h;
}

channel::~channel() = default;

std::size_t channel::size() const noexcept { return state_->size(); }
std::size_t channel::maxsize() const noexcept { return static_cast<std::size_t>(state_->h->maxsize); }
std::uint64_t channel::owner_deaths() const noexcept { return state_->h->owner_deaths.load(); }
std::uint64_t channel::lane_takeovers() const noexcept { return state_->h->lane_takeovers.load(); }
fd_token channel::token() const { return make_fd_token(state_->mem->fd(), "mproc::queue::save"); }
void channel::forget_descriptor() noexcept { state_->mem->forget_descriptor(); }

std::uint64_t channel::message_id() const noexcept {
  return std::uint64_t{current_handing.lane} << lane_shift | current_handing.seq;
}

bool channel::committed(std::uint64_t id) const noexcept {
  const auto i = static_cast<std::uint32_t>(id >> lane_shift);
  if (i >= lane_count) return false;
  return (state_->h->lanes[i].get_seq.load(std::memory_order_acquire) & seq_mask) > (id & seq_mask);
}

bool channel::held_by_caller(std::uint64_t id) const noexcept {
  return state_->reader_held_by_caller(static_cast<std::uint32_t>(id >> lane_shift));
}

void channel::hold_consumers(function_ref<void()> action) {
  state& s = *state_;
  std::uint32_t locked = 0;
  struct unlock_all {
    state& s;
    std::uint32_t& locked;
    ~unlock_all() {
      while (locked > 0) s.h->lanes[--locked].reader.unlock();
      current_handing = {};
    }
  } unlock{s, locked};
  for (; locked < lane_count; ++locked) {
    lane& l = s.h->lanes[locked];
    if (l.reader.lock(deadline::never()) == lock_result::recovered) s.recover_reader(l);
  }
  current_handing = {state_.get(), all_lanes, 0};
  action();
}

void channel::task_done() {
  header& h = *state_->h;
  std::uint64_t done = h.done.load(std::memory_order_acquire);
  do {
    if (done >= state_->put_total()) {
      throw error(
          "mproc::joinable_queue::task_done: called more times than there were items put; call it once per value "
          "taken");
    }
  } while (!h.done.compare_exchange_weak(done, done + 1, std::memory_order_acq_rel));
  h.all_done.announce(INT_MAX);
}

bool channel::join(deadline until) {
  header& h = *state_->h;
  return wait_for_condition(
      h.all_done, [&] { return h.done.load(std::memory_order_acquire) >= state_->put_total(); }, until);
}

}  // namespace mproc::detail
