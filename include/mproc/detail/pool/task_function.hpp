// What a pool task is (a function pointer, or a stateless callable), and the worker side
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
#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

template <class F>
inline constexpr bool is_function_pointer_v =
    std::conjunction_v<std::is_pointer<F>, std::is_function<std::remove_pointer_t<F>>>;

// What a pool can run: a function pointer, or a stateless callable (a lambda without
// captures) that the worker makes afresh. Workers call it by name, never through state.
template <class F>
concept task_function =
    is_function_pointer_v<F> || std::conjunction_v<std::is_class<F>, std::is_empty<F>, std::is_default_constructible<F>,
                                                   std::is_trivially_copyable<F>>;

// Fails to compile, saying why, for anything else.
template <class F>
consteval void check_task_function() {
  static_assert(task_function<F>,
                "mproc::pool runs a function pointer or a stateless callable (a lambda without captures): "
                "workers call it by name and cannot receive its state. Pass the state as task arguments.");
}

template <class F>
generic_function to_generic(F f) {
  if constexpr (is_function_pointer_v<F>) {
    return reinterpret_cast<generic_function>(f);
  } else {
    return nullptr;
  }
}

template <class F>
F from_generic(generic_function g) {
  if constexpr (is_function_pointer_v<F>) {
    return reinterpret_cast<F>(g);
  } else {
    return F{};
  }
}

// The worker side of apply: decode the arguments, call, encode the result.
template <class F, class... A>
void invoke_apply(generic_function g, std::span<const std::byte> in, std::vector<std::byte>& out) {
  auto args = decode_message<std::tuple<A...>>(in, "mproc::pool: a task's arguments");
  F f = from_generic<F>(g);
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

// Writes pool_core::task_header_bytes of room, then what to_bytes(std::vector<T>(items))
// writes, into `out`; returns the message size.
template <class T>
std::size_t encode_vector_after_header(std::span<const T> items, std::vector<std::byte>& out) {
  constexpr std::size_t header = pool_core::task_header_bytes;
  if constexpr (is_raw_vector_element_v<T>) {
    std::byte* elements = raw_vector_at<T>(out, header, items.size());
    if (!items.empty()) std::memcpy(elements, items.data(), items.size_bytes());
  } else {
    out.assign(header, std::byte{0});
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

// The worker side of a map chunk: items in, results out, in order. Numbers to numbers go
// from the message to the result message without a vector on either side.
template <class F, class T, bool star>
void invoke_chunk(generic_function g, std::span<const std::byte> in, std::vector<std::byte>& out) {
  F f = from_generic<F>(g);
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
    auto call = [&](T& item) -> decltype(auto) {
      if constexpr (star) {
        return std::apply(f, std::move(item));
      } else {
        return std::invoke(f, std::move(item));
      }
    };
    using R = std::remove_cvref_t<decltype(call(items.front()))>;
    std::vector<R> results;
    results.reserve(items.size());
    for (T& item : items) results.push_back(call(item));
    to_bytes(results, out);
  }
}

}  // namespace mproc::detail
