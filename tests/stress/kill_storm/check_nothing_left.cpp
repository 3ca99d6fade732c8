// Check, after the storm: no child, no zombie, no orphan (the test is a subreaper, so
// orphaned grandchildren would come back to it), the open descriptors and /dev/shm as before.
#include <signal.h>
#include <sys/wait.h>

#include "kill_storm/storm.hpp"

namespace kill_storm {

void check_nothing_left(const std::set<std::string>& shm_before, int fds_before, std::vector<std::string>& failures,
                        std::string& report) {
  // Nothing left behind: every child ended and was reaped, no orphan came back to us.
  const bool no_children = mproc_test::eventually([] { return mproc_test::children_of_self().empty(); }, 10s);
  std::string left;
  for (const auto& [pid, state] : mproc_test::children_of_self()) {
    left += "\n    " + describe_process(pid);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  if (!no_children) failures.push_back("processes left behind:" + left);
  const bool fds_back = mproc_test::eventually([&] { return mproc_test::count_open_fds() == fds_before; }, 5s);
  const int fds_after = mproc_test::count_open_fds();
  if (!fds_back) {
    failures.push_back("open descriptors: " + std::to_string(fds_before) + " before, " + std::to_string(fds_after) +
                       " after");
  }
  const auto shm_after = mproc_test::dev_shm_entries_but_named_shm();
  if (shm_after != shm_before) {
    std::string changed;
    for (const auto& e : shm_after) changed += shm_before.count(e) != 0 ? "" : " +" + e;
    for (const auto& e : shm_before) changed += shm_after.count(e) != 0 ? "" : " -" + e;
    failures.push_back("/dev/shm entries changed:" + changed);
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "  after:  %zu children, %d zombies; open fds %d before, %d after; /dev/shm %zu before, %zu after\n",
                mproc_test::children_of_self().size(), mproc_test::count_zombie_children(), fds_before, fds_after,
                shm_before.size(), shm_after.size());
  report += line;
}

}  // namespace kill_storm
