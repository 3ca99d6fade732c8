// Something that belongs to the process that made it alone (a child's record, a pool):
// a forked child must not keep its descriptors.
#pragma once

namespace mproc::detail {

// The runtime calls forget_in_fork_child() on every registered fork_local in every forked
// child (runtime::register_fork_local), from the fork handler, before anything else runs
// there. It may only close descriptors and reset fields: another thread of the parent may
// have held any of its locks at the fork.
// The registry is a list through the objects themselves: registering allocates nothing,
// so starting a process writes no heap page beyond its own record (each page first
// written after a fork is a page fault, ~14 µs on the 2-CPU development VM).
class fork_local {
 public:
  virtual void forget_in_fork_child() noexcept = 0;

 protected:
  fork_local() = default;
  fork_local(const fork_local&) = delete;
  fork_local& operator=(const fork_local&) = delete;
  virtual ~fork_local() = default;

 private:
  friend class fork_local_list;
  fork_local* prev_ = nullptr;
  fork_local* next_ = nullptr;
  bool linked_ = false;
};

// The registry's list; the caller guards it.
class fork_local_list {
 public:
  // Idempotent: a registered object stays registered once.
  void link(fork_local* local) noexcept {
    if (local->linked_) return;
    local->prev_ = nullptr;
    local->next_ = head_;
    if (head_ != nullptr) head_->prev_ = local;
    head_ = local;
    local->linked_ = true;
  }
  void unlink(fork_local* local) noexcept {
    if (!local->linked_) return;
    if (local->prev_ != nullptr) {
      local->prev_->next_ = local->next_;
    } else {
      head_ = local->next_;
    }
    if (local->next_ != nullptr) local->next_->prev_ = local->prev_;
    local->prev_ = local->next_ = nullptr;
    local->linked_ = false;
  }
  template <class F>
  void for_each(F f) const {
    for (fork_local* l = head_; l != nullptr;) {
      fork_local* const next = l->next_;  // f may unlink l
      f(*l);
      l = next;
    }
  }

 private:
  fork_local* head_ = nullptr;
};

}  // namespace mproc::detail
