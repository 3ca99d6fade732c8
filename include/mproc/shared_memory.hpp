// mproc::shared_memory — Python's shared_memory.SharedMemory: a block of bytes that other
// processes attach to by name, without being handed anything else.
//
// Contract:
// - It is the one mproc object with a name in /dev/shm (shm_open(3)); every other one lives
//   in a memfd. A name is "x" or "/x" (the same block; name() gives "x"): not empty, no
//   '/' inside, not "." or "..", no NUL, at most 255 bytes (NAME_MAX) without the '/'.
//   A name that breaks these rules is an mproc::error saying which.
// - create(name, size) makes a new block of `size` bytes (> 0), zero-filled, mode 0600
//   (only the same user may open it), allocated at once (no SIGBUS later when memory runs
//   short: a std::system_error here). An existing name: std::system_error EEXIST.
//   open(name) attaches to an existing block, all of its current size; an absent name:
//   std::system_error ENOENT. Other failures of the system: std::system_error.
// - The name's lifetime (Python's track=True): the creator's handle removes the name when
//   it is destroyed, or earlier by unlink(); an opener's handle only unmaps, unless
//   unlink() is called on it. unlink() removes the name only while it still names this
//   block (not a block made again under the same name), and once: a second call, or a
//   name already gone, does nothing. Mappings stay valid after unlink(), in every process,
//   until each handle is destroyed; open(name) then fails with ENOENT.
// - A creator that dies without removing its names (SIGKILL, _exit, a crash) leaves them
//   to a small resource tracker, a process started on the first create() of a process
//   tree and shared by the processes forked from it, which unlinks them when it learns of
//   the death. It is invisible to the program (not a child, not in active_children(), no
//   output, no descriptor in children beyond the one that reaches it) and exits once
//   every process that could use it is gone.
// - fork: a forked child's copy of a creator's handle maps the same bytes, and its
//   destruction only unmaps: the name belongs to the process that created it.
// - Handles are move-only; a moved-from handle has an empty name and no bytes, and
//   unlink() on it is an mproc::error. A handle is serialisable (a queue message, a pool
//   task): its name travels, and the receiver opens the block by name (an opener, which
//   never removes the name), so the sender's block must still have its name then.
// - Thread safety: the handle's members may be called from any thread, except that a
//   handle must not be moved or destroyed while another thread uses it. The bytes are
//   plain memory: synchronise access to them (mproc locks, std::atomic_ref).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace mproc {

class shared_memory {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;

  // A new block; throws std::system_error EEXIST if the name exists, mproc::error for a
  // bad name or size 0. Starts the resource tracker on first use (a std::system_error if
  // it cannot be started; the name is then removed again).
  static shared_memory create(std::string name, std::size_t size);
  // An existing block, all of its current size; std::system_error ENOENT if absent.
  static shared_memory open(std::string name);

  // An empty handle, as a moved-from one: what a received handle is loaded into.
  shared_memory() noexcept;
  shared_memory(shared_memory&& other) noexcept;
  shared_memory& operator=(shared_memory&& other) noexcept;
  shared_memory(const shared_memory&) = delete;
  shared_memory& operator=(const shared_memory&) = delete;
  // Unmaps; removes the name if this process created the block (see the contract).
  ~shared_memory();

  std::span<std::byte> bytes() noexcept;
  std::span<const std::byte> bytes() const noexcept;
  std::size_t size() const noexcept;
  // Without the leading '/'.
  const std::string& name() const noexcept;
  // Removes the name if it still names this block; never blocks; idempotent.
  void unlink();

  // Serialisation: the name travels; loading opens the block by name (see open()).
  template <class Archive>
  void save(Archive& archive) const {
    archive(name());
  }
  template <class Archive>
  void load(Archive& archive) {
    std::string name;
    archive(name);
    *this = open(std::move(name));
  }

 private:
  struct impl;
  explicit shared_memory(std::unique_ptr<impl> state) noexcept;
  std::unique_ptr<impl> impl_;
};

}  // namespace mproc
