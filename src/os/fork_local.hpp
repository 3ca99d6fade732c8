// Something that belongs to the process that made it alone (a child's record, a pool):
// a forked child must not keep its descriptors.
#pragma once

namespace mproc::detail {

// The runtime calls forget_in_fork_child() on every registered fork_local in every forked
// child (runtime::register_fork_local), from the fork handler, before anything else runs
// there. It may only close descriptors and reset fields: another thread of the parent may
// have held any of its locks at the fork.
class fork_local {
 public:
  virtual void forget_in_fork_child() noexcept = 0;

 protected:
  ~fork_local() = default;
};

}  // namespace mproc::detail
