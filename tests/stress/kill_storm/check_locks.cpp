// Check: for both locks, the counter equals the sum of the lockers' counts once the journal
// is rolled back, every holder that died inside was reported by owner_deaths(), and no
// lock wait took longer than 20 s.
#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::check_locks() {
  for (u32 l = 0; l < lock_count; ++l) {
    guarded& g = l == 0 ? guarded0_.value() : guarded1_.value();
    const auto deaths_of = [&] { return l == 0 ? lock0_.owner_deaths() : guarded1_.owner_deaths(); };
    bool locked = l == 0 ? lock0_.try_lock_for(10s) : guarded1_.get_lock().try_lock_for(10s);
    if (!locked) {
      fail("lock " + std::to_string(l) + ": the parent could not take it within 10 s after every locker ended");
      continue;
    }
    const u64 deaths = deaths_of();
    repair(g, deaths);
    u64 sum = 0, timeouts = 0;
    for (u32 i = 0; i < next_locker_; ++i) {
      if (lockers_[i].lock != l) continue;
      sum += ld(lockers_[i].done);
      timeouts += ld(lockers_[i].lock_timeouts);
    }
    const u64 counter = ld(g.counter);
    if (l == 0) {
      lock0_.unlock();
    } else {
      guarded1_.get_lock().unlock();
    }
    const std::string name = l == 0 ? "mutex" : "recursive_mutex";
    if (counter != sum) {
      fail(name + ": the counter says " + std::to_string(counter) + " critical sections, the lockers " +
           std::to_string(sum));
    }
    if (ld(g.unreported) != 0) {
      fail(name + ": " + std::to_string(ld(g.unreported)) +
           " holders died inside the critical section without owner_deaths() growing");
    }
    if (deaths > kills_.lockers_by_lock[l]) {
      fail(name + ": owner_deaths() " + std::to_string(deaths) + " > " + std::to_string(kills_.lockers_by_lock[l]) +
           " lockers killed");
    }
    if (timeouts != 0) fail(name + ": " + std::to_string(timeouts) + " waits for the lock took more than 20 s");
    char line[320];
    std::snprintf(line, sizeof line,
                  "  %-16s %llu critical sections; %llu holders killed, owner_deaths %llu, journal repairs %llu, "
                  "unreported %llu\n",
                  (name + ":").c_str(), static_cast<unsigned long long>(counter),
                  static_cast<unsigned long long>(kills_.lockers_by_lock[l]), static_cast<unsigned long long>(deaths),
                  static_cast<unsigned long long>(ld(g.repairs)), static_cast<unsigned long long>(ld(g.unreported)));
    report += line;
    ::testing::Test::RecordProperty(name + "_owner_deaths", std::to_string(deaths));
  }
}

}  // namespace kill_storm
