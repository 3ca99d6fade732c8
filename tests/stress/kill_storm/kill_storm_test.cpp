// Kill storm: a pool, three queues, two locks and a shared dict under load while a chaos
// thread SIGKILLs random pool workers, queue producers, queue consumers, lock holders and
// dict updaters for a fixed time; then every task, message, increment and update is
// accounted for. The roles run together (the
// chaos picks its victims among all of them), so this is one TEST; each role and each
// check has its file in this folder, listed at the top of storm.hpp.
#include <gtest/gtest.h>
#include <sys/prctl.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "kill_storm/storm.hpp"

namespace {

using namespace kill_storm;

// Every task ends once, every message arrives once or its loss is attributed to a kill,
// every critical section is counted, and nothing is left behind.
TEST(KillStorm, PoolQueuesAndLocksSurviveRandomSigkills) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come back to us, to be counted
  {
    // Warm up what mproc makes once per process, so that the baseline counts it.
    mproc::process warm([] {});
    warm.start();
    warm.join();
    mproc::pool p(1);
    EXPECT_EQ(p.apply(task_item, u64{1}), mix(1));
  }
  ASSERT_TRUE(mproc_test::eventually([] { return mproc_test::children_of_self().empty(); }));
  const auto shm_before = mproc_test::dev_shm_entries_but_named_shm();
  const int fds_before = mproc_test::count_open_fds();

  const double seconds = storm_seconds();
  const u64 seed = storm_seed();
  std::vector<std::string> failures;
  std::string report;
  {
    auto s = std::make_unique<storm>(seconds, seed);
    s->run();
    failures = s->failures;
    report = s->report;
  }

  check_nothing_left(shm_before, fds_before, failures, report);

  std::printf("%s", report.c_str());
  std::fflush(stdout);
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_TRUE(failures.empty()) << failures.size() << " invariants failed (reproduce with MPROC_STRESS_SEED=" << seed
                                << ")";
}

}  // namespace
