// Failures of a whole MPI job, from outside it: this test starts mpirun, breaks the job (a
// rank SIGKILLed, ranks built differently) and checks that it ends, within seconds, with a
// message naming the rank, and that none of its processes (ranks, zygotes, workers) is
// left.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every process's parent, from /proc.
std::map<pid_t, pid_t> parents() {
  std::map<pid_t, pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_file(entry.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    out[static_cast<pid_t>(std::stoi(name))] = ppid;
  }
  return out;
}

std::set<pid_t> descendants(pid_t root) {
  const auto up = parents();
  std::set<pid_t> found{root};
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, ppid] : up)
      if (found.contains(ppid) && found.insert(pid).second) grew = true;
  }
  found.erase(root);
  return found;
}

// Alive and not a zombie.
bool alive(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

class mpirun_job {
 public:
  explicit mpirun_job(std::vector<std::string> args) {
    output_ = std::filesystem::temp_directory_path() /
              ("mproc-mpi-failure-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++) + ".log");
    pid_ = ::fork();
    if (pid_ == 0) {
      std::FILE* out = std::freopen(output_.c_str(), "w", stdout);
      if (out == nullptr || ::dup2(::fileno(stdout), 2) < 0) ::_exit(126);
      // Root in a container: Open MPI refuses unless told, and only this test tells it.
      ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
      ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
      // Open MPI's plugins keep memory past MPI_Finalize: see tests/mpi/CMakeLists.txt.
      ::setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
      std::vector<char*> argv;
      std::string mpirun = MPROC_TEST_MPIEXEC;
      argv.push_back(mpirun.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~mpirun_job() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove(output_);
  }
  pid_t pid() const { return pid_; }
  std::string output() const { return read_file(output_); }

  // Waits until the output matches `pattern`; false after `limit`.
  bool await_output(const std::regex& pattern, std::chrono::seconds limit) const {
    for (const auto end = clock_type::now() + limit; clock_type::now() < end;) {
      if (std::regex_search(output(), pattern)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  // mpirun's wait status, once it has exited; nullopt after `limit`.
  std::optional<int> await_exit(std::chrono::seconds limit) {
    for (const auto end = clock_type::now() + limit; clock_type::now() < end;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        status_ = status;
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return std::nullopt;
  }
  // The pid rank `rank` printed.
  pid_t rank_pid(int rank) const {
    std::smatch m;
    const std::string out = output();
    const std::regex line("rank " + std::to_string(rank) + " pid ([0-9]+)");
    return std::regex_search(out, m, line) ? static_cast<pid_t>(std::stoi(m[1])) : 0;
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path output_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

bool none_alive(const std::set<pid_t>& pids, std::chrono::seconds limit) {
  for (const auto end = clock_type::now() + limit; clock_type::now() < end;) {
    bool any = false;
    for (pid_t p : pids) any = any || alive(p);
    if (!any) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void kill_rank_and_expect_the_job_to_end(int victim) {
  mpirun_job job({"--oversubscribe", "-np", "2", MPROC_TEST_FAILURE_APP, "serve"});
  ASSERT_TRUE(job.await_output(std::regex("ready"), std::chrono::seconds(60))) << job.output();
  // Each rank's pool has 2 workers busy with an hour-long task, plus a zygote.
  std::set<pid_t> processes;
  for (const auto end = clock_type::now() + std::chrono::seconds(20);
       clock_type::now() < end && processes.size() < 8;) {
    processes = descendants(job.pid());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(processes.size(), 8U) << "2 ranks, 2 zygotes, 4 workers";
  const pid_t rank = job.rank_pid(victim);
  ASSERT_GT(rank, 0) << job.output();
  ASSERT_TRUE(processes.contains(rank));

  const auto killed = clock_type::now();
  ASSERT_EQ(::kill(rank, SIGKILL), 0);
  const auto status = job.await_exit(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value()) << "mpirun still runs 30 s after rank " << victim << " was killed";
  EXPECT_LT(clock_type::now() - killed, std::chrono::seconds(15));
  EXPECT_FALSE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  EXPECT_TRUE(std::regex_search(job.output(), std::regex("rank " + std::to_string(victim) + "[^\n]*signal 9")))
      << job.output();
  EXPECT_TRUE(none_alive(processes, std::chrono::seconds(10))) << "a process of the job outlived it";
}

TEST(MpiFailure, AWorkerRankKilledEndsTheJobAndLeavesNoProcess) { kill_rank_and_expect_the_job_to_end(1); }

TEST(MpiFailure, TheRootKilledEndsTheJobAndLeavesNoProcess) { kill_rank_and_expect_the_job_to_end(0); }

TEST(MpiFailure, RanksOfDifferentBuildsRefuseToStartOnEveryRank) {
  mpirun_job job({"--oversubscribe", "-np", "1", MPROC_TEST_FAILURE_APP, "check", ":", "-np", "1",
                  MPROC_TEST_FAILURE_APP_OTHER, "check"});
  const auto status = job.await_exit(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << "the job hangs:\n" << job.output();
  EXPECT_FALSE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  const std::string out = job.output();
  for (int rank : {0, 1})
    EXPECT_TRUE(std::regex_search(
        out, std::regex("rank " + std::to_string(rank) + ": mproc::mpi::pool: the ranks do not run the same build")))
        << out;
  EXPECT_NE(out.find("rank 1 on "), std::string::npos) << out;
  EXPECT_EQ(out.find("result"), std::string::npos) << "a task ran:\n" << out;
}

TEST(MpiFailure, RanksOfTheSameBuildStart) {
  mpirun_job job({"--oversubscribe", "-np", "2", MPROC_TEST_FAILURE_APP, "check"});
  const auto status = job.await_exit(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << job.output();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << job.output();
  EXPECT_NE(job.output().find("result 0"), std::string::npos) << job.output();
}

}  // namespace
