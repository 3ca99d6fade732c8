#include "mpi/mpi_link.hpp"

#include <sched.h>

#include <climits>
#include <string>
#include <utility>

#include "mproc/error.hpp"

namespace mproc::detail {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw error(std::string("mproc::mpi: ") + call + " failed: " + std::string(text, static_cast<std::size_t>(length)));
}

void mpi_link::send(int rank, int tag, std::vector<std::byte> bytes) {
  if (bytes.size() > static_cast<std::size_t>(INT_MAX))
    throw error("mproc::mpi::pool: a task or result of " + std::to_string(bytes.size()) +
                " bytes is over MPI's 2 GiB message limit; split it");
  pending_send& s = sends_.emplace_back();
  s.bytes = std::move(bytes);
  // The request is completed by progress_sends or flush, which the checker cannot follow
  // into sends_.
  // NOLINTNEXTLINE(clang-analyzer-optin.mpi.MPI-Checker)
  const int rc =
      MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, rank, tag, MPI_COMM_WORLD, &s.request);
  if (rc != MPI_SUCCESS) {
    sends_.pop_back();
    check_mpi(rc, "MPI_Isend");
  }
}

bool mpi_link::progress_sends() {
  bool any = false;
  for (auto it = sends_.begin(); it != sends_.end();) {
    int done = 0;
    check_mpi(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done != 0) {
      it = sends_.erase(it);
      any = true;
    } else {
      ++it;
    }
  }
  return any;
}

std::optional<mpi_link::message> mpi_link::try_receive(int source) {
  int arrived = 0;
  MPI_Status status;
  check_mpi(MPI_Iprobe(source, MPI_ANY_TAG, MPI_COMM_WORLD, &arrived, &status), "MPI_Iprobe");
  if (arrived == 0) return std::nullopt;
  int count = 0;
  check_mpi(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
  message m;
  m.source = status.MPI_SOURCE;
  m.tag = status.MPI_TAG;
  m.bytes.resize(static_cast<std::size_t>(count));
  check_mpi(MPI_Recv(m.bytes.data(), count, MPI_BYTE, m.source, m.tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
  return m;
}

void mpi_link::flush() {
  for (pending_send& s : sends_) {
    // Started by send(), in another function: the checker cannot pair them.
    check_mpi(MPI_Wait(&s.request, MPI_STATUS_IGNORE), "MPI_Wait");  // NOLINT(clang-analyzer-optin.mpi.MPI-Checker)
  }
  sends_.clear();
}

void idle_pause::yield() noexcept { sched_yield(); }

}  // namespace mproc::detail
