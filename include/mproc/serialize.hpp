// mproc's serialisation: how values cross processes (queues, pipes, pool arguments and results).
//
// Contract:
// - `to_bytes(v, out)` APPENDS to `out`: one format-version byte
//   (`serialization_format_version`), then v's encoding. What `out` held is kept, so a caller
//   that reuses one vector allocates nothing per message once it has grown. `to_bytes(v)`
//   returns a new vector. `from_bytes<T>(bytes)` decodes a T from the whole span, in place
//   (no copy of the buffer); every byte must be consumed.
// - Built in, with no other include: arithmetic types, enums with a fixed underlying type,
//   std::string, std::vector, std::array, std::pair, std::tuple, std::optional,
//   std::variant, std::map, std::unordered_map, std::set, std::unordered_set, std::deque,
//   std::list, std::chrono::duration, std::unique_ptr, std::shared_ptr / std::weak_ptr (and
//   their multi- variants, C arrays, nestings of all of these).
// - User types opt in exactly as for cereal: a member or free `serialize(Archive&)`, a
//   `save`/`load` pair, `save_minimal`/`load_minimal`, `cereal::base_class`, CEREAL_NVP
//   (the name is dropped), versioned functions (CEREAL_CLASS_VERSION). Types already written
//   for cereal work unchanged. Empty classes need no function at all. `serializable<T>` says
//   whether `T` (and, for the standard containers above, its elements) qualifies; to_bytes
//   and from_bytes of anything else fail to compile with a message saying what to do.
// - Enums need a fixed underlying type (`enum class E`, or `enum E : int`): for any other
//   enum a value outside the enumerators' range is undefined behaviour, which mproc could
//   not rule out when decoding foreign bytes.
// - Polymorphic pointers work as in cereal: include <cereal/types/polymorphic.hpp> and
//   CEREAL_REGISTER_TYPE each derived type (after including this header). A shared_ptr
//   back-reference must name an object of the same type as its first occurrence.
//
// Errors (all `mproc::serialization_error`, whose what() names the type, what was wrong and
// at which byte offset):
// - from_bytes: empty input; a version byte other than `serialization_format_version` (both
//   versions are named); truncated input; trailing bytes; a bool byte other than 0 or 1
//   (also inside arrays of bool); an element count larger than the bytes that remain; a bad
//   empty-value marker; nesting deeper than `serialization_max_depth`; a bad std::variant
//   index, an unknown or mistyped shared_ptr id, or any other cereal::Exception;
//   std::bad_alloc, std::length_error and any other exception thrown by a user's load
//   function. One error propagates unchanged: std::system_error, an OS failure while
//   decoding (no free descriptor for a received mproc handle: EMFILE). Never a crash, an
//   out-of-bounds read or undefined behaviour, provided user functions are themselves
//   safe: cereal::binary_data in a user's serialize copies raw bytes into whatever it is
//   given (use it only where every bit pattern is valid), and a user function that
//   recurses without going through the archive escapes the depth limit.
// - to_bytes: any exception thrown while encoding (a user's save, a valueless variant,
//   nesting deeper than `serialization_max_depth`, two shared_ptrs of different types to one
//   address) becomes a serialization_error wrapping its message, except std::bad_alloc,
//   which propagates unchanged. `out` is then restored to its previous size.
//
// Memory: every element of a container takes at least one byte (see the empty-value marker
// below), so a count larger than the bytes that remain is rejected before anything is
// allocated. Below that bound, std::vector, std::string, std::deque and std::list grow only
// as their elements actually decode, and vectors of memcpy types and strings check
// count × element size exactly; other containers (std::vector<bool>, std::unordered_set's
// buckets, ...) may allocate up to about sizeof(element) × the bytes that remain before
// failing.
//
// Thread safety: to_bytes and from_bytes may run concurrently on different buffers; each
// call uses its own archive, and an archive belongs to one thread. One caveat from cereal:
// its process-wide table of class versions is locked only when cereal is compiled with
// CEREAL_THREAD_SAFE=1, so the first encoding of a versioned type that has no
// CEREAL_CLASS_VERSION may race with another thread's unless that macro is defined, the
// same way, in every translation unit.
//
// Wire format (native byte order and sizes: both ends run on one machine and one build):
//   message            version:u8 (= 1), then the payload
//   arithmetic value   its object bytes (bool: one byte, 0 or 1)
//   enum               its underlying value
//   string, vector, deque, list, map, set, ...
//                      u64 element count, then the elements (maps: key, value, key, ...);
//                      strings and vectors of numbers or of memcpy types: one raw block
//   std::optional      bool "empty" (1: nullopt), then the value if not empty
//   std::variant       i32 index, then the alternative
//   std::unique_ptr    u8 non-null, then the pointee if non-null
//   std::shared_ptr    u32 id: 0 null; high bit set: first occurrence, pointee follows;
//                      else a back-reference to an earlier pointee of the same type
//   pair, tuple, array, members, base classes: their parts in order, nothing else
//   versioned class    u32 version before its first occurrence in the message
//   empty encoding     a class-type value that would encode to nothing (empty class,
//                      std::tuple<>, std::array<T, 0>, a save that writes nothing) is one
//                      byte 0 instead, so every container element takes at least one byte
// Values of `detail::is_memcpy_serializable_v` types encode as exactly their object bytes.
#pragma once

#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#if defined(__GLIBCXX__)
#include <cxxabi.h>  // abi::__forced_unwind: thread cancellation must unwind untouched
#endif

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/detail/serialize/archive.hpp"
#include "mproc/error.hpp"

namespace mproc {

// The first byte of every message. from_bytes rejects any other value.
inline constexpr std::uint8_t serialization_format_version = 1;

namespace detail {

// Encoding scratch space for a put or a task, reused so that it allocates nothing once
// warm. Valid until the thread's next encode.
inline std::vector<std::byte>& encode_buffer() {
  thread_local std::vector<std::byte> buffer;
  return buffer;
}

template <class T>
struct serial_ok;
template <class T>
inline constexpr bool serial_ok_v = serial_ok<T>::value;

// An element that a container default-constructs before loading into it.
template <class T>
struct serial_element_ok : std::conjunction<std::bool_constant<std::default_initializable<T>>, serial_ok<T>> {};

template <class... Ts>
struct serial_elements_ok : std::conjunction<serial_element_ok<Ts>...> {};

// The target of a smart pointer: default-constructible (possibly through cereal::access)
// or given a load_and_construct. Polymorphic targets are checked at run time, against
// cereal's registry of polymorphic types.
template <class T>
struct serial_pointee_ok
    : std::disjunction<std::is_polymorphic<T>,
                       std::conjunction<std::disjunction<cereal::traits::is_default_constructible<T>,
                                                         cereal::traits::has_load_and_construct<T, input_archive>>,
                                        serial_ok<T>>> {};

// What cereal itself can tell: T has exactly one way to be saved and one to be loaded by
// mproc's archives, or is an empty class (which needs none). It does not look inside.
template <class T>
constexpr bool shallow_serial_ok() {
  if constexpr (!std::is_object_v<T> || std::is_const_v<T> || std::is_volatile_v<T> || std::is_pointer_v<T> ||
                std::is_member_pointer_v<T> || std::is_null_pointer_v<T>) {
    return false;
  } else if constexpr (std::is_arithmetic_v<T>) {
    return true;
  } else if constexpr (std::is_enum_v<T>) {
    return fixed_enum<T>;
  } else if constexpr (std::is_array_v<T>) {
    return std::extent_v<T> != 0 && serial_ok_v<std::remove_extent_t<T>>;
  } else {
    namespace traits = cereal::traits;
    constexpr bool empty = std::is_empty_v<T>;
    return (traits::is_output_serializable<T, output_archive>::value ||
            (empty && !traits::has_invalid_output_versioning<T, output_archive>::value)) &&
           (traits::is_input_serializable<T, input_archive>::value ||
            (empty && !traits::has_invalid_input_versioning<T, input_archive>::value));
  }
}

// Deep: for the standard types serialize.hpp supports, the elements must qualify too.
template <class T>
struct serial_ok : std::bool_constant<shallow_serial_ok<T>()> {};
template <class T, class A>
struct serial_ok<std::vector<T, A>> : serial_element_ok<T> {};
template <class T, std::size_t N>
struct serial_ok<std::array<T, N>> : serial_element_ok<T> {};
template <class A, class B>
struct serial_ok<std::pair<A, B>> : serial_elements_ok<A, B> {};
template <class... Ts>
struct serial_ok<std::tuple<Ts...>> : serial_elements_ok<Ts...> {};
template <class T>
struct serial_ok<std::optional<T>> : serial_element_ok<T> {};
template <class... Ts>
struct serial_ok<std::variant<Ts...>> : serial_elements_ok<Ts...> {};
template <class K, class V, class C, class A>
struct serial_ok<std::map<K, V, C, A>> : serial_elements_ok<K, V> {};
template <class K, class V, class C, class A>
struct serial_ok<std::multimap<K, V, C, A>> : serial_elements_ok<K, V> {};
template <class K, class V, class H, class E, class A>
struct serial_ok<std::unordered_map<K, V, H, E, A>> : serial_elements_ok<K, V> {};
template <class K, class V, class H, class E, class A>
struct serial_ok<std::unordered_multimap<K, V, H, E, A>> : serial_elements_ok<K, V> {};
template <class K, class C, class A>
struct serial_ok<std::set<K, C, A>> : serial_element_ok<K> {};
template <class K, class C, class A>
struct serial_ok<std::multiset<K, C, A>> : serial_element_ok<K> {};
template <class K, class H, class E, class A>
struct serial_ok<std::unordered_set<K, H, E, A>> : serial_element_ok<K> {};
template <class K, class H, class E, class A>
struct serial_ok<std::unordered_multiset<K, H, E, A>> : serial_element_ok<K> {};
template <class T, class A>
struct serial_ok<std::deque<T, A>> : serial_element_ok<T> {};
template <class T, class A>
struct serial_ok<std::list<T, A>> : serial_element_ok<T> {};
template <class T, class D>
struct serial_ok<std::unique_ptr<T, D>>
    : std::conjunction<std::is_same<D, std::default_delete<T>>, serial_pointee_ok<T>> {};
template <class T>
struct serial_ok<std::shared_ptr<T>> : serial_pointee_ok<T> {};
template <class T>
struct serial_ok<std::weak_ptr<T>> : serial_pointee_ok<T> {};

template <class T>
std::string serial_prefix(const char* function) {
  return std::string("mproc::") + function + "<" + std::string(type_name<T>()) + ">: ";
}

// Called from a catch block: rethrows the exception in flight as a serialization_error,
// except std::bad_alloc and thread cancellation, which must stay what they are.
template <class T>
[[noreturn]] void rethrow_encode_error() {
  try {
    throw;
  } catch (const serialization_error& e) {
    throw serialization_error(serial_prefix<T>("to_bytes") + "cannot encode: " + e.what());
  } catch (const std::bad_alloc&) {
    throw;
#if defined(__GLIBCXX__)
  } catch (const abi::__forced_unwind&) {
    throw;
#endif
  } catch (const std::exception& e) {
    throw serialization_error(serial_prefix<T>("to_bytes") + "cannot encode: " + e.what());
  } catch (...) {
    throw serialization_error(serial_prefix<T>("to_bytes") + "cannot encode: a non-standard exception was thrown");
  }
}

// Called from a catch block while decoding with `ar`: rethrows as a serialization_error
// that names the offset reached.
template <class T>
[[noreturn]] void rethrow_decode_error(const input_archive& ar) {
  const auto where = [&ar] {
    return " at offset " + std::to_string(ar.position()) + " (input is " + std::to_string(ar.bytes().size()) +
           " bytes)";
  };
  try {
    throw;
  } catch (const serialization_error& e) {
    throw serialization_error(serial_prefix<T>("from_bytes") + e.what());
  } catch (const std::system_error&) {
    throw;  // the OS refused what decoding needed (a descriptor for a received handle)
#if defined(__GLIBCXX__)
  } catch (const abi::__forced_unwind&) {
    throw;
#endif
  } catch (const std::bad_alloc&) {
    throw serialization_error(serial_prefix<T>("from_bytes") + "decoding needs more memory than is available" +
                              where());
  } catch (const std::exception& e) {
    throw serialization_error(serial_prefix<T>("from_bytes") + "invalid input" + where() + ": " + e.what());
  } catch (...) {
    throw serialization_error(serial_prefix<T>("from_bytes") + "invalid input" + where() +
                              ": a non-standard exception was thrown");
  }
}

}  // namespace detail

// T can be encoded by to_bytes and decoded by from_bytes: an object type, not const,
// default-constructible and move-constructible (from_bytes builds and returns one), that
// cereal can save with `output_archive` and load with `input_archive`; for the standard
// containers, pairs, tuples, optionals, variants and smart pointers, the same holds for
// their elements. Other class templates are checked one level deep (as cereal does).
template <class T>
concept serializable = std::is_object_v<T> && !std::is_const_v<T> && !std::is_volatile_v<T> && !std::is_array_v<T> &&
                       std::default_initializable<T> && std::move_constructible<T> && detail::serial_ok_v<T>;

#define MPROC_DETAIL_NOT_SERIALIZABLE_MESSAGE                                                 \
  "T is not serializable: give T a cereal serialize(Archive&) member or free function (or a " \
  "save/load pair), make every member, base class and element serializable too, make T "      \
  "default-constructible, and give enums a fixed underlying type (enum E : int). See "        \
  "<mproc/serialize.hpp>."
#define MPROC_DETAIL_UNFIXED_ENUM_MESSAGE                                                    \
  "T is an enum without a fixed underlying type: decoding a value outside its enumerators' " \
  "range would be undefined behaviour. Declare it with one, e.g. enum color : int { ... } "  \
  "or enum class color { ... }."

// Appends the version byte and the encoding of `value` to `out`.
// Throws serialization_error if `value` cannot be encoded (then `out` keeps its old size);
// std::bad_alloc if `out` cannot grow.
template <class T>
void to_bytes(const T& value, std::vector<std::byte>& out) {
  static_assert(!detail::unfixed_enum<T>, "mproc::to_bytes: " MPROC_DETAIL_UNFIXED_ENUM_MESSAGE);
  static_assert(serializable<T> || detail::unfixed_enum<T>, "mproc::to_bytes: " MPROC_DETAIL_NOT_SERIALIZABLE_MESSAGE);
  if constexpr (serializable<T>) {
    const std::size_t old_size = out.size();
    try {
      out.push_back(std::byte{serialization_format_version});
      if constexpr (detail::is_memcpy_serializable_v<T>) {
        const auto* p = reinterpret_cast<const std::byte*>(std::addressof(value));
        out.insert(out.end(), p, p + sizeof(T));
      } else {
        output_archive ar(out);
        ar(value);
      }
    } catch (...) {
      out.resize(old_size);
      detail::rethrow_encode_error<T>();
    }
  }
}

// The version byte and the encoding of `value`, in a new vector.
template <class T>
std::vector<std::byte> to_bytes(const T& value) {
  std::vector<std::byte> out;
  to_bytes(value, out);
  return out;
}

// Decodes a T from `bytes`, which must hold exactly one message (version byte, encoding).
// Reads the span in place. Throws serialization_error when the bytes do not decode (see
// the contract above); std::bad_alloc only if T's default constructor throws it.
template <class T>
T from_bytes(std::span<const std::byte> bytes) {
  static_assert(!detail::unfixed_enum<T>, "mproc::from_bytes: " MPROC_DETAIL_UNFIXED_ENUM_MESSAGE);
  static_assert(serializable<T> || detail::unfixed_enum<T>,
                "mproc::from_bytes: " MPROC_DETAIL_NOT_SERIALIZABLE_MESSAGE);
  if constexpr (serializable<T>) {
    if (bytes.empty()) {
      throw serialization_error(detail::serial_prefix<T>("from_bytes") +
                                "empty input: expected the format version byte");
    }
    const auto version = std::to_integer<unsigned>(bytes[0]);
    if (version != serialization_format_version) {
      throw serialization_error(detail::serial_prefix<T>("from_bytes") + "unsupported format version " +
                                std::to_string(version) + " at offset 0 (this build reads version " +
                                std::to_string(unsigned{serialization_format_version}) + ")");
    }
    T value{};
    if constexpr (detail::is_memcpy_serializable_v<T>) {
      if (bytes.size() == 1 + sizeof(T)) {
        std::memcpy(std::addressof(value), bytes.data() + 1, sizeof(T));
        return value;
      }
      // Wrong size: the archive below reports it as it would for any type.
    }
    input_archive ar(bytes);
    try {
      std::byte skipped_version{};
      ar.load_binary(&skipped_version, 1);
      ar(value);
      ar.expect_end();
    } catch (...) {
      detail::rethrow_decode_error<T>(ar);
    }
    return value;
  } else {
    std::terminate();  // unreachable: the static_assert above failed
  }
}

#undef MPROC_DETAIL_NOT_SERIALIZABLE_MESSAGE
#undef MPROC_DETAIL_UNFIXED_ENUM_MESSAGE

namespace detail {

// Flat types: std::vector and std::basic_string of numbers (not bool). Their encoding is the
// version byte, a u64 element count, then the elements' bytes as they lie in memory, so a
// queue can put a big one straight from the value and take it straight into a new one,
// without an encoded copy on either side (queue.hpp).
template <class T>
struct is_flat : std::false_type {};
template <class E, class A>
struct is_flat<std::vector<E, A>> : std::bool_constant<std::is_arithmetic_v<E> && !std::is_same_v<E, bool>> {};
template <class C, class Traits, class A>
struct is_flat<std::basic_string<C, Traits, A>> : std::bool_constant<std::is_arithmetic_v<C>> {};
template <class T>
inline constexpr bool is_flat_v = is_flat<T>::value;

inline constexpr std::size_t flat_header_bytes = 1 + sizeof(std::uint64_t);
// A memcpy-serializable value's own bytes, the encoding a queue gives it (queue.hpp).
template <class T>
  requires is_memcpy_serializable_v<T> std::span<const std::byte, sizeof(T)> raw_bytes(const T& value)
noexcept {
  return std::span<const std::byte, sizeof(T)>(reinterpret_cast<const std::byte*>(std::addressof(value)), sizeof(T));
}
// serialization_error, naming `who`, unless `bytes` are `size` bytes: what a T travelling
// as its own bytes takes.
template <class T>
void require_raw_size(std::span<const std::byte> bytes, std::size_t size, const char* who) {
  if (bytes.size() != size) {
    throw serialization_error(std::string(who) + ": a message of " + std::to_string(bytes.size()) +
                              " bytes cannot hold a " + std::string(type_name<T>()) + ", which is " +
                              std::to_string(size) + " bytes; was the value put as another type?");
  }
}
// The value whose own bytes `bytes` are; serialization_error, naming `who`, for any other
// size.
template <class T>
  requires is_memcpy_serializable_v<T> T from_raw_bytes(std::span<const std::byte> bytes, const char* who) {
    require_raw_size<T>(bytes, sizeof(T), who);
    T value;
    std::memcpy(std::addressof(value), bytes.data(), sizeof(T));
    return value;
  }

// Tuples of memcpy-serializable values (a task's arguments, say): encoded as their values'
// own bytes one after another, without a version byte or cereal's archive.
template <class T>
struct is_raw_tuple : std::false_type {};
template <class... T>
struct is_raw_tuple<std::tuple<T...>> : std::bool_constant<(is_memcpy_serializable_v<T> && ...)> {
  static constexpr std::size_t size = (std::size_t{0} + ... + sizeof(T));
};

// A value as mproc sends it between its own processes (queue messages, task arguments and
// results): a memcpy-serializable value, or a tuple of them, as its own bytes; anything
// else as to_bytes writes it. Both ends run the same binary, so nothing tells the two
// apart: decode_message<T> reads what encode_message<T> wrote.
template <class T>
void encode_message(const T& value, std::vector<std::byte>& out) {
  if constexpr (is_memcpy_serializable_v<T>) {
    const auto bytes = raw_bytes(value);
    out.insert(out.end(), bytes.begin(), bytes.end());
  } else if constexpr (is_raw_tuple<T>::value) {
    std::apply([&](const auto&... v) { (encode_message(v, out), ...); }, value);
  } else {
    to_bytes(value, out);
  }
}
// The value encode_message<T> wrote as `bytes`; serialization_error, naming `who`, for
// bytes that are not one.
template <class T>
T decode_message(std::span<const std::byte> bytes, const char* who) {
  if constexpr (is_memcpy_serializable_v<T>) {
    return from_raw_bytes<T>(bytes, who);
  } else if constexpr (is_raw_tuple<T>::value) {
    require_raw_size<T>(bytes, is_raw_tuple<T>::size, who);
    T value;
    std::size_t at = 0;
    std::apply(
        [&](auto&... v) { ((std::memcpy(std::addressof(v), bytes.data() + at, sizeof v), at += sizeof v), ...); },
        value);
    return value;
  } else {
    return from_bytes<T>(bytes);
  }
}

// What to_bytes writes before a flat value's elements.
template <class T>
std::array<std::byte, flat_header_bytes> flat_header(const T& value) {
  static_assert(is_flat_v<T>);
  std::array<std::byte, flat_header_bytes> header{};
  header[0] = std::byte{serialization_format_version};
  const std::uint64_t count = value.size();
  std::memcpy(header.data() + 1, &count, sizeof count);
  return header;
}

// The elements' bytes of a flat value: what to_bytes writes after flat_header.
template <class T>
std::span<const std::byte> flat_elements(const T& value) {
  static_assert(is_flat_v<T>);
  return {reinterpret_cast<const std::byte*>(value.data()), value.size() * sizeof(typename T::value_type)};
}

// Elements that may be read from bytes where they lie (char types alias anything), so a
// flat value of them is built from the message's pieces in place.
template <class E>
inline constexpr bool is_char_element_v =
    std::is_same_v<E, char> || std::is_same_v<E, unsigned char> || std::is_same_v<E, signed char>;

// Decodes a flat T from a message of `size` bytes, straight into the new value: `read(into,
// n)` copies the next n bytes, and `read_piece(max)` hands over the next bytes in place
// (between 1 and max of them, as a std::span<const std::byte> valid until the next call).
// The value is reserved and appended to, never zero-filled first (which cost a 1 MiB
// message a third of its get): char elements straight from the pieces, others through a
// buffer on the stack, since the message's bytes need not be aligned for them.
// serialization_error (nothing more read) unless the message is one flat T;
// std::bad_alloc when the value cannot be allocated.
template <class T, class Read, class ReadPiece>
T read_flat(std::size_t size, Read&& read, ReadPiece&& read_piece) {
  static_assert(is_flat_v<T>);
  using E = typename T::value_type;
  if (size < flat_header_bytes) {  // not one: from_bytes says why
    std::vector<std::byte> bytes(size);
    read(bytes.data(), size);
    return from_bytes<T>(bytes);
  }
  const std::size_t n = (size - flat_header_bytes) / sizeof(E);
  if (n * sizeof(E) != size - flat_header_bytes) {
    throw serialization_error(serial_prefix<T>("from_bytes") + "a message of " + std::to_string(size) +
                              " bytes is not a whole number of elements");
  }
  std::array<std::byte, flat_header_bytes> header;
  read(header.data(), header.size());
  std::uint64_t count = 0;
  std::memcpy(&count, header.data() + 1, sizeof count);
  if (std::to_integer<unsigned>(header[0]) != serialization_format_version || count != n) {
    std::vector<std::byte> prefix(header.begin(), header.end());
    (void)from_bytes<T>(prefix);  // throws the error from_bytes gives for such a message
    throw serialization_error(serial_prefix<T>("from_bytes") + "element count " + std::to_string(count) +
                              " does not match the message's " + std::to_string(n) + " elements");
  }
  T value;
  reserve_big(value, n);
  if constexpr (is_char_element_v<E>) {
    while (value.size() < n) {
      const std::span<const std::byte> piece = read_piece(n - value.size());
      const auto* first = reinterpret_cast<const E*>(piece.data());
      value.insert(value.end(), first, first + piece.size());
    }
  } else {
    E buffer[std::max<std::size_t>(1, 8192 / sizeof(E))];
    constexpr std::size_t buffer_elements = sizeof buffer / sizeof(E);
    while (value.size() < n) {
      const std::size_t k = std::min(buffer_elements, n - value.size());
      read(reinterpret_cast<std::byte*>(buffer), k * sizeof(E));
      value.insert(value.end(), buffer, buffer + k);
    }
  }
  return value;
}

}  // namespace detail

}  // namespace mproc
