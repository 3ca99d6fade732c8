// Role: queue consumer. Takes messages in every way a queue offers (get, timed get,
// try_get_for, get_many), keeping its phase word and the ids of the get in progress (the
// consumer's window, storm.hpp), then marks each message: received once, whole, in its
// producer's order, on the right queue.
#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::consumer_main(u32 c) {
  consumer_rec& r = consumers_[c];
  this_consumer = &r;
  const u32 q = r.queue;
  auto& queue = queues_[q];
  const u32 me = c + 1;
  std::mt19937_64 rng(seed_ ^ mix(0x2000 + c));
  std::vector<u32> last_seq(max_incarnations, 0);
  std::vector<storm_message> got;
  for (;;) {
    st(r.nids, 0);
    st(r.phase, phase_in_get);
    got.clear();
    try {
      const u64 mode = rng() % 4;
      const auto wait = std::chrono::milliseconds(1 + rng() % 20);
      if (q == 2) {
        const std::size_t most = 1 + rng() % max_batch;
        got = mode < 2 ? queue.get_many(most) : queue.get_many(most, wait);
      } else if (mode < 2) {
        got.push_back(queue.get());
      } else if (mode == 2) {
        if (auto m = queue.try_get_for(wait)) got.push_back(std::move(*m));
      } else {
        got.push_back(queue.get(wait));
      }
    } catch (const mproc::queue_empty&) {
    } catch (const mproc::serialization_error&) {
      inc(r.corrupt);  // the message was consumed undecodable: it counts as lost too
      st(r.problem_id, ld(r.nids) != 0 ? ld(r.ids[0]) : ~u64{0});
    }
    st(r.phase, phase_returned);
    unsigned pills = 0;
    for (const storm_message& m : got) {
      if (m.id == pill_id) {
        ++pills;
      } else {
        mark(r, me, q, m, last_seq);
      }
    }
    st(r.phase, phase_idle);
    if (pills > 0) {
      for (unsigned k = 1; k < pills; ++k) queue.put(pill());  // a batch took another's pill
      return;
    }
    if (past_hard_deadline()) throw std::runtime_error("consumer gave up: hard deadline passed");
  }
}

void storm::mark(consumer_rec& r, u32 me, u32 queue, const storm_message& m, std::vector<u32>& last_seq) {
  inc(r.received);
  if (!m.verified || m.payload.size() != payload_size(queue, m.id)) {
    if (inc(r.corrupt) == 0) st(r.problem_id, m.id);
    return;
  }
  if (m.id >= message_capacity_ || m.producer >= max_incarnations) {
    if (inc(r.misrouted) == 0) st(r.problem_id, m.id);
    return;
  }
  producer_rec& p = producers_[m.producer];
  if (ld(p.queue) != queue || m.seq == 0 || m.seq > ld(p.limit) || m.id != ld(p.base) + m.seq - 1) {
    if (inc(r.misrouted) == 0) st(r.problem_id, m.id);
    return;
  }
  u32 none = 0;
  if (!std::atomic_ref<u32>(received_by_[m.id]).compare_exchange_strong(none, me)) {
    if (inc(r.duplicates) == 0) st(r.problem_id, m.id);
  }
  if (m.seq <= last_seq[m.producer]) {
    if (inc(r.disorder) == 0) st(r.problem_id, m.id);
  }
  last_seq[m.producer] = m.seq;
}

}  // namespace kill_storm
