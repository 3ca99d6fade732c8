// What a pool task is (a function pointer, a stateless callable, or a serialisable function
// object whose state travels with the task), and the worker side
// of running one: decoding its arguments, calling it, encoding its result; for map chunks
// of plain numbers, straight between the message and the vector, without cereal.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/detail/pool/map_input.hpp"
#include "mproc/detail/pool/partial.hpp"
#include "mproc/detail/pool/registry.hpp"
#include "mproc/detail/pool/task_sink.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

template <class F>
inline constexpr bool is_function_pointer_v =
    std::conjunction_v<std::is_pointer<F>, std::is_function<std::remove_pointer_t<F>>>;

// A callable with no state: a function pointer (which the pool's table holds), or a class
// with no members (a lambda without captures) that the worker makes afresh.
template <class F>
concept stateless_task_function =
    is_function_pointer_v<F> || std::conjunction_v<std::is_class<F>, std::is_empty<F>, std::is_default_constructible<F>,
                                                   std::is_trivially_copyable<F>>;

// A callable whose state travels with the task as data: a serialisable function object (a
// class with operator() and cereal's serialize), partial's among them.
template <class F>
concept stateful_task_function = std::is_class_v<F> && !std::is_empty_v<F> && serializable<F>;

// What a pool can run. Workers call it by name (the pool's table), never through an
// address taken from a message.
template <class F>
concept task_function = stateless_task_function<F> || stateful_task_function<F>;

// Fails to compile, saying why and what to do, for anything else.
template <class F>
consteval void check_task_function() {
  static_assert(task_function<F>,
                "mproc::pool runs a function pointer, a lambda without captures, or a serialisable function object "
                "(a class with operator() and a cereal serialize(Archive&)): workers call the function by name and "
                "receive only state that serialises. For a capturing lambda or a std::function, bind the values "
                "with mproc::partial(f, values...) or pass them as task arguments.");
}

// Whether apply(f, args...) can be sent: each argument copies into the task and serialises
// (a function pointer does, by its registered name: registry.hpp), and f takes what the
// worker decodes (its own copies, as rvalues).
template <class F, class... A>
inline constexpr bool task_arguments_ok_v = ((std::is_constructible_v<std::decay_t<A>, A&&> &&
                                              serializable<std::decay_t<A>>)&&...) &&
                                            std::is_invocable_v<F&, std::decay_t<A>...>;

// Fails to compile, with one line naming the fix, unless task_arguments_ok_v.
template <class F, class... A>
consteval void check_task_arguments() {
  constexpr bool copyable = (std::is_constructible_v<std::decay_t<A>, A&&> && ...);
  static_assert(copyable,
                "mproc::pool: a task argument is a move-only handle (a connection): pass it with std::move(...)");
  static_assert((serializable<std::decay_t<A>> && ...),
                "mproc::pool: every task argument must be serializable (<mproc/serialize.hpp>): give your type a "
                "cereal serialize(Archive&)");
  static_assert(
      !copyable || std::is_invocable_v<F&, std::decay_t<A>...> || !std::is_invocable_v<F&, std::decay_t<A>&...>,
      "mproc::pool: the task takes an argument by non-const reference, but the worker gets its own copy: "
      "take it by value (a handle still names the same queue, pipe or lock) or by const&");
  static_assert(
      !copyable || std::is_invocable_v<F&, std::decay_t<A>...> || std::is_invocable_v<F&, std::decay_t<A>&...>,
      "mproc::pool: the task cannot be called with these arguments");
}

// The part of a task function the pool's table holds: a function pointer, the one inside
// a partial, or null (the worker makes the class itself).
template <class F>
generic_function to_generic(const F& f) {
  if constexpr (is_function_pointer_v<F>) {
    return reinterpret_cast<generic_function>(f);
  } else if constexpr (is_partial_function_v<F>) {
    return to_generic(f.function());
  } else {
    return nullptr;
  }
}

// Puts the table's part back into `f`.
template <class F>
void bind_generic(F& f, generic_function g) {
  if constexpr (is_function_pointer_v<F>) {
    f = reinterpret_cast<F>(g);
  } else if constexpr (is_partial_function_v<F>) {
    bind_generic(f.function(), g);
  }
}

// A stateful function's state, written before a task's arguments (or a chunk's items): a
// u64 length, then what to_bytes writes for the function object. A stateless one writes
// nothing.
template <class F>
void encode_task_state(const F& f, std::vector<std::byte>& out) {
  if constexpr (stateful_task_function<F>) {
    const std::size_t at = out.size();
    out.resize(at + sizeof(std::uint64_t));
    to_bytes(f, out);
    const std::uint64_t length = out.size() - at - sizeof length;
    std::memcpy(out.data() + at, &length, sizeof length);
  }
}

// The worker's side: the function (its state decoded, the table's part put back) and the
// bytes after its state. serialization_error for a state that does not decode.
template <class F>
std::pair<F, std::span<const std::byte>> decode_task_function(generic_function g, std::span<const std::byte> in) {
  F f{};
  if constexpr (stateful_task_function<F>) {
    std::uint64_t length = 0;
    if (in.size() < sizeof length) throw serialization_error("mproc::pool: a task's function state is truncated");
    std::memcpy(&length, in.data(), sizeof length);
    if (length > in.size() - sizeof length) {
      throw serialization_error("mproc::pool: a task's function state runs past the task's end");
    }
    f = from_bytes<F>(in.subspan(sizeof length, length));
    in = in.subspan(sizeof length + length);
  }
  bind_generic(f, g);
  return {std::move(f), in};
}

// The worker side of apply: decode the arguments, call, encode the result.
template <class F, class... A>
void invoke_apply(generic_function g, std::span<const std::byte> in, std::vector<std::byte>& out) {
  auto function = decode_task_function<F>(g, in);  // not a structured binding: lambdas capture f
  F& f = function.first;
  auto args = decode_message<std::tuple<A...>>(function.second, "mproc::pool: a task's arguments");
  using R = std::invoke_result_t<F&, A...>;
  if constexpr (std::is_void_v<R>) {
    std::apply([&](A&... a) { std::invoke(f, std::move(a)...); }, args);
  } else {
    R result = std::apply([&](A&... a) -> R { return std::invoke(f, std::move(a)...); }, args);
    encode_message(result, out);
  }
}

// Vectors of numbers, which map moves in bulk, encode as the version byte, a u64 count and
// the raw elements (<mproc/serialize.hpp>). These two produce and read exactly those bytes
// without building a std::vector in between.
template <class T>
inline constexpr bool is_raw_vector_element_v = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;

// Sizes `out` to end, from byte `at`, with what to_bytes writes for a vector of `n` T, and
// writes its version byte and count; returns where the n raw elements go.
template <class T>
std::byte* raw_vector_at(std::vector<std::byte>& out, std::size_t at, std::size_t n) {
  static_assert(is_raw_vector_element_v<T>);
  const std::uint64_t count = n;
  out.resize(at + 1 + sizeof count + n * sizeof(T));
  out[at] = static_cast<std::byte>(serialization_format_version);
  std::memcpy(out.data() + at + 1, &count, sizeof count);
  return out.data() + at + 1 + sizeof count;
}

// Writes task_sink::task_header_bytes of room, then `state` (encode_task_state's bytes,
// the same for every chunk of a map), then what to_bytes(std::vector<T>(items)) writes,
// into `out`; returns the message size.
template <class T>
std::size_t encode_chunk_after_header(std::span<const std::byte> state, std::span<const T> items,
                                      std::vector<std::byte>& out) {
  constexpr std::size_t header = task_sink::task_header_bytes;
  out.resize(header);
  out.insert(out.end(), state.begin(), state.end());
  if constexpr (is_raw_vector_element_v<T>) {
    std::byte* elements = raw_vector_at<T>(out, out.size(), items.size());
    if (!items.empty()) std::memcpy(elements, items.data(), items.size_bytes());
  } else {
    to_bytes(std::vector<T>(items.begin(), items.end()), out);
  }
  return out.size();
}

// The elements of what to_bytes(std::vector<T>) wrote, in place: their count and bytes.
// serialization_error if `bytes` is not such a message.
template <class T>
std::pair<std::size_t, const std::byte*> raw_vector_elements(std::span<const std::byte> bytes) {
  static_assert(is_raw_vector_element_v<T>);
  std::uint64_t n = 0;
  if (bytes.size() < 1 + sizeof n || bytes[0] != static_cast<std::byte>(serialization_format_version)) {
    throw serialization_error("mproc::pool::map: a chunk is not a valid message");
  }
  std::memcpy(&n, bytes.data() + 1, sizeof n);
  if (n != (bytes.size() - 1 - sizeof n) / sizeof(T) || (bytes.size() - 1 - sizeof n) % sizeof(T) != 0) {
    throw serialization_error("mproc::pool::map: a chunk's element count does not match its length");
  }
  return {static_cast<std::size_t>(n), bytes.data() + 1 + sizeof n};
}

// Decodes what to_bytes(std::vector<T>) wrote straight into `into`, whose size the count
// must equal (else serialization_error). False for element types without that layout.
template <class T>
bool decode_vector_into(std::span<const std::byte> bytes, std::span<T> into) {
  if constexpr (is_raw_vector_element_v<T>) {
    const auto [n, data] = raw_vector_elements<T>(bytes);
    if (n != into.size()) {
      throw serialization_error("mproc::pool::map: a chunk of " + std::to_string(into.size()) +
                                " items came back with a different number of results");
    }
    if (n != 0) std::memcpy(into.data(), data, into.size_bytes());
    return true;
  } else {
    return false;
  }
}

// Whether a map chunk maps numbers to numbers.
template <class F, class T, bool star>
constexpr bool is_raw_chunk() {
  if constexpr (star || !is_raw_vector_element_v<T>) {
    return false;
  } else {
    return is_raw_vector_element_v<std::remove_cvref_t<std::invoke_result_t<F&, T>>>;
  }
}

// f on one item of a map chunk (its tuple's parts with `star`), the item moved in; a void
// f gives no_result. The process workers and thread_pool's threads both call items so.
template <class F, class T, bool star>
chunk_result_t<F, T, star> call_item(F& f, T&& item) {
  const auto run = [&]() -> decltype(auto) {
    if constexpr (star) {
      return std::apply(f, std::move(item));
    } else {
      return std::invoke(f, std::move(item));
    }
  };
  if constexpr (std::is_same_v<chunk_result_t<F, T, star>, no_result>) {
    run();
    return {};
  } else {
    return run();
  }
}

// The worker side of a map chunk: items in, results out, in order. Numbers to numbers go
// from the message to the result message without a vector on either side.
template <class F, class T, bool star>
void invoke_chunk(generic_function g, std::span<const std::byte> message, std::vector<std::byte>& out) {
  auto function = decode_task_function<F>(g, message);
  F& f = function.first;
  const std::span<const std::byte> in = function.second;
  if constexpr (is_raw_chunk<F, T, star>()) {
    using R = std::remove_cvref_t<std::invoke_result_t<F&, T>>;
    const auto [n, data] = raw_vector_elements<T>(in);
    std::byte* results = raw_vector_at<R>(out, out.size(), n);
    for (std::size_t i = 0; i < n; ++i) {
      T item;
      std::memcpy(&item, data + i * sizeof(T), sizeof item);
      const R result = std::invoke(f, std::move(item));
      std::memcpy(results + i * sizeof(R), &result, sizeof result);
    }
  } else {
    auto items = from_bytes<std::vector<T>>(in);
    using R = chunk_result_t<F, T, star>;
    std::vector<R> results;
    results.reserve(items.size());
    for (T& item : items) results.push_back(call_item<F, T, star>(f, std::move(item)));
    to_bytes(results, out);
  }
}

}  // namespace mproc::detail
