// MPI as the ranks use it: non-blocking sends whose bytes live until MPI has them (a
// blocking send of a large message could wait on a peer that is itself sending), polled
// receives, and the pause of a loop with nothing to do. Called by one thread at a time.
#pragma once

#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <vector>

namespace mproc::detail {

// Throws mproc::error naming `call` unless rc is MPI_SUCCESS.
void check_mpi(int rc, const char* call);

class mpi_link {
 public:
  struct message {
    int source = 0;
    int tag = 0;
    std::vector<std::byte> bytes;
  };

  // Starts sending; the bytes are kept until the send completes.
  void send(int rank, int tag, std::vector<std::byte> bytes);
  // Retires the sends that completed; true if any did.
  bool progress_sends();
  bool sending() const noexcept { return !sends_.empty(); }
  // A message from `source` (MPI_ANY_SOURCE for any), if one has arrived.
  std::optional<message> try_receive(int source);
  // Waits until every send completed.
  void flush();

 private:
  struct pending_send {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<std::byte> bytes;
  };
  std::list<pending_send> sends_;  // stable addresses: MPI writes the requests
};

// How a polling loop waits when it found nothing to do: spinning (yielding the CPU) for a
// few rounds, as a reply is often microseconds away, then sleeping longer and longer, up
// to 2 ms, unless woken. Time spent idle never costs a busy core for long.
class idle_pause {
 public:
  void worked() noexcept { idle_rounds_ = 0; }
  // Pauses; returns early once `woken` is true (checked under `mutex`).
  template <class Woken>
  void pause(std::mutex& mutex, std::condition_variable& wake, Woken woken) {
    ++idle_rounds_;
    if (idle_rounds_ < spin_rounds) {
      yield();
      return;
    }
    const unsigned shift = idle_rounds_ - spin_rounds < 7 ? idle_rounds_ - spin_rounds : 7;
    const auto nap = std::chrono::microseconds(16L << shift);  // 16 µs .. 2 ms
    std::unique_lock lock(mutex);
    wake.wait_for(lock, nap, woken);
  }

 private:
  static constexpr unsigned spin_rounds = 200;
  static void yield() noexcept;
  unsigned idle_rounds_ = 0;
};

}  // namespace mproc::detail
