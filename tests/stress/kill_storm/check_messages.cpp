// Check: every message a producer put arrived exactly once with a valid checksum, or its
// loss is attributed to a killed producer's unfinished put or to a consumer killed after its
// get committed; nothing duplicated, corrupted, reordered, misrouted or left behind.
#include <unordered_map>

#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::check_messages() {
  // The parent takes whatever the consumers left (nothing, if all went well).
  consumer_rec& mine = consumers_[max_incarnations];
  this_consumer = &mine;
  u64 leftovers = 0;
  std::vector<u32> last_seq(max_incarnations, 0);
  for (u32 q = 0; q < queue_count; ++q) {
    while (auto m = queues_[q].try_get()) {
      if (m->id == pill_id) continue;
      ++leftovers;
      mark(mine, max_incarnations + 1, q, *m, last_seq);
    }
    if (queues_[q].qsize() != 0) fail("queue " + std::to_string(q) + ": qsize() is not 0 once nothing can be taken");
  }
  this_consumer = nullptr;
  if (leftovers != 0)
    fail("queues: " + std::to_string(leftovers) + " messages left behind by consumers that had stopped");

  // What the killed consumers were doing.
  struct attribution {
    u32 consumer;
    u64 phase;
  };
  std::unordered_map<u64, attribution> window;  // ids listed by a consumer killed in decoding/decoded/returned
  u64 received = 0, duplicates = 0, corrupt = 0, disorder = 0, misrouted = 0;
  std::string problems;
  for (u32 c = 0; c <= max_incarnations; ++c) {
    consumer_rec& r = consumers_[c];
    if (c < next_consumer_ || c == max_incarnations) {
      received += ld(r.received);
      duplicates += ld(r.duplicates);
      corrupt += ld(r.corrupt);
      disorder += ld(r.disorder);
      misrouted += ld(r.misrouted);
      if (ld(r.duplicates) + ld(r.corrupt) + ld(r.disorder) + ld(r.misrouted) != 0 && problems.size() < 300) {
        problems += " consumer " + std::to_string(c) + " first at id " + std::to_string(ld(r.problem_id)) + ";";
      }
    }
    if (c >= next_consumer_ || ld(r.state) != role_killed) continue;
    const u64 phase = ld(r.phase);
    if (phase < phase_decoding) continue;
    const u64 n = std::min<u64>(ld(r.nids), max_batch);
    for (u64 k = 0; k < n; ++k) window[ld(r.ids[k])] = {c + 1, phase};
  }

  u64 put_returned = 0, delivered = 0, lost_to_consumer_kills = 0, unaccounted = 0, phantom = 0;
  u64 unfinished_delivered = 0, unfinished_lost = 0, not_prefix = 0, redelivered = 0, duplicate_deliveries = 0;
  u64 killed_in_decoding_lost = 0;
  std::string examples;
  const auto example = [&](const std::string& what) {
    if (examples.size() < 600) examples += "\n    " + what;
  };
  for (u32 p = 0; p < next_producer_; ++p) {
    producer_rec& r = producers_[p];
    const u32 last = ld(r.last_returned);
    const u32 attempt = std::max(ld(r.attempt_end), last);
    const bool killed = ld(r.state) == role_killed;
    if (!killed && attempt != last) {
      example("producer " + std::to_string(p) + " ended normally in the middle of a put?");
      ++unaccounted;
    }
    put_returned += last;
    bool gap = false;  // in the unfinished put: a message before this one was not delivered
    for (u32 seq = 1; seq <= r.limit; ++seq) {
      const u64 id = r.base + seq - 1;
      const u32 who = ld(received_by_[id]);
      const auto w = window.find(id);
      const bool attributed = w != window.end() && w->second.phase != phase_decoding;
      if (w != window.end() && who != 0 && who != w->second.consumer) {
        if (w->second.phase == phase_returned) {
          ++duplicate_deliveries;
          example("message " + std::to_string(id) + " was taken by consumer " + std::to_string(w->second.consumer - 1) +
                  " (killed after get returned) and delivered again to consumer " + std::to_string(who - 1));
        } else {
          ++redelivered;
        }
      }
      if (seq <= last) {
        if (who != 0) {
          ++delivered;
        } else if (attributed) {
          ++lost_to_consumer_kills;
        } else {
          ++unaccounted;
          if (w != window.end()) ++killed_in_decoding_lost;
          example("message " + std::to_string(id) + " (producer " + std::to_string(p) + " seq " + std::to_string(seq) +
                  ", queue " + std::to_string(r.queue) + ", put returned) was never received" +
                  (w != window.end() ? " (its consumer was killed while decoding it, inside get)" : ""));
        }
      } else if (seq <= attempt) {
        const bool arrived = who != 0 || attributed;
        if (arrived) {
          ++unfinished_delivered;
          if (gap) {
            ++not_prefix;
            example("message " + std::to_string(id) +
                    " of an unfinished put_many arrived after an earlier one did not");
          }
        } else {
          ++unfinished_lost;
          gap = true;
        }
      } else if (who != 0) {
        ++phantom;
        example("message " + std::to_string(id) + " (producer " + std::to_string(p) + " seq " + std::to_string(seq) +
                ") was received though it was never put");
      }
    }
  }
  if (unaccounted != 0)
    fail("queues: " + std::to_string(unaccounted) + " messages lost without a kill to blame:" + examples);
  if (phantom != 0) fail("queues: " + std::to_string(phantom) + " messages received that were never put:" + examples);
  if (not_prefix != 0)
    fail("queues: " + std::to_string(not_prefix) + " partial batches that were not a prefix:" + examples);
  if (duplicates != 0 || duplicate_deliveries != 0) {
    fail("queues: " + std::to_string(duplicates + duplicate_deliveries) + " messages delivered twice:" + problems +
         examples);
  }
  if (corrupt != 0) fail("queues: " + std::to_string(corrupt) + " messages failed their checksum or size:" + problems);
  if (disorder != 0)
    fail("queues: " + std::to_string(disorder) + " messages out of their producer's order:" + problems);
  if (misrouted != 0)
    fail("queues: " + std::to_string(misrouted) + " messages on the wrong queue or with a bad id:" + problems);

  std::string deaths;
  for (auto& q : queues_) deaths += " " + std::to_string(q.owner_deaths());
  char line[640];
  std::snprintf(line, sizeof line,
                "  queues: %llu messages put (put returned), %llu received; %llu lost to consumers killed after the "
                "commit, %llu redelivered after a consumer was killed inside get; unfinished puts of killed producers: "
                "%llu delivered, %llu not; lost unaccounted %llu, duplicates %llu, corrupt %llu, out of order %llu, "
                "phantom %llu\n          owner_deaths per queue:%s; queue memfds at the end:%s\n",
                static_cast<unsigned long long>(put_returned), static_cast<unsigned long long>(received),
                static_cast<unsigned long long>(lost_to_consumer_kills), static_cast<unsigned long long>(redelivered),
                static_cast<unsigned long long>(unfinished_delivered), static_cast<unsigned long long>(unfinished_lost),
                static_cast<unsigned long long>(unaccounted),
                static_cast<unsigned long long>(duplicates + duplicate_deliveries),
                static_cast<unsigned long long>(corrupt), static_cast<unsigned long long>(disorder),
                static_cast<unsigned long long>(phantom), deaths.c_str(), queue_memory_report().c_str());
  report += line;
  ::testing::Test::RecordProperty("messages_put", std::to_string(put_returned));
  ::testing::Test::RecordProperty("messages_received", std::to_string(received));
  ::testing::Test::RecordProperty("messages_lost_to_consumer_kills", std::to_string(lost_to_consumer_kills));
  ::testing::Test::RecordProperty("messages_unfinished_lost", std::to_string(unfinished_lost));
  ::testing::Test::RecordProperty("messages_redelivered", std::to_string(redelivered));
  (void)killed_in_decoding_lost;
}

}  // namespace kill_storm
