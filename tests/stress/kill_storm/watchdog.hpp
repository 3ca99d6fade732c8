// The kill storm's watchdog: a hang must fail with a diagnosis (every process and where it
// waits), not stall until ctest's timeout.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "kill_storm/proc.hpp"
#include "test_support.hpp"

namespace kill_storm {

// Prints and aborts if `limit` passes before stop(): a hang must fail with a diagnosis,
// not stall until ctest's timeout.
class watchdog {
 public:
  // `describe()` says what went wrong so far; it is printed if the watchdog fires.
  watchdog(std::chrono::seconds limit, std::function<std::string()> describe)
      : describe_(std::move(describe)), thread_([this, limit] { watch(limit); }) {}
  ~watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void phase(const char* what) {
    std::lock_guard lock(mutex_);
    phase_ = what;
  }

 private:
  void watch(std::chrono::seconds limit) {
    std::unique_lock lock(mutex_);
    if (cv_.wait_for(lock, limit, [&] { return done_; })) return;
    std::fprintf(stderr, "\nKILL STORM HUNG: phase \"%s\" still running after %llds. Processes:\n", phase_,
                 static_cast<long long>(limit.count()));
    for (const auto& [pid, state] : mproc_test::children_of_self()) {
      std::fprintf(stderr, "  %s\n", describe_process(pid).c_str());
      for (pid_t g : children_of(pid)) std::fprintf(stderr, "    %s\n", describe_process(g).c_str());
    }
    std::fprintf(stderr, "Failures so far:%s\n", describe_().c_str());
    std::fflush(stderr);
    std::abort();
  }

  std::function<std::string()> describe_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  const char* phase_ = "start";
  std::thread thread_;
};

}  // namespace kill_storm
