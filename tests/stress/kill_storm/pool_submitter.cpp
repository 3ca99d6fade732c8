// Role: the main thread, a pool client. Submits tasks of every kind (compute, echo, throw,
// map past its window, hang past task_timeout) with a window of 32 in flight, and settles
// each one's outcome from its callback.
#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::settle(u64 id, task_outcome outcome, const std::string& detail) {
  u8 none = outcome_none;
  if (!outcome_[id].compare_exchange_strong(none, outcome)) {
    ++settled_twice_;
  } else {
    ++settled_;
    (outcome == outcome_ok ? ok_ : outcome == outcome_lost ? lost_ : outcome == outcome_timeout ? timeouts_ : wrong_)++;
    ++by_kind_[kind_[id]][outcome];
  }
  if (outcome == outcome_wrong) {
    std::lock_guard lock(detail_mutex_);
    if (task_details_.size() < 20) {
      task_details_.push_back("task " + std::to_string(id) + " (" + task_kind_names[kind_[id]] + "): " + detail);
    }
  }
  window_.release();
}

task_outcome storm::classify(std::exception_ptr e, u64 id, std::string& detail) {
  const u8 kind = kind_[id];
  try {
    std::rethrow_exception(e);
  } catch (const mproc::worker_lost& w) {
    if (w.exitcode() != -SIGKILL) {
      ++lost_bad_code_;
      detail = std::string("worker_lost with exit code ") + std::to_string(w.exitcode()) + ": " + w.what();
      return outcome_wrong;
    }
    return outcome_lost;
  } catch (const mproc::timeout_error&) {
    return outcome_timeout;
  } catch (const mproc::error& x) {
    detail = std::string("unexpected mproc error: ") + x.what();
    return outcome_wrong;
  } catch (const std::runtime_error& x) {
    if (kind == kind_throw && x.what() == "storm task " + std::to_string(id)) return outcome_ok;
    detail = std::string("unexpected runtime_error: ") + x.what();
    return outcome_wrong;
  } catch (const std::exception& x) {
    detail = std::string("unexpected exception: ") + x.what();
    return outcome_wrong;
  } catch (...) {
    detail = "unknown exception";
    return outcome_wrong;
  }
}

void storm::submit_tasks(mproc::pool& pool) {
  std::mt19937_64 rng(seed_ ^ 0x4000);
  auto last_hang = clock_type::now();
  u64 hang_id = ~u64{0};
  while (clock_type::now() < storm_end_ && submitted_ < max_tasks) {
    if (!window_.try_acquire_for(60s)) {
      fail("pool: no task of the 32 in flight ended within 60 s (tasks hung or vanished)");
      return;
    }
    const u64 id = submitted_++;
    const auto on_error = [this, id](std::exception_ptr e) {
      std::string detail;
      const task_outcome o = classify(e, id, detail);
      settle(id, o, detail);
    };
    u8 kind;
    const bool hang_idle = hang_id == ~u64{0} || outcome_[hang_id].load() != outcome_none;
    if (hang_idle && clock_type::now() - last_hang > 1s) {
      kind = kind_hang;
      hang_id = id;
      last_hang = clock_type::now();
    } else {
      const u64 pick = rng() % 100;
      kind = pick < 70 ? kind_compute : pick < 80 ? kind_echo : pick < 88 ? kind_throw : kind_map;
    }
    kind_[id] = kind;
    try {
      switch (kind) {
        case kind_compute: {
          const u32 rounds = static_cast<u32>(rng() % 50000);
          const u64 expect = compute_value(id, rounds);
          pool.apply_async(task_compute, id, rounds)
              .then(
                  [this, id, expect](const u64& v) {
                    settle(id, v == expect ? outcome_ok : outcome_wrong, "wrong value " + std::to_string(v));
                  },
                  on_error);
          break;
        }
        case kind_echo: {
          std::vector<u8> data;
          fill_payload(id, data, 1 + rng() % (160 << 10));
          for (u8& b : data) b ^= 0x5a;
          const u64 expect = checksum(id, data.data(), data.size());
          for (u8& b : data) b ^= 0x5a;
          pool.apply_async(task_echo, id, std::move(data))
              .then(
                  [this, id, expect](const std::vector<u8>& v) {
                    const bool right = checksum(id, v.data(), v.size()) == expect;
                    settle(id, right ? outcome_ok : outcome_wrong, "wrong bytes echoed");
                  },
                  on_error);
          break;
        }
        case kind_throw:
          pool.apply_async(task_throw, id)
              .then([this, id](const u64&) { settle(id, outcome_wrong, "returned instead of throwing"); }, on_error);
          break;
        case kind_map: {
          // Up to 48 chunks: past the map's window (4 per worker), so that chunks are fed
          // from the result thread while workers die.
          std::vector<u64> items(1 + rng() % 48);
          for (std::size_t k = 0; k < items.size(); ++k) items[k] = id * 64 + k;
          pool.map_async(task_item, items, 1 + rng() % 2)
              .then(
                  [this, id, items](const std::vector<u64>& v) {
                    bool right = v.size() == items.size();
                    for (std::size_t k = 0; right && k < v.size(); ++k) right = v[k] == mix(items[k]);
                    settle(id, right ? outcome_ok : outcome_wrong, "wrong map result");
                  },
                  on_error);
          break;
        }
        case kind_hang:
          pool.apply_async(task_hang, id)
              .then([this, id](const u64&) { settle(id, outcome_wrong, "completed past task_timeout"); }, on_error);
          break;
      }
    } catch (const std::exception& e) {
      fail(std::string("pool: submitting a task threw ") + e.what());
      settle(id, outcome_wrong, "submission threw");
      return;
    }
  }
}

}  // namespace kill_storm
