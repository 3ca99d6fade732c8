// mproc::process(mproc::forkserver, ...) with real processes: the children come from a
// server that is this test binary re-executed.
#include "mproc/forkserver.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mproc/os.hpp"
#include "mproc/queue.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc_test::children_of;
using mproc_test::running;

// The forkserver of this process: its one child that is not a forkserver child.
pid_t forkserver_pid(const std::vector<pid_t>& not_it = {}) {
  for (pid_t c : children_of(::getpid())) {
    if (std::find(not_it.begin(), not_it.end(), c) == not_it.end()) return c;
  }
  return 0;
}

struct point {
  int x = 0;
  int y = 0;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(x, y);
  }
};

int add_one(int x) {
  if (x != 41) throw std::runtime_error("wrong argument");
  return x + 1;
}
MPROC_REMOTE(add_one);

void exit_with(int code) { ::_exit(code); }
MPROC_REMOTE(exit_with);

void not_registered(int code) { ::_exit(code); }

TEST(Forkserver, ArgumentsOfSeveralTypesArrive) {
  mproc::queue<std::string> out;
  mproc::process p(
      mproc::forkserver,
      [](int a, const std::string& s, std::vector<int> v, point pt, mproc::queue<std::string> q) {
        q.put(std::to_string(a) + s + std::to_string(v.size()) + std::to_string(pt.x + pt.y));
      },
      42, std::string("hello"), std::vector<int>{1, 2, 3}, point{3, 4}, out);
  p.start();
  ASSERT_TRUE(p.pid().has_value());
  EXPECT_NE(*p.pid(), ::getpid());
  EXPECT_EQ(out.get(10s), "42hello37");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST(Forkserver, LargeArgumentsArrive) {
  std::vector<int> big(3'000'000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<int>(i);
  mproc::process p(
      mproc::forkserver,
      [](const std::vector<int>& v) {
        for (std::size_t i = 0; i < v.size(); ++i) {
          if (v[i] != static_cast<int>(i)) ::_exit(2);
        }
        if (v.size() != 3'000'000) ::_exit(3);
      },
      big);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Forkserver, ExitCodes) {
  mproc::process zero(mproc::forkserver, [] {});
  mproc::process seven(mproc::forkserver, [] { std::exit(7); });
  mproc::process three(mproc::forkserver, exit_with, 3);
  mproc::process thrown(mproc::forkserver, [] { throw std::runtime_error("boom"); });
  mproc::process killed(mproc::forkserver, [] { ::raise(SIGKILL); });
  for (auto* p : {&zero, &seven, &three, &thrown, &killed}) p->start();
  for (auto* p : {&zero, &seven, &three, &thrown, &killed}) ASSERT_TRUE(p->join(30s));
  EXPECT_EQ(zero.exitcode(), 0);
  EXPECT_EQ(seven.exitcode(), 7);
  EXPECT_EQ(three.exitcode(), 3);
  EXPECT_EQ(thrown.exitcode(), 1);
  EXPECT_EQ(killed.exitcode(), -SIGKILL);
}

TEST(Forkserver, FunctionPointerRegisteredWithMprocRemote) {
  mproc::queue<int> out;
  mproc::process p(
      mproc::forkserver, [](int (*f)(int), mproc::queue<int> q) { q.put(f(41)); }, &add_one, out);
  p.start();
  EXPECT_EQ(out.get(10s), 42);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Forkserver, UnregisteredFunctionPointerThrowsNamingMprocRemote) {
  try {
    mproc::process p(mproc::forkserver, not_registered, 1);
    FAIL() << "constructed";
  } catch (const mproc::error& e) {
    EXPECT_NE(std::string(e.what()).find("MPROC_REMOTE"), std::string::npos) << e.what();
  }
}

TEST(Forkserver, NameAndParentInTheChild) {
  mproc::queue<std::string> out;
  mproc::process p(
      mproc::forkserver,
      [](mproc::queue<std::string> q) {
        const auto parent = mproc::parent_process();
        q.put(mproc::current_process().name + " " + std::to_string(mproc::current_process().pid) + " " +
              (parent ? std::to_string(parent->pid) : "none"));
      },
      out);
  p.set_name("worker-x");
  p.start();
  EXPECT_EQ(out.get(10s), "worker-x " + std::to_string(*p.pid()) + " " + std::to_string(::getpid()));
  p.join();
}

TEST(Forkserver, TerminateKillAndJoinTimeout) {
  mproc::process t(mproc::forkserver, [] {
    for (;;) ::pause();
  });
  mproc::process k(mproc::forkserver, [] {
    ::signal(SIGTERM, SIG_IGN);
    for (;;) ::pause();
  });
  t.start();
  k.start();
  EXPECT_FALSE(t.join(50ms));
  EXPECT_TRUE(t.is_alive());
  EXPECT_EQ(t.exitcode(), std::nullopt);
  t.terminate();
  ASSERT_TRUE(t.join(30s));
  EXPECT_EQ(t.exitcode(), -SIGTERM);
  k.kill();
  k.join();
  EXPECT_EQ(k.exitcode(), -SIGKILL);
  t.kill();  // no effect once ended
  EXPECT_EQ(t.exitcode(), -SIGTERM);
}

TEST(Forkserver, SentinelTurnsReadableWhenTheChildEnds) {
  mproc::queue<int> go;
  mproc::process p(
      mproc::forkserver, [](mproc::queue<int> q) { static_cast<void>(q.get()); }, go);
  p.start();
  pollfd fd{p.sentinel(), POLLIN, 0};
  EXPECT_EQ(::poll(&fd, 1, 0), 0);  // the child waits for `go`
  go.put(1);
  EXPECT_EQ(::poll(&fd, 1, 30'000), 1);
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Forkserver, ActiveChildrenCountsTheChildNotTheServer) {
  mproc::queue<int> go;
  mproc::process p(
      mproc::forkserver, [](mproc::queue<int> q) { static_cast<void>(q.get()); }, go);
  p.start();
  EXPECT_EQ(mproc::active_children(), std::vector<pid_t>{*p.pid()});
  const pid_t server = forkserver_pid();
  ASSERT_NE(server, 0);
  EXPECT_EQ(children_of(server), std::vector<pid_t>{*p.pid()});
  go.put(1);
  p.join();
  EXPECT_TRUE(mproc::active_children().empty());
  EXPECT_TRUE(children_of(server).empty());  // reaped by the server before it reported
  EXPECT_TRUE(running(server));
}

// The test. A thread of this process holds a lock forever. A child forked from
// this process inherits the lock held by a thread it does not have, and hangs on it; a
// forkserver child comes from a process that never ran that thread, and takes it at once.
std::mutex held_forever;

TEST(Forkserver, ALockHeldByAThreadHangsAForkButNotAForkserverChild) {
  std::mutex m;
  std::condition_variable cv;
  bool locked = false;
  bool release = false;
  std::thread holder([&] {
    std::lock_guard hold(held_forever);
    std::unique_lock lock(m);
    locked = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return locked; });
  }
  const auto take_the_lock = [] { std::lock_guard lock(held_forever); };
  mproc::process forked(take_the_lock);
  forked.start();
  mproc::process served(mproc::forkserver, take_the_lock);
  served.start();
  EXPECT_TRUE(served.join(30s));
  EXPECT_EQ(served.exitcode(), 0);
  EXPECT_FALSE(forked.join(300ms));  // it can never get the lock: no thread there will release it
  forked.kill();
  forked.join();
  EXPECT_EQ(forked.exitcode(), -SIGKILL);
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  holder.join();
}

TEST(Forkserver, ManyInARowLeaveNoZombie) {
  for (int i = 0; i < 40; ++i) {
    mproc::process p(mproc::forkserver, exit_with, i % 5);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), i % 5);
  }
  const pid_t server = forkserver_pid();
  ASSERT_NE(server, 0);
  EXPECT_TRUE(children_of(server).empty());
  EXPECT_TRUE(mproc::active_children().empty());
}

TEST(Forkserver, ConcurrentStartsFromSeveralThreads) {
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong] {
      for (int i = 0; i < 10; ++i) {
        const int code = (t * 10 + i) % 100;
        mproc::process p(mproc::forkserver, exit_with, code);
        p.start();
        p.join();
        if (p.exitcode() != code) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

// A process P (forked here) starts a forkserver child, a daemon that waits forever, and
// tells us both pids; we SIGKILL P. This process is made a subreaper first, so the server
// and the daemon, orphaned, become its children: each must end within the bound, and is
// reaped here.
TEST(Forkserver, TheServerAndDaemonChildrenDieWithTheParent) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t parent = ::fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    ::close(fds[0]);
    mproc::process p(mproc::forkserver, [] {
      for (;;) ::pause();
    });
    p.set_daemon(true);
    p.start();
    const pid_t pids[2] = {forkserver_pid({*p.pid()}), *p.pid()};
    (void)::write(fds[1], pids, sizeof pids);
    for (;;) ::pause();
  }
  ::close(fds[1]);
  pid_t pids[2] = {0, 0};
  ASSERT_EQ(::read(fds[0], pids, sizeof pids), static_cast<ssize_t>(sizeof pids));
  ::close(fds[0]);
  ASSERT_GT(pids[0], 0);
  ASSERT_TRUE(running(pids[0]));
  ASSERT_TRUE(running(pids[1]));
  ::kill(parent, SIGKILL);
  ASSERT_EQ(::waitpid(parent, nullptr, 0), parent);
  const auto until = std::chrono::steady_clock::now() + 10s;
  for (const pid_t orphan : pids) {
    bool gone = false;
    while (!gone && std::chrono::steady_clock::now() < until) {
      const pid_t r = ::waitpid(orphan, nullptr, WNOHANG);
      gone = r == orphan || (r < 0 && !running(orphan));
      if (!gone) std::this_thread::sleep_for(5ms);
    }
    EXPECT_TRUE(gone) << "pid " << orphan << " outlived its parent";
    if (!gone) ::kill(orphan, SIGKILL);
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

// At normal exit the exit rule joins the children, then the server ends and is reaped.
TEST(Forkserver, TheServerEndsAtNormalExit) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t parent = ::fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    ::close(fds[0]);
    mproc::process p(mproc::forkserver, [] { std::this_thread::sleep_for(100ms); });
    p.start();
    const pid_t pids[2] = {forkserver_pid({*p.pid()}), *p.pid()};
    (void)::write(fds[1], pids, sizeof pids);
    std::exit(0);  // the exit rule joins p, then the server is stopped
  }
  ::close(fds[1]);
  pid_t pids[2] = {0, 0};
  ASSERT_EQ(::read(fds[0], pids, sizeof pids), static_cast<ssize_t>(sizeof pids));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(parent, &status, 0), parent);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(running(pids[0]));  // reaped by `parent` before it ended: gone, not a zombie
  EXPECT_FALSE(running(pids[1]));
}

}  // namespace
