// Shared memory that can grow: one memfd (never a name in /dev/shm), mapped into an
// address range reserved up front, so that growing it never moves what is mapped and
// pointers into it stay valid while other threads use them.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "os/fd.hpp"

namespace mproc::detail {

// "mproc::queue" -> "mproc::queue::queue": the constructor of a public type, for the errors
// of whatever it makes.
std::string constructor_name(const char* type);

// Allocates [offset, offset+length) of file `fd` now (fallocate), so that running out of
// memory is a std::system_error naming `who` here instead of a SIGBUS on first touch.
void allocate_file(int fd, std::size_t offset, std::size_t length, const std::string& who);

class shared_memory {
 public:
  // How far the memory may grow: the address range reserved for it up front (it costs no
  // memory, only address space, which RLIMIT_AS may limit: less is taken if need be).
  // 0: exactly its size, it never grows.
  static constexpr std::size_t queue_reservation = std::size_t{64} << 30;
  static constexpr std::size_t small_reservation = std::size_t{16} << 20;

  // `type` is the public type the memory serves ("mproc::queue", a static string): every
  // error names it, as "<type>::<constructor>" from create, "<type>::load" from adopt, and
  // "<type>" alone later, when the call that grows or maps it may be any of the type's.

  // A new memfd of `size` bytes, all allocated now (fallocate), so that running out of
  // memory is an error here instead of a SIGBUS on first touch.
  static std::unique_ptr<shared_memory> create(const char* name, std::size_t size, std::size_t reservation,
                                               const char* type);
  // Maps a memfd received from elsewhere.
  static std::unique_ptr<shared_memory> adopt(unique_fd fd, std::size_t reservation, const char* type);

  ~shared_memory();
  shared_memory(const shared_memory&) = delete;
  shared_memory& operator=(const shared_memory&) = delete;

  std::byte* base() const noexcept { return base_; }
  int fd() const noexcept { return fd_.get(); }
  std::size_t reserved() const noexcept { return reserved_; }
  const char* type() const noexcept { return type_; }

  // Makes [0, end) accessible in this process; the file must already be that large
  // (another process may have grown it). Cheap when already mapped.
  void ensure_mapped(std::size_t end) {
    if (end > mapped_.load(std::memory_order_acquire)) map_more(end, type_);
  }
  // Extends the file to at least `size` bytes (allocated) and maps it.
  void grow(std::size_t size);
  // Gives the memory of [offset, offset+length) back to the system / takes it again.
  void release(std::size_t offset, std::size_t length) noexcept;
  void reallocate(std::size_t offset, std::size_t length);

  // For a copy in a forked process that will never use the memory (a pool's, in a child):
  // closes the descriptor; what is mapped stays mapped until destruction.
  void forget_descriptor() noexcept { fd_.reset(); }

 private:
  shared_memory(unique_fd fd, std::byte* base, std::size_t reserved, const char* type);
  void map_more(std::size_t end, const std::string& who);

  unique_fd fd_;
  std::byte* base_;
  std::size_t reserved_;
  const char* type_;
  std::atomic<std::size_t> mapped_{0};
  std::mutex map_mutex_;  // serialises this process's mmap calls
};

}  // namespace mproc::detail
