#include "shm/shared_memory.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <memory>
#include <string>

#include "mproc/error.hpp"
#include "os/page_size.hpp"
#include "os/syscall.hpp"

namespace mproc::detail {
namespace {

// Reserves address space only: PROT_NONE and MAP_NORESERVE cost no memory. Asks for `most`
// (a queue may hold gigabytes) and settles for less under RLIMIT_AS.
std::pair<std::byte*, std::size_t> reserve(std::size_t at_least, std::size_t most, const std::string& who) {
  at_least = round_up_to_page(at_least);
  for (std::size_t want = std::max(round_up_to_page(most), at_least); want >= at_least && want >= page_size;
       want /= 2) {
    void* p = ::mmap(nullptr, want, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) return {static_cast<std::byte*>(p), want};
  }
  throw_system_error(std::make_error_code(std::errc::not_enough_memory),
                     who + ": mmap (reserving address space for the shared memory)");
}

std::size_t file_size(int fd, const std::string& who) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_system_error(last_error(), who + ": fstat");
  return static_cast<std::size_t>(st.st_size);
}

}  // namespace

// fallocate(2) past RLIMIT_FSIZE fails with EFBIG and also raises SIGXFSZ, whose default
// action ends the process (Python ignores SIGXFSZ at start-up for this reason; a library
// must not change the program's dispositions). So SIGXFSZ is blocked in this thread around
// the call, and the one a refused call raised is taken back before the mask is restored:
// the caller gets std::system_error (EFBIG) and nothing else happens. A program that blocks
// SIGXFSZ itself finds it pending afterwards, as the kernel would leave it.
void allocate_file(int fd, std::size_t offset, std::size_t length, const std::string& who) {
  sigset_t xfsz, old;
  sigemptyset(&xfsz);
  sigaddset(&xfsz, SIGXFSZ);
  ::pthread_sigmask(SIG_BLOCK, &xfsz, &old);
  const int r =
      retry_on_eintr([&] { return ::fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(length)); });
  const std::error_code ec = r != 0 ? last_error() : std::error_code{};
  if (ec.value() == EFBIG && sigismember(&old, SIGXFSZ) == 0) {
    const timespec now{};
    ::sigtimedwait(&xfsz, nullptr, &now);
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (ec) throw_system_error(ec, who + ": fallocate");
}

std::string constructor_name(const char* type) {
  const std::string t(type);
  const std::size_t last = t.rfind("::");
  return t + "::" + (last == std::string::npos ? t : t.substr(last + 2));
}

shared_memory::shared_memory(unique_fd fd, std::byte* base, std::size_t reserved, const char* type)
    : fd_(std::move(fd)), base_(base), reserved_(reserved), type_(type) {}

shared_memory::~shared_memory() { ::munmap(base_, reserved_); }

std::unique_ptr<shared_memory> shared_memory::create(const char* name, std::size_t size, std::size_t reservation,
                                                     const char* type) {
  const std::string who = constructor_name(type);
  size = round_up_to_page(size);
  unique_fd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd) throw_system_error(last_error(), who + ": memfd_create");
  // A memfd has no name in any directory, but /proc/<pid>/fd/<n> opens it for whoever may
  // inspect this process; it is created 0777, so narrow it to its owner.
  if (::fchmod(fd.get(), 0600) != 0) throw_system_error(last_error(), who + ": fchmod");
  allocate_file(fd.get(), 0, size, who);
  const auto [base, reserved] = reserve(size, reservation, who);
  std::unique_ptr<shared_memory> m(new shared_memory(std::move(fd), base, reserved, type));
  m->map_more(size, who);
  return m;
}

std::unique_ptr<shared_memory> shared_memory::adopt(unique_fd fd, std::size_t reservation, const char* type) {
  const std::string who = std::string(type) + "::load";
  const std::size_t size = file_size(fd.get(), who);
  const auto [base, reserved] = reserve(size, reservation, who);
  std::unique_ptr<shared_memory> m(new shared_memory(std::move(fd), base, reserved, type));
  m->map_more(size, who);
  return m;
}

void shared_memory::map_more(std::size_t end, const std::string& who) {
  std::lock_guard lock(map_mutex_);
  const std::size_t mapped = mapped_.load(std::memory_order_relaxed);
  if (end <= mapped) return;
  const std::size_t file = file_size(fd_.get(), who);
  if (end > file) {
    throw error(who + ": the shared memory is " + std::to_string(file) + " bytes, short of offset " +
                std::to_string(end) + ": a handle was forged or the memory damaged");
  }
  if (end > reserved_) {
    throw error(who + ": the shared memory has grown to " + std::to_string(file) + " bytes, beyond the " +
                std::to_string(reserved_) +
                " bytes of address space this process could reserve for it; raise RLIMIT_AS");
  }
  const std::size_t size = std::min(file, reserved_);
  const std::size_t new_end = round_up_to_page(size) > reserved_ ? reserved_ : round_up_to_page(size);
  void* p = ::mmap(base_ + mapped, new_end - mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_.get(),
                   static_cast<off_t>(mapped));
  if (p == MAP_FAILED) throw_system_error(last_error(), who + ": mmap");
  mapped_.store(new_end, std::memory_order_release);
}

void shared_memory::grow(std::size_t size) {
  size = round_up_to_page(size);
  if (size > reserved_) {
    throw_system_error(std::make_error_code(std::errc::not_enough_memory),
                       std::string(type_) + ": cannot grow the shared memory past the " + std::to_string(reserved_) +
                           " bytes of address space this process reserved for it");
  }
  const std::size_t current = file_size(fd_.get(), type_);
  if (size > current) allocate_file(fd_.get(), current, size - current, type_);
  ensure_mapped(size);
}

void shared_memory::release(std::size_t offset, std::size_t length) noexcept {
  ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
              static_cast<off_t>(length));
}

void shared_memory::reallocate(std::size_t offset, std::size_t length) {
  allocate_file(fd_.get(), offset, length, type_);
}

}  // namespace mproc::detail
