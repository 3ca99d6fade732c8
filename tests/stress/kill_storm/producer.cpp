// Role: queue producer. Incarnation p puts the messages of its block of ids in order (queue
// 2 in batches, queue 1 sometimes with a timeout), recording attempt_end before each put and
// last_returned after it; see storm.hpp for what the checks make of them.
#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::producer_main(u32 p) {
  producer_rec& r = producers_[p];
  const u32 q = r.queue;
  auto& queue = queues_[q];
  control& ctl = ctl_.value();
  std::mt19937_64 rng(seed_ ^ mix(0x1000 + p));
  std::vector<storm_message> batch;
  u32 seq = 0;
  while (seq < r.limit && ld(ctl.producers_stop) == 0 && !past_hard_deadline()) {
    if (q == 0) {
      while (queue.qsize() > unbounded_backlog && ld(ctl.producers_stop) == 0) std::this_thread::sleep_for(200us);
    }
    const u32 k = std::min<u32>(q == 2 ? 1 + static_cast<u32>(rng() % max_batch) : 1, r.limit - seq);
    batch.resize(k);
    for (u32 j = 0; j < k; ++j) {
      storm_message& m = batch[j];
      m.seq = seq + 1 + j;
      m.id = r.base + m.seq - 1;
      m.producer = p;
      fill_payload(m.id, m.payload, payload_size(q, m.id));
      m.sum = checksum(m.id, m.payload.data(), m.payload.size());
    }
    st(r.attempt_end, seq + k);
    bool put = true;
    if (q == 2) {
      queue.put_many(std::span<const storm_message>(batch));
    } else if (q == 1 && rng() % 2 == 0) {
      put = queue.try_put_for(batch[0], 20ms);
    } else {
      queue.put(batch[0]);
    }
    if (!put) {
      st(r.attempt_end, seq);  // nothing was put: try again
      continue;
    }
    seq += k;
    st(r.last_returned, seq);
  }
}

}  // namespace kill_storm
