// A task state that only carries a tag, for the tests of the parent's tables of tasks.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <span>

#include "mproc/detail/pool/pool_core.hpp"

namespace mproc_test {

struct tagged_state : mproc::detail::task_state {
  explicit tagged_state(std::uint64_t t) : tag(t) {}
  void complete(std::span<const std::byte>) noexcept override {}
  void fail(std::exception_ptr) noexcept override {}
  std::uint64_t tag;
};

inline std::uint64_t tag_of(const std::shared_ptr<mproc::detail::task_state>& s) {
  return static_cast<tagged_state&>(*s).tag;
}

}  // namespace mproc_test
