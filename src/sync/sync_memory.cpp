#include "sync/sync_memory.hpp"

#include <sys/stat.h>

#include <string>

#include "mproc/error.hpp"
#include "os/syscall.hpp"

namespace mproc::detail {
namespace {

constexpr std::uint32_t sync_magic = 0x6d70'7379;  // "mpsy"
constexpr std::uint32_t layout_version = 2;

std::string loading(const char* type) { return std::string(type) + "::load"; }

}  // namespace

const char* kind_name(sync_kind kind) noexcept {
  switch (kind) {
    case sync_kind::mutex:
      return "mutex";
    case sync_kind::recursive_mutex:
      return "recursive_mutex";
    case sync_kind::semaphore:
      return "semaphore";
    case sync_kind::event:
      return "event";
    case sync_kind::condition:
      return "condition";
    case sync_kind::barrier:
      return "barrier";
    case sync_kind::shared_block:
      return "shared_value or shared_array";
  }
  return "unknown object";
}

sync_memory::sync_memory(std::unique_ptr<shared_memory> memory) : memory_(std::move(memory)) {
  struct stat st {};
  if (::fstat(memory_->fd(), &st) != 0) throw_system_error(last_error(), std::string(memory_->type()) + ": fstat");
  device_ = static_cast<std::uint64_t>(st.st_dev);
  inode_ = static_cast<std::uint64_t>(st.st_ino);
}

std::shared_ptr<sync_memory> sync_memory::create(const char* name, std::size_t bytes, const char* type) {
  return std::shared_ptr<sync_memory>(
      new sync_memory(shared_memory::create(name, bytes, shared_memory::small_reservation, type)));
}

std::shared_ptr<sync_memory> sync_memory::open(const fd_token& token, const char* type) {
  unique_fd fd(claim_fd_token(token, loading(type).c_str()));
  return std::shared_ptr<sync_memory>(
      new sync_memory(shared_memory::adopt(std::move(fd), shared_memory::small_reservation, type)));
}

std::byte* sync_memory::at(std::size_t offset, std::size_t size) {
  if (offset % object_alignment != 0 || size > memory_->reserved() || offset > memory_->reserved() - size) {
    throw error(std::string(type()) + ": an object at offset " + std::to_string(offset) + " (" + std::to_string(size) +
                " bytes) lies outside the shared memory: a handle was forged or the memory damaged");
  }
  memory_->ensure_mapped(offset + size);  // throws mproc::error beyond the end of the file
  return memory_->base() + offset;
}

std::byte* sync_memory::make_object(std::size_t offset, sync_kind kind, std::size_t bytes) {
  std::byte* p = at(offset, bytes);
  auto* h = reinterpret_cast<object_header*>(p);
  h->magic = sync_magic;
  h->version = layout_version;
  h->kind = kind;
  h->bytes = static_cast<std::uint32_t>(bytes);
  return p;
}

sync_kind sync_memory::kind_at(std::size_t offset) {
  const auto* h = reinterpret_cast<const object_header*>(at(offset, sizeof(object_header)));
  if (h->magic != sync_magic) {
    throw error(loading(type()) + ": the handle received does not name an mproc synchronisation object");
  }
  if (h->version != layout_version) {
    throw error(loading(type()) + ": the handle received names an object of layout version " +
                std::to_string(h->version) + ", and this build uses " + std::to_string(layout_version) +
                "; send handles only between processes of the same build");
  }
  return h->kind;
}

std::byte* sync_memory::open_object(std::size_t offset, sync_kind kind, std::size_t bytes) {
  const sync_kind found = kind_at(offset);
  if (found != kind) {
    throw error(loading(type()) + ": the handle received names an mproc::" + kind_name(found) +
                ", not an mproc::" + kind_name(kind));
  }
  std::byte* p = at(offset, bytes);
  if (reinterpret_cast<const object_header*>(p)->bytes != bytes) {
    throw error(loading(type()) + ": the handle received names an mproc::" + kind_name(kind) +
                " of another size; send handles only between processes of the same build");
  }
  return p;
}

sync_token sync_memory::token(std::size_t offset) const {
  return {make_fd_token(memory_->fd(), (std::string(type()) + "::save").c_str()), offset};
}

bool sync_memory::is(const fd_token& token) const noexcept { return token.device == device_ && token.inode == inode_; }

}  // namespace mproc::detail
