// MPI's start and end around the pools of an mproc::mpi job, and the start-up check that
// every rank runs the same function table.
#include "mproc/detail/mpi/mpi_session.hpp"

#include <sched.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "mpi/mpi_link.hpp"
#include "mpi/mpi_wire.hpp"
#include "mpi/rank_server.hpp"
#include "mpi/root_core.hpp"
#include "mproc/detail/pool/registry.hpp"
#include "mproc/error.hpp"

namespace mproc::detail {

struct mpi_session::impl {
  int rank = 0;
  int ranks = 1;
  unsigned workers = 0;
  bool finalized = false;
  std::shared_ptr<pool_core> local;
  std::shared_ptr<root_core> root;

  void finalize() noexcept {
    if (finalized) return;
    finalized = true;
    MPI_Finalize();
  }
  // Ends the local pool at once (a failed start).
  void drop_local() noexcept {
    try {
      local->terminate();
      local->join();
    } catch (...) {
    }
  }
};

namespace {

std::string hex(std::uint64_t v) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016" PRIx64, v);
  return text;
}

mpi_wire::rank_facts facts_of_this_rank(std::uint64_t hash, unsigned workers) {
  mpi_wire::rank_facts f{};
  f.table_hash = hash;
  f.workers = workers;
  f.pid = static_cast<std::int32_t>(::getpid());
  cpu_set_t affinity;
  CPU_ZERO(&affinity);
  f.usable_cpus = ::sched_getaffinity(0, sizeof affinity, &affinity) == 0 ? CPU_COUNT(&affinity) : 0;
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  f.online_cpus = online > 0 ? static_cast<std::uint32_t>(online) : 0;
  if (::gethostname(f.host, sizeof f.host - 1) != 0) std::strcpy(f.host, "?");
  return f;
}

// Empty when every rank agrees with the root; else what differs, for every rank to report.
std::string table_mismatch(const std::vector<mpi_wire::rank_facts>& all) {
  std::string report;
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r].table_hash == all[0].table_hash) continue;
    report += "\n  rank " + std::to_string(r) + " on " + all[r].host + " (pid " + std::to_string(all[r].pid) +
              "): function table " + hex(all[r].table_hash) + ", rank 0 on " + all[0].host + ": " +
              hex(all[0].table_hash);
  }
  if (report.empty()) return report;
  return "mproc::mpi::pool: the ranks do not run the same build of the program:" + report +
         "\nevery rank must run the same binary, built from the same sources by the same compiler (a task could "
         "otherwise call the wrong function); nothing was run";
}

// mpirun binds each rank to one core when it starts two or fewer, and the rank's workers
// inherit the binding: its whole pool then shares that core, and every task hand-off is a
// context switch on it (a blocking apply: ~37 µs instead of ~1.5 µs). Said once, by the root.
void warn_of_narrow_bindings(const std::vector<mpi_wire::rank_facts>& all) {
  std::string narrow;
  for (std::size_t r = 0; r < all.size(); ++r) {
    if (all[r].usable_cpus == 1 && all[r].online_cpus > 1) narrow += (narrow.empty() ? "" : ", ") + std::to_string(r);
  }
  if (narrow.empty()) return;
  std::fprintf(stderr,
               "mproc::mpi::pool: rank(s) %s may use 1 CPU of their node (mpirun binds ranks to cores), so each of "
               "their pools shares one core; give the ranks the node's cores: mpirun --bind-to none, or --map-by "
               "ppr:1:node:pe=N (Slurm: --cpus-per-task=N)\n",
               narrow.c_str());
}

}  // namespace

mpi_session::mpi_session(int& argc, char**& argv, const mpi_settings& settings) : impl_(std::make_unique<impl>()) {
  impl& s = *impl_;
  int already = 0;
  MPI_Initialized(&already);
  if (already != 0)
    throw error(
        "mproc::mpi::pool: MPI is initialised already; construct the pool first thing in main, before any other MPI "
        "call (it forks its workers, then calls MPI_Init)");
  // Forked before MPI_Init: no worker inherits MPI's threads, sockets or shared memory.
  s.local = std::make_shared<pool_core>(
      pool_config{settings.processes_per_rank, {}, settings.max_tasks_per_child, settings.task_timeout});
  int provided = 0;
  const int rc = MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  if (rc != MPI_SUCCESS) {
    s.drop_local();
    s.finalized = true;  // never initialised
    check_mpi(rc, "MPI_Init_thread");
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &s.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &s.ranks);
  if (provided < MPI_THREAD_SERIALIZED) {
    s.finalize();
    s.drop_local();
    throw error(
        "mproc::mpi::pool: this MPI library does not support MPI_THREAD_SERIALIZED, which the root's link "
        "thread needs");
  }

  const auto table = registry_table();
  const auto mine = facts_of_this_rank(table->hash(), s.local->size());
  std::vector<mpi_wire::rank_facts> all(static_cast<std::size_t>(s.ranks));
  MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
  if (auto mismatch = table_mismatch(all); !mismatch.empty()) {
    s.finalize();
    s.drop_local();
    throw error(mismatch);
  }
  std::vector<unsigned> rank_workers;
  for (const auto& f : all) {
    rank_workers.push_back(f.workers);
    s.workers += f.workers;
  }

  if (s.rank == 0) {
    warn_of_narrow_bindings(all);
    s.root = std::make_shared<root_core>(s.local, rank_workers, settings.window);
    return;
  }
  try {
    serve_root(*s.local, *table);
  } catch (...) {
    s.drop_local();
    MPI_Abort(MPI_COMM_WORLD, 1);  // fail-stop: the root would wait for this rank forever
  }
  s.local.reset();
  s.finalize();
}

mpi_session::~mpi_session() { finish(); }

bool mpi_session::is_root() const noexcept { return impl_->rank == 0; }
int mpi_session::ranks() const noexcept { return impl_->ranks; }
unsigned mpi_session::workers() const noexcept { return impl_->workers; }
std::shared_ptr<task_sink> mpi_session::sink() const noexcept { return impl_->root; }

void mpi_session::finish() noexcept {
  impl& s = *impl_;
  if (s.root) {
    try {
      s.root->close();
      s.root->join();
    } catch (...) {
    }
    s.root.reset();
  }
  s.local.reset();
  s.finalize();
}

}  // namespace mproc::detail
