// Role: lock holder. Takes lock 0 (a mutex) or lock 1 (a shared value's recursive lock, twice)
// and increments the counter under a journal; whoever next takes the lock after a holder
// died inside rolls the journal back (repair), checking that owner_deaths() grew.
#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::locker_main(u32 i) {
  locker_rec& r = lockers_[i];
  const u32 which = r.lock;
  control& ctl = ctl_.value();
  std::mt19937_64 rng(seed_ ^ mix(0x3000 + i));
  while (ld(ctl.lockers_stop) == 0 && !past_hard_deadline()) {
    if (which == 0) {
      if (!lock0_.try_lock_for(20s)) {
        inc(r.lock_timeouts);
        continue;
      }
      critical_section(guarded0_.value(), lock0_.owner_deaths(), i, rng);
      lock0_.unlock();
    } else {
      mproc::recursive_mutex& lock = guarded1_.get_lock();
      if (!lock.try_lock_for(20s)) {
        inc(r.lock_timeouts);
        continue;
      }
      lock.lock();  // a second level: a holder killed here holds it twice
      critical_section(guarded1_.value(), guarded1_.owner_deaths(), i, rng);
      lock.unlock();
      lock.unlock();
    }
    if (rng() % 4 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 400));
    } else {
      cpu_relax(static_cast<unsigned>(rng() % 500));
    }
  }
}

// The holder died inside its critical section if the journal is valid: roll it back.
void storm::repair(guarded& g, u64 deaths) {
  if (ld(g.j_valid) != 0) {
    if (deaths == ld(g.deaths_seen)) inc(g.unreported);
    const u64 who = ld(g.j_locker);
    st(g.counter, ld(g.j_counter));
    if (who < max_incarnations) st(lockers_[who].done, ld(g.j_done));
    inc(g.repairs);
    st(g.j_valid, 0);
  }
  st(g.deaths_seen, deaths);
}

void storm::critical_section(guarded& g, u64 deaths, u32 i, std::mt19937_64& rng) {
  locker_rec& r = lockers_[i];
  st(r.in_cs, 1);
  repair(g, deaths);
  const u64 c = ld(g.counter);
  const u64 d = ld(r.done);
  st(g.j_counter, c);
  st(g.j_locker, i);
  st(g.j_done, d);
  st(g.j_valid, 1);
  cpu_relax(static_cast<unsigned>(rng() % 3000));  // the work the lock protects
  st(g.counter, c + 1);
  cpu_relax(static_cast<unsigned>(rng() % 200));
  st(r.done, d + 1);
  st(g.j_valid, 0);
  st(r.in_cs, 0);
}

}  // namespace kill_storm
