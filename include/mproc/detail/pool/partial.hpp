// mproc::partial's function object: a task function with some leading arguments bound,
// as functools.partial makes. The function travels by name (the pool's table entry, as
// for any task); only the bound values travel as data, once per task or map chunk.
#pragma once

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mproc::detail {

template <class G, class... B>
class partial_function {
 public:
  using function_type = G;

  partial_function() = default;
  explicit partial_function(G f, B... bound) : function_(f), bound_(std::move(bound)...) {}

  // The bound values are lvalues here, so that f(const config&, int) reads them in place.
  template <class... A>
    requires std::is_invocable_v<G&, B&..., A...>
  decltype(auto) operator()(A&&... args) {
    return std::apply(
        [&](B&... bound) -> decltype(auto) { return std::invoke(function_, bound..., std::forward<A>(args)...); },
        bound_);
  }
  template <class... A>
    requires std::is_invocable_v<const G&, const B&..., A...>
  decltype(auto) operator()(A&&... args) const {
    return std::apply(
        [&](const B&... bound) -> decltype(auto) { return std::invoke(function_, bound..., std::forward<A>(args)...); },
        bound_);
  }

  // The bound values, and those of a nested partial or a function object's own state; never
  // the function's address (the worker gets it from the pool's table).
  template <class Archive>
  void serialize(Archive& archive) {
    if constexpr (std::is_class_v<G> && !std::is_empty_v<G>) archive(function_);
    std::apply([&](B&... bound) { (archive(bound), ...); }, bound_);
  }

  G& function() noexcept { return function_; }
  const G& function() const noexcept { return function_; }

 private:
  G function_{};
  std::tuple<B...> bound_;
};

template <class F>
struct is_partial_function : std::false_type {};
template <class G, class... B>
struct is_partial_function<partial_function<G, B...>> : std::true_type {};
template <class F>
inline constexpr bool is_partial_function_v = is_partial_function<F>::value;

}  // namespace mproc::detail
