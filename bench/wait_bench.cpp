// The `wait-pipes` row: a round trip through one of 64 pipes that a consumer watches with
// one wait, mproc::wait_ready against raw ppoll(2) over the same kind of descriptors.
//
// A child process sends message i on pipe i % 64 and waits for an acknowledgement on one
// return pipe; the parent waits on all 64, receives what is ready and acknowledges it. So
// each round trip is one wait over 64 objects, one message each way, and two wake-ups.
// The raw contender does the same over 64 socketpairs with 8-byte read(2)/write(2).
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,per_op_us
// per_op_us is the mean round trip over --iterations. Within a round the contenders take
// turns in slices (bench::take_turns), and rounds alternate which one starts.
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"
#include "mproc/pipe.hpp"
#include "mproc/process.hpp"
#include "mproc/wait.hpp"

namespace {

using bench::clock_type;

constexpr std::size_t pipes = 64;

constexpr bench::program program{"wait_bench",
                                 "usage: mproc_wait_bench [--rounds R] [--iterations N] [--chunk C]\n"
                                 "                        [--start-round K] [--only raw_ppoll|mproc]\n"
                                 "  R rounds (default 7); per round each contender makes N round trips (default\n"
                                 "  20000), in slices of C (default 5000) that alternate between the contenders.\n"
                                 "  Rounds are numbered from K (default 0).\n"
                                 "Prints CSV: round,contender,per_op_us\n"};

struct options {
  int rounds = 7;
  int iterations = 20000;
  int start_round = 0;
  int chunk = 5000;
  std::string_view only;
};

options parse(int argc, char** argv) {
  options o;
  program.parse(argc, argv,
                {{"--rounds", &o.rounds, 1},
                 {"--iterations", &o.iterations, 1},
                 {"--start-round", &o.start_round, 0},
                 {"--chunk", &o.chunk, 1},
                 {"--only", &o.only}});
  return o;
}

// The subject, written as a user would.
class mproc_rig {
 public:
  mproc_rig() {
    std::vector<mproc::connection> writers;
    for (std::size_t i = 0; i < pipes; ++i) {
      auto [r, w] = mproc::pipe(false);
      readers_.push_back(std::move(r));
      writers.push_back(std::move(w));
    }
    auto [ack_reader, ack_writer] = mproc::pipe(false);
    ack_ = std::move(ack_writer);
    child_ = mproc::process(
        [](std::vector<mproc::connection> ws, mproc::connection acks) {
          for (std::uint64_t i = 0;; ++i) {
            ws[i % pipes].send(i);
            if (acks.recv<std::uint64_t>() == UINT64_MAX) return;
          }
        },
        std::move(writers), std::move(ack_reader));
    child_.start();
    objects_.assign(readers_.begin(), readers_.end());
  }
  ~mproc_rig() {
    try {
      ack_.send(UINT64_MAX);
      child_.join();
    } catch (...) {
    }
  }
  mproc_rig(const mproc_rig&) = delete;
  mproc_rig& operator=(const mproc_rig&) = delete;

  void round_trips(int n) {
    for (int done = 0; done < n;) {
      for (const std::size_t i : mproc::wait_ready(objects_)) {
        const auto got = readers_[i].recv<std::uint64_t>();
        if (got % pipes != i) program.die("mproc: a message came on the wrong pipe");
        ack_.send(got);
        ++done;
      }
    }
  }

 private:
  std::vector<mproc::connection> readers_;
  mproc::connection ack_;
  mproc::process child_;
  std::vector<mproc::waitable> objects_;
};

// The peer: the least a program can do, ppoll(2) and 8-byte reads and writes.
class raw_rig {
 public:
  raw_rig() {
    std::array<int, pipes> child_ends{};
    for (std::size_t i = 0; i < pipes; ++i) {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) program.die_errno("socketpair");
      fds_[i] = pollfd{sv[0], POLLIN, 0};
      child_ends[i] = sv[1];
    }
    int ack[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ack) != 0) program.die_errno("socketpair");
    ack_ = ack[0];
    pid_ = ::fork();
    if (pid_ < 0) program.die_errno("fork");
    if (pid_ == 0) {
      for (std::uint64_t i = 0;; ++i) {
        if (::write(child_ends[i % pipes], &i, sizeof i) != sizeof i) ::_exit(1);
        std::uint64_t a = 0;
        if (::read(ack[1], &a, sizeof a) != sizeof a || a == UINT64_MAX) ::_exit(0);
      }
    }
    for (const int fd : child_ends) ::close(fd);
    ::close(ack[1]);
  }
  ~raw_rig() {
    const std::uint64_t stop = UINT64_MAX;
    if (::write(ack_, &stop, sizeof stop) < 0) program.die_errno("write");
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    for (const pollfd& p : fds_) ::close(p.fd);
    ::close(ack_);
  }
  raw_rig(const raw_rig&) = delete;
  raw_rig& operator=(const raw_rig&) = delete;

  void round_trips(int n) {
    for (int done = 0; done < n;) {
      if (::ppoll(fds_.data(), fds_.size(), nullptr, nullptr) < 0) {
        if (errno == EINTR) continue;
        program.die_errno("ppoll");
      }
      for (std::size_t i = 0; i < pipes; ++i) {
        if (fds_[i].revents == 0) continue;
        std::uint64_t got = 0;
        if (::read(fds_[i].fd, &got, sizeof got) != sizeof got) program.die_errno("read");
        if (got % pipes != i) program.die("raw: a message came on the wrong pipe");
        if (::write(ack_, &got, sizeof got) != sizeof got) program.die_errno("write");
        ++done;
      }
    }
  }

 private:
  std::array<pollfd, pipes> fds_{};
  int ack_ = -1;
  pid_t pid_ = -1;
};

struct contender {
  const char* name;
};
constexpr contender contenders[] = {{"raw_ppoll"}, {"mproc"}};

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  if (!bench::any_selected(contenders, o.only)) program.misuse("no contender named '" + std::string(o.only) + "'");
  try {
    raw_rig raw;
    mproc_rig subject;
    raw.round_trips(1000);  // warm-up
    subject.round_trips(1000);
    bench::print_header("per_op_us");
    for (int r = o.start_round; r < o.start_round + o.rounds; ++r) {
      std::array<clock_type::duration, std::size(contenders)> spent{};
      for (int done = 0, slice = 0; done < o.iterations; done += o.chunk, ++slice) {
        const int n = std::min(o.chunk, o.iterations - done);
        bench::take_turns(contenders, o.only, r, slice, [&](std::size_t i) {
          const auto t0 = clock_type::now();
          if (i == 0) {
            raw.round_trips(n);
          } else {
            subject.round_trips(n);
          }
          spent[i] += clock_type::now() - t0;
        });
      }
      bench::print_round(contenders, o.only, r, "%.3f", [&](std::size_t i) {
        return std::chrono::duration<double, std::micro>(spent[i]).count() / o.iterations;
      });
    }
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
