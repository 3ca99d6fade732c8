// What may travel to a pool on another machine: no handle (a queue, pipe end, lock, event,
// shared value...) names anything there, so a task argument or map item holding one fails
// to compile for mproc::mpi, with one line saying why.
#pragma once

#include <array>
#include <cstddef>
#include <map>
#include <optional>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mproc::detail {

// A handle type of this machine: it says so with `using mproc_local_handle = void`.
template <class T>
    struct holds_local_handle : std::bool_constant < requires {
  typename T::mproc_local_handle;
} > {};
template <class T>
inline constexpr bool holds_local_handle_v = holds_local_handle<std::remove_cvref_t<T>>::value;

// The containers serialize.hpp carries, looked into.
template <class T, class A>
struct holds_local_handle<std::vector<T, A>> : holds_local_handle<T> {};
template <class T, std::size_t N>
struct holds_local_handle<std::array<T, N>> : holds_local_handle<T> {};
template <class T>
struct holds_local_handle<std::optional<T>> : holds_local_handle<T> {};
template <class A, class B>
struct holds_local_handle<std::pair<A, B>> : std::disjunction<holds_local_handle<A>, holds_local_handle<B>> {};
template <class... T>
struct holds_local_handle<std::tuple<T...>> : std::disjunction<holds_local_handle<T>...> {};
template <class K, class V, class... R>
struct holds_local_handle<std::map<K, V, R...>> : std::disjunction<holds_local_handle<K>, holds_local_handle<V>> {};
template <class K, class V, class... R>
struct holds_local_handle<std::unordered_map<K, V, R...>>
    : std::disjunction<holds_local_handle<K>, holds_local_handle<V>> {};

template <class... A>
consteval void check_remote_values() {
  static_assert(!(holds_local_handle_v<A> || ...),
                "mproc::mpi::pool: a queue, pipe end, lock, event or shared value cannot be sent to another machine "
                "(it names memory of this one): send the data itself, and return results instead of putting them "
                "in a queue");
}

}  // namespace mproc::detail
