// Role: shared dict updater. Incarnation i loops: update the shared counter, update its own
// entry ({n, mix(n)}: n iterations, and a word that tells a torn value), now and then set
// or erase a scratch key with a value of up to 160 KB (n copies of n), booking attempts
// before and done after; see storm.hpp for what the check makes of them.
#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::dict_updater_main(u32 i) {
  dict_rec& r = dict_recs_[i];
  control& ctl = ctl_.value();
  std::mt19937_64 rng(seed_ ^ mix(0x4000 + i));
  while (ld(ctl.dict_stop) == 0 && !past_hard_deadline()) {
    st(r.in_update, 1);
    st(r.attempts, ld(r.attempts) + 1);
    dict_.update(dict_counter_key, [](std::optional<std::vector<u64>> v) {
      std::vector<u64> c = v.value_or(std::vector<u64>{0});
      ++c.at(0);
      return c;
    });
    dict_.update(i, [](std::optional<std::vector<u64>> v) {
      const u64 n = v ? v->at(0) + 1 : 1;
      return std::vector<u64>{n, mix(n)};
    });
    if (rng() % 8 == 0) {
      const u64 key = dict_scratch_base + rng() % dict_scratch_keys;
      if (rng() % 3 == 0) {
        dict_.erase(key);
      } else {
        const u64 n = 1 + rng() % 20000;
        dict_.set(key, std::vector<u64>(n, n));
      }
    }
    st(r.done, ld(r.done) + 1);
    st(r.in_update, 0);
    if (rng() % 4 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 400));
    } else {
      cpu_relax(static_cast<unsigned>(rng() % 500));
    }
  }
}

}  // namespace kill_storm
