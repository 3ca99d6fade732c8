// mproc::shared_memory (include/mproc/shared_memory.hpp): a block in /dev/shm, its name
// removed by its creator's handle or, when the creator dies first, by the tracker.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <string>
#include <utility>

#include "mproc/error.hpp"
#include "mproc/shared_memory.hpp"
#include "os/fd.hpp"
#include "os/syscall.hpp"
#include "shm/shared_memory.hpp"
#include "shm/shm_tracker.hpp"

namespace mproc {

struct shared_memory::impl {
  std::string name;
  detail::unique_fd fd;
  detail::shm_identity id;
  std::byte* base = nullptr;
  std::size_t size = 0;
  pid_t creator = 0;  // the creating process, 0 for an opener
  bool unlinked = false;

  ~impl() {
    if (base != nullptr) ::munmap(base, size);
    // A forked child's copy leaves the name to the creator.
    if (creator == ::getpid() && !unlinked) remove_name();
  }
  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  void map(const std::string& who) {
    if (size == 0) return;  // made by another program, or its creator has not sized it yet
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) detail::throw_system_error(detail::last_error(), who + ": mmap");
    base = static_cast<std::byte*>(p);
    // The mapping keeps the memory: the descriptor would only cost the program one.
    fd.reset();
  }

  void remove_name() noexcept {
    detail::unlink_shm_if_same(name.c_str(), id);
    unlinked = true;
    detail::untrack_shm_name(name, id);
  }
};

namespace {

constexpr std::size_t longest_name = NAME_MAX;

// "x" or "/x" -> "x"; anything else that is not one file name in /dev/shm: mproc::error.
std::string checked_name(std::string name, const char* who) {
  if (!name.empty() && name.front() == '/') name.erase(0, 1);
  auto fail = [&](const std::string& why) {
    throw error(std::string(who) + ": the name \"" + name + "\" " + why +
                "; a name is one file name in /dev/shm, such as \"my_block\" or \"/my_block\"");
  };
  if (name.empty()) fail("is empty");
  if (name.find('/') != std::string::npos) fail("has a '/' after its first character");
  if (name.find('\0') != std::string::npos) fail("has a NUL character");
  if (name == "." || name == "..") fail("names a directory");
  if (name.size() > longest_name) {
    fail("is " + std::to_string(name.size()) + " bytes long, more than the " + std::to_string(longest_name) +
         " (NAME_MAX) allowed besides a leading '/'");
  }
  return name;
}

detail::shm_identity identity_of(int fd, std::size_t* size, const std::string& who) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) detail::throw_system_error(detail::last_error(), who + ": fstat");
  if (size != nullptr) *size = static_cast<std::size_t>(st.st_size);
  return {st.st_dev, st.st_ino};
}

}  // namespace

shared_memory::shared_memory() noexcept = default;
shared_memory::shared_memory(std::unique_ptr<impl> state) noexcept : impl_(std::move(state)) {}
shared_memory::shared_memory(shared_memory&& other) noexcept = default;
shared_memory& shared_memory::operator=(shared_memory&& other) noexcept = default;
shared_memory::~shared_memory() = default;

// How create() makes a name appear only whole, and never outside the tracker's view:
// 1. the tracker learns a private name ".mproc-<pid>-<n>" first, to unlink if we die;
// 2. the block is made and allocated under that private name, and its identity learnt;
// 3. the tracker learns the public name with that identity;
// 4. link(2) gives the block its public name, failing with EEXIST if it is taken (as
//    O_EXCL would), and the private name is unlinked and untracked.
// A SIGKILL at any instant leaves nothing the tracker does not know of, and an opener
// never sees a block before it has its size.
shared_memory shared_memory::create(std::string name, std::size_t size) {
  const char* const who = "mproc::shared_memory::create";
  auto state = std::make_unique<impl>();
  state->name = checked_name(std::move(name), who);
  if (size == 0) throw error(std::string(who) + ": size 0; a block holds at least one byte");
  static std::atomic<unsigned long> made{0};
  const std::string private_name =
      ".mproc-" + std::to_string(::getpid()) + "-" + std::to_string(made.fetch_add(1, std::memory_order_relaxed));
  const detail::shm_identity any{};  // the private name is ours whatever it names
  if (const std::error_code ec = detail::track_shm_name(private_name, any)) {
    detail::throw_system_error(ec, std::string(who) + ": starting the resource tracker");
  }
  struct private_name_remover {
    const std::string& name;
    ~private_name_remover() {
      ::shm_unlink(name.c_str());
      detail::untrack_shm_name(name, {});
    }
  } remover{private_name};
  state->fd.reset(::shm_open(private_name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, S_IRUSR | S_IWUSR));
  if (!state->fd) detail::throw_system_error(detail::last_error(), std::string(who) + ": shm_open");
  state->id = identity_of(state->fd.get(), nullptr, who);
  detail::allocate_file(state->fd.get(), 0, size, who);
  state->size = size;
  if (const std::error_code ec = detail::track_shm_name(state->name, state->id)) {
    detail::throw_system_error(ec, std::string(who) + ": telling the resource tracker");
  }
  const std::string directory = detail::shm_directory;
  if (::link((directory + private_name).c_str(), (directory + state->name).c_str()) != 0) {
    const std::error_code ec = detail::last_error();
    detail::untrack_shm_name(state->name, state->id);
    detail::throw_system_error(ec, std::string(who) + ": \"" + state->name + "\"");
  }
  state->creator = ::getpid();  // the name is ours: ~impl removes it if mmap throws
  state->map(who);
  return shared_memory(std::move(state));
}

shared_memory shared_memory::open(std::string name) {
  const char* const who = "mproc::shared_memory::open";
  auto state = std::make_unique<impl>();
  state->name = checked_name(std::move(name), who);
  state->fd.reset(::shm_open(state->name.c_str(), O_RDWR | O_CLOEXEC, 0));
  if (!state->fd) {
    detail::throw_system_error(detail::last_error(), std::string(who) + ": shm_open \"" + state->name + "\"");
  }
  state->id = identity_of(state->fd.get(), &state->size, who);
  state->map(who);
  return shared_memory(std::move(state));
}

std::span<std::byte> shared_memory::bytes() noexcept {
  return impl_ ? std::span<std::byte>(impl_->base, impl_->size) : std::span<std::byte>();
}

std::span<const std::byte> shared_memory::bytes() const noexcept {
  return impl_ ? std::span<const std::byte>(impl_->base, impl_->size) : std::span<const std::byte>();
}

std::size_t shared_memory::size() const noexcept { return impl_ ? impl_->size : 0; }

const std::string& shared_memory::name() const noexcept {
  static const std::string none;
  return impl_ ? impl_->name : none;
}

void shared_memory::unlink() {
  if (!impl_) throw error("mproc::shared_memory::unlink: the handle is empty (moved from)");
  if (!impl_->unlinked) impl_->remove_name();
}

}  // namespace mproc
