// A non-owning reference to something callable, as C++26's std::function_ref: the compiled
// core takes callbacks through it (a channel's message sink) instead of a function pointer
// plus a context struct, and a caller passes a lambda.
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace mproc::detail {

template <class Signature>
class function_ref;

template <class R, class... Args>
class function_ref<R(Args...)> {
 public:
  function_ref() noexcept = default;  // empty: operator bool is false

  // Refers to `f`, which must outlive every call (a lambda passed as an argument does).
  // Implicit: callers pass lambdas. The constraint keeps copies and moves to the copy and
  // move constructors, which clang-tidy 14 does not see (it ignores requires-clauses).
  // NOLINTBEGIN(google-explicit-constructor, bugprone-forwarding-reference-overload)
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, function_ref> && std::is_invocable_r_v<R, F&, Args...>)
  function_ref(F&& f)
  noexcept
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, Args... args) -> R {
          return std::invoke(*static_cast<std::remove_reference_t<F>*>(object), std::forward<Args>(args)...);
        }) {}
  // NOLINTEND(google-explicit-constructor, bugprone-forwarding-reference-overload)

  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }
  explicit operator bool() const noexcept { return call_ != nullptr; }

 private:
  void* object_ = nullptr;
  R (*call_)(void*, Args...) = nullptr;
};

}  // namespace mproc::detail
