// Check: the shared dict after the storm. Every updater has stopped; the parent reads the
// dict (a dict left locked for good would hang here, and the watchdog would say so). The
// counter lies within [sum of done, sum of attempts]; each incarnation's entry {n, mix(n)}
// is whole with n within [done, attempts]; every scratch value is n copies of n; items()
// holds size() entries, each of a known key; owner_deaths() <= updaters killed.
#include "kill_storm/storm.hpp"

namespace kill_storm {

void storm::check_dict() {
  u64 done = 0, attempts = 0;
  for (u32 i = 0; i < next_dict_updater_; ++i) {
    done += ld(dict_recs_[i].done);
    attempts += ld(dict_recs_[i].attempts);
  }
  const auto bad = [&](const std::string& what) { fail("shared_dict: " + what); };
  u64 counter = 0;
  if (const auto c = dict_.get(dict_counter_key)) {
    if (c->size() != 1) bad("the counter's value has " + std::to_string(c->size()) + " words, not 1");
    counter = c->empty() ? 0 : c->front();
  }
  if (counter < done || counter > attempts) {
    bad("the counter is " + std::to_string(counter) + ", outside [" + std::to_string(done) + ", " +
        std::to_string(attempts) + "] (updates returned, updates begun)");
  }
  for (u32 i = 0; i < next_dict_updater_; ++i) {
    const u64 d = ld(dict_recs_[i].done), a = ld(dict_recs_[i].attempts);
    const auto v = dict_.get(i);
    const u64 n = v && v->size() == 2 ? v->at(0) : 0;
    if (v && (v->size() != 2 || v->at(1) != mix(n))) {
      bad("updater " + std::to_string(i) + "'s entry is torn");
    } else if (n < d || n > a) {
      bad("updater " + std::to_string(i) + "'s entry counts " + std::to_string(n) + " updates, outside [" +
          std::to_string(d) + ", " + std::to_string(a) + "]");
    }
  }
  const auto items = dict_.items();
  if (items.size() != dict_.size()) {
    bad("items() holds " + std::to_string(items.size()) + " entries, size() says " + std::to_string(dict_.size()));
  }
  u64 scratch = 0;
  for (const auto& [key, value] : items) {
    if (key >= dict_scratch_base && key < dict_scratch_base + dict_scratch_keys) {
      ++scratch;
      const bool whole =
          !value.empty() && std::all_of(value.begin(), value.end(), [n = value.size()](u64 x) { return x == n; });
      if (!whole) bad("scratch key " + std::to_string(key - dict_scratch_base) + "'s value is not whole");
    } else if (key != dict_counter_key && key >= next_dict_updater_) {
      bad("an unknown key " + std::to_string(key) + " is in the dict");
    }
  }
  const u64 deaths = dict_.owner_deaths();
  if (deaths > kills_.dict_updaters) {
    bad("owner_deaths() " + std::to_string(deaths) + " > " + std::to_string(kills_.dict_updaters) + " updaters killed");
  }
  char line[320];
  std::snprintf(line, sizeof line,
                "  shared_dict:     %llu updates returned, counter %llu; %llu updaters killed (%llu inside an "
                "update), owner_deaths %llu; %zu entries (%llu scratch)\n",
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(counter),
                static_cast<unsigned long long>(kills_.dict_updaters),
                static_cast<unsigned long long>(kills_.dict_in_update), static_cast<unsigned long long>(deaths),
                items.size(), static_cast<unsigned long long>(scratch));
  report += line;
  ::testing::Test::RecordProperty("shared_dict_owner_deaths", std::to_string(deaths));
}

}  // namespace kill_storm
