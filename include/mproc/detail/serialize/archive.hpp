// mproc's binary cereal archives over a byte buffer. Include <mproc/serialize.hpp>, which
// documents the contract and the wire format; this header holds the machinery.
//
// `output_archive` appends to a caller's std::vector<std::byte>; `input_archive` reads a
// std::span<const std::byte> in place and checks every read against the bytes that remain.
// Both are real cereal archives: the overloads below (found by ADL as hidden friends, and
// more specialised than cereal's generic ones) give them
// - arithmetic types as their native bytes (one memcpy each), `bool` as one byte 0 or 1
//   (also inside arrays of bool, which cereal sends as raw bytes);
// - cereal::BinaryData as raw bytes (contiguous arithmetic data: one memcpy);
// - cereal::SizeTag as a uint64 element count, rejected on load when it exceeds the bytes
//   that remain, before any container is resized;
// - cereal::NameValuePair as its value alone (names are dropped, as in cereal's binary
//   archive);
// - one marker byte (0) for every value of class type whose encoding would otherwise be
//   empty (empty classes, std::tuple<>, std::array<T, 0>, a user type whose save writes
//   nothing), so that every element of a container takes at least one byte and the count
//   check above never rejects valid input; both sides see alike whether a value's own
//   encoding was empty, so the marker needs no flag;
// - a nesting limit (`serialization_max_depth`), so hostile input cannot exhaust the stack;
// - enums with a fixed underlying type; enums without one are rejected at compile time,
//   since loading a value outside their enumerators' range is undefined behaviour;
// - std::shared_ptr/std::weak_ptr whose back-references are checked for type, so forged ids
//   cannot alias objects of different types (cereal's own loader trusts them);
// - std::vector, std::basic_string, std::deque and std::list loaders that allocate in
//   proportion to the bytes actually present, not to a forged count;
// - std::multimap and std::multiset loaders that keep the order of equivalent keys.
#pragma once

#include <cereal/cereal.hpp>
#include <cereal/types/memory.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/error.hpp"

namespace mproc {

// The deepest nesting of class-type values (containers, optionals, smart pointers, user
// structs, ...) an archive accepts, counting each level once. Deeper input throws
// serialization_error instead of exhausting the stack; encoding a deeper value throws too,
// so the sender learns of it rather than the receiver.
inline constexpr std::size_t serialization_max_depth = 1000;

namespace detail {

template <class T>
inline constexpr bool is_cereal_wrapper_v = false;
template <class T>
inline constexpr bool is_cereal_wrapper_v<cereal::NameValuePair<T>> = true;
template <class T>
inline constexpr bool is_cereal_wrapper_v<cereal::SizeTag<T>> = true;
template <class T>
inline constexpr bool is_cereal_wrapper_v<cereal::BinaryData<T>> = true;
template <class K, class V>
inline constexpr bool is_cereal_wrapper_v<cereal::MapItem<K, V>> = true;
template <class T>
inline constexpr bool is_cereal_wrapper_v<cereal::memory_detail::PtrWrapper<T>> = true;

// Class types nest; cereal's own wrappers around a value do not add a level.
template <class T>
inline constexpr bool counts_depth_v = std::is_class_v<T> && !is_cereal_wrapper_v<T>;

// An enum with a fixed underlying type (every scoped enum, and `enum E : int`) can hold any
// value of that type; C++17 allows list-initialising exactly those from an integer.
template <class E>
concept fixed_enum = std::is_enum_v<E> && requires {
  E{std::underlying_type_t<E>{}};
};
template <class E>
concept unfixed_enum = std::is_enum_v<E> && !fixed_enum<E>;

template <class T>
struct memcpy_serializable
    : std::bool_constant<(std::is_arithmetic_v<T> && !std::is_same_v<std::remove_cv_t<T>, bool>) || fixed_enum<T>> {};
template <class T, std::size_t N>
struct memcpy_serializable<std::array<T, N>>
    : std::bool_constant<N != 0 && sizeof(std::array<T, N>) == N * sizeof(T) && memcpy_serializable<T>::value> {};

// True when a value's encoding is exactly its object representation and every byte string
// of that size is a valid value: arithmetic types except bool, enums with a fixed
// underlying type, and non-empty std::arrays of those. The queue copies these directly.
template <class T>
inline constexpr bool is_memcpy_serializable_v = memcpy_serializable<T>::value;

// The name of T as the compiler spells it, for error messages.
template <class T>
constexpr std::string_view type_name() noexcept {
  constexpr std::string_view f = __PRETTY_FUNCTION__;  // "... [with T = int; ...]" or "[T = int]"
  constexpr std::size_t key = f.find("T = ");
  if constexpr (key == std::string_view::npos) {
    return "T";
  } else {
    constexpr std::size_t semi = f.find("; ", key);
    constexpr std::size_t end = semi != std::string_view::npos ? semi : f.rfind(']');
    return f.substr(key + 4, end - (key + 4));
  }
}

inline std::string byte_hex(unsigned value) {
  constexpr std::string_view digits = "0123456789abcdef";
  std::string s = "0x";
  s += digits[(value >> 4) & 0xfu];
  s += digits[value & 0xfu];
  return s;
}

}  // namespace detail

// A cereal output archive that appends the encoding to a caller's byte vector. It never
// clears the vector, so a caller that reuses one allocates nothing once it has grown.
// Not thread-safe; the vector must outlive the archive.
class output_archive : public cereal::OutputArchive<output_archive, cereal::AllowEmptyClassElision> {
 public:
  explicit output_archive(std::vector<std::byte>& out)
      : cereal::OutputArchive<output_archive, cereal::AllowEmptyClassElision>(this), out_(&out) {}
  output_archive(const output_archive&) = delete;
  output_archive& operator=(const output_archive&) = delete;

  // Appends `size` raw bytes. Throws std::bad_alloc (or std::length_error) if the vector
  // cannot grow.
  void save_binary(const void* data, std::size_t size) {
    if (size == 0) return;
    const auto* p = static_cast<const std::byte*>(data);
    out_->insert(out_->end(), p, p + size);
  }

  std::vector<std::byte>& buffer() noexcept { return *out_; }

 private:
  // Every class-type value: nesting depth, and where its encoding starts.
  void enter() {
    if (depth_ == serialization_max_depth) {
      throw serialization_error("value nests deeper than " + std::to_string(serialization_max_depth) +
                                " levels (mproc::serialization_max_depth)");
    }
    starts_[depth_++] = out_->size();
  }
  void leave() {
    if (out_->size() == starts_[--depth_]) {
      constexpr std::byte marker{0};
      save_binary(&marker, 1);
    }
  }

  // Remembers the type behind each shared_ptr id, so that two shared_ptrs of different
  // types at one address (which the decoder would refuse) fail here, at the sender.
  template <class T>
  void check_shared_type(std::uint32_t id) {
    const std::uint32_t stripped = id & ~cereal::detail::msb_32bit;
    if (stripped == 0) return;
    if ((id & cereal::detail::msb_32bit) != 0) {
      shared_types_[stripped] = &typeid(T);
    } else if (const auto it = shared_types_.find(stripped); it == shared_types_.end() || *it->second != typeid(T)) {
      throw serialization_error("a std::shared_ptr<" + std::string(detail::type_name<T>()) +
                                "> points to an object already written as another type");
    }
  }

  // --- cereal glue, found by argument-dependent lookup -------------------------------------

  template <class T>
  friend void prologue(output_archive& ar, const T&) {
    if constexpr (detail::counts_depth_v<T>) ar.enter();
  }

  template <class T>
  friend void epilogue(output_archive& ar, const T&) {
    if constexpr (detail::counts_depth_v<T>) ar.leave();
  }

  // cereal would copy sizeof(array) == 1 byte from array.data() == nullptr; the marker
  // written by leave() stands for the array instead.
  template <class T>
  friend void CEREAL_SAVE_FUNCTION_NAME(output_archive&, const std::array<T, 0>&) {}

  template <class T>
    requires std::is_arithmetic_v<T>
  friend void CEREAL_SAVE_FUNCTION_NAME(output_archive& ar, const T& value) {
    static_assert(!std::is_same_v<T, bool> || sizeof(bool) == 1);
    ar.save_binary(std::addressof(value), sizeof(T));
  }

  template <class T>
  friend void CEREAL_SAVE_FUNCTION_NAME(output_archive& ar, const cereal::BinaryData<T>& data) {
    ar.save_binary(data.data, static_cast<std::size_t>(data.size));
  }

  template <class T>
  friend void CEREAL_SAVE_FUNCTION_NAME(output_archive& ar, const cereal::SizeTag<T>& tag) {
    const cereal::size_type n = tag.size;
    ar.save_binary(&n, sizeof n);
  }

  template <class T>
  friend void CEREAL_SAVE_FUNCTION_NAME(output_archive& ar, const cereal::NameValuePair<T>& nvp) {
    ar(nvp.value);
  }

  // Enums without a fixed underlying type: see detail::unfixed_enum.
  template <detail::unfixed_enum E>
  friend void CEREAL_SAVE_MINIMAL_FUNCTION_NAME(const output_archive&, const E&) = delete;

  // A vector of non-arithmetic elements whose encoding is their bytes (std::array of
  // numbers, enums): one memcpy, the same bytes as element by element.
  template <class T, class A>
    requires(detail::is_memcpy_serializable_v<T> && !std::is_arithmetic_v<T>)
  friend void CEREAL_SAVE_FUNCTION_NAME(output_archive& ar, const std::vector<T, A>& v) {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
    ar.save_binary(v.data(), v.size() * sizeof(T));
  }

  template <class T>
  friend void CEREAL_SAVE_FUNCTION_NAME(output_archive& ar,
                                        const cereal::memory_detail::PtrWrapper<const std::shared_ptr<T>&>& wrapper) {
    const auto& ptr = wrapper.ptr;
    std::uint32_t id = ar.registerSharedPointer(ptr);
    ar.check_shared_type<std::remove_cv_t<T>>(id);
    ar(id);
    if ((id & cereal::detail::msb_32bit) != 0) ar(*ptr);
  }

  std::vector<std::byte>* out_;
  std::size_t depth_ = 0;
  std::size_t starts_[serialization_max_depth];  // only [0, depth_) is ever read
  std::unordered_map<std::uint32_t, const std::type_info*> shared_types_;
};

// A cereal input archive that reads a byte span in place (no copy). Every read is checked
// against the bytes that remain; any violation throws mproc::serialization_error naming
// the offset. Exceptions from cereal itself (cereal::Exception) or from user load functions
// pass through unchanged; from_bytes turns them into serialization_error. The span must
// outlive the archive. Not thread-safe.
class input_archive : public cereal::InputArchive<input_archive, cereal::AllowEmptyClassElision> {
 public:
  explicit input_archive(std::span<const std::byte> bytes)
      : cereal::InputArchive<input_archive, cereal::AllowEmptyClassElision>(this), bytes_(bytes) {}
  input_archive(const input_archive&) = delete;
  input_archive& operator=(const input_archive&) = delete;

  // Copies the next `size` bytes to `data`. Throws serialization_error if fewer remain.
  void load_binary(void* data, std::size_t size) {
    if (size > remaining()) {
      fail("truncated input: need " + std::to_string(size) + " bytes but only " + std::to_string(remaining()) +
           " remain");
    }
    if (size != 0) std::memcpy(data, bytes_.data() + pos_, size);
    pos_ += size;
  }

  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  std::size_t position() const noexcept { return pos_; }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }

  // Throws serialization_error unless every byte was consumed.
  void expect_end() const {
    if (remaining() != 0) {
      fail(std::to_string(remaining()) + " trailing bytes after the value");
    }
  }

  // Throws serialization_error("<what> at offset <position> (input is <n> bytes)").
  [[noreturn]] void fail(const std::string& what) const { fail_at(pos_, what); }
  [[noreturn]] void fail_at(std::size_t offset, const std::string& what) const {
    throw serialization_error(what + " at offset " + std::to_string(offset) + " (input is " +
                              std::to_string(bytes_.size()) + " bytes)");
  }

 private:
  // Every class-type value: nesting depth, and where its encoding starts.
  void enter() {
    if (depth_ == serialization_max_depth) {
      fail("input nests deeper than " + std::to_string(serialization_max_depth) +
           " levels (mproc::serialization_max_depth)");
    }
    starts_[depth_++] = pos_;
  }
  void leave() {
    if (pos_ == starts_[--depth_]) {
      unsigned char marker = 0;
      load_binary(&marker, 1);
      if (marker != 0) fail_at(pos_ - 1, "invalid empty-value marker " + detail::byte_hex(marker));
    }
  }

  // Reads a count written by the output archive's SizeTag and checks that `n` elements of
  // at least `min_bytes` bytes each fit in what remains.
  std::size_t load_count(std::size_t min_bytes) {
    const std::size_t at = pos_;
    cereal::size_type n = 0;
    load_binary(&n, sizeof n);
    if (n > remaining() / min_bytes) {
      fail_at(at, "element count " + std::to_string(n) +
                      (min_bytes == 1 ? std::string() : " of " + std::to_string(min_bytes) + "-byte elements") +
                      " does not fit in the " + std::to_string(remaining()) + " bytes that follow it");
    }
    return static_cast<std::size_t>(n);
  }

  template <class T>
  void register_shared(std::uint32_t id, std::shared_ptr<T> ptr) {
    shared_[id & ~cereal::detail::msb_32bit] = {&typeid(T), std::move(ptr)};
  }

  template <class T>
  std::shared_ptr<T> find_shared(std::uint32_t id, std::size_t at) const {
    if (id == 0) return nullptr;
    const auto it = shared_.find(id);
    if (it == shared_.end()) {
      fail_at(at, "std::shared_ptr refers to unknown id " + std::to_string(id));
    }
    if (*it->second.type != typeid(T)) {
      fail_at(at, "std::shared_ptr<" + std::string(detail::type_name<T>()) + "> refers to id " + std::to_string(id) +
                      ", an object of another type");
    }
    return std::static_pointer_cast<T>(it->second.ptr);
  }

  // Containers: a checked count, then memory in proportion to the bytes really present.
  template <class C>
  void load_sequence(C& c) {
    using T = typename C::value_type;
    const std::size_t n = load_count(1);
    c.clear();
    if constexpr (requires { c.reserve(n); }) {
      c.reserve(std::min(n, std::max<std::size_t>(1, remaining() / sizeof(T))));
    }
    for (std::size_t i = 0; i < n; ++i) (*this)(c.emplace_back());
  }

  template <class C>
  void load_contiguous(C& c) {
    using T = typename C::value_type;
    const std::size_t n = load_count(sizeof(T));
    detail::resize_big(c, n);
    load_binary(c.data(), n * sizeof(T));
  }

  // --- cereal glue, found by argument-dependent lookup -------------------------------------

  template <class T>
  friend void prologue(input_archive& ar, const T&) {
    if constexpr (detail::counts_depth_v<T>) ar.enter();
  }

  template <class T>
  friend void epilogue(input_archive& ar, const T&) {
    if constexpr (detail::counts_depth_v<T>) ar.leave();
  }

  template <class T>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive&, std::array<T, 0>&) {}

  template <class T>
    requires std::is_arithmetic_v<T>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, T& value) {
    if constexpr (std::is_same_v<T, bool>) {
      static_assert(sizeof(bool) == 1);
      unsigned char b = 0;
      ar.load_binary(&b, 1);
      if (b > 1) ar.fail_at(ar.pos_ - 1, "invalid bool byte " + detail::byte_hex(b));
      value = b != 0;
    } else {
      ar.load_binary(std::addressof(value), sizeof(T));
    }
  }

  // Raw bytes. cereal also sends arrays of bool this way (std::array<bool, N>, bool[N]):
  // their bytes are checked before they become bools.
  template <class T>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, cereal::BinaryData<T>& data) {
    using element = std::remove_cv_t<std::remove_all_extents_t<std::remove_pointer_t<std::decay_t<T>>>>;
    const auto size = static_cast<std::size_t>(data.size);
    if constexpr (std::is_same_v<element, bool>) {
      if (size <= ar.remaining()) {
        for (std::size_t i = 0; i < size; ++i) {
          const auto b = std::to_integer<unsigned>(ar.bytes_[ar.pos_ + i]);
          if (b > 1) ar.fail_at(ar.pos_ + i, "invalid bool byte " + detail::byte_hex(b));
        }
      }
    }
    ar.load_binary(data.data, size);
  }

  template <class T>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, cereal::SizeTag<T>& tag) {
    using U = std::remove_cvref_t<decltype(tag.size)>;
    static_assert(std::is_integral_v<U> && sizeof(U) <= sizeof(cereal::size_type));
    const std::size_t at = ar.pos_;
    const std::size_t n = ar.load_count(1);
    if (static_cast<std::uint64_t>(n) > static_cast<std::uint64_t>(std::numeric_limits<U>::max())) {
      ar.fail_at(at, "element count " + std::to_string(n) + " does not fit its size type");
    }
    tag.size = static_cast<U>(n);
  }

  template <class T>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, cereal::NameValuePair<T>& nvp) {
    ar(nvp.value);
  }

  // Enums: with a fixed underlying type every value is valid; without one, a value outside
  // the enumerators' range is undefined behaviour, and mproc cannot know that range.
  template <detail::fixed_enum E>
  friend void CEREAL_LOAD_MINIMAL_FUNCTION_NAME(const input_archive&, E& e, const std::underlying_type_t<E>& value) {
    e = static_cast<E>(value);
  }
  template <detail::unfixed_enum E>
  friend void CEREAL_LOAD_MINIMAL_FUNCTION_NAME(const input_archive&, E&, const std::underlying_type_t<E>&) = delete;

  template <class T, class A>
    requires(!std::is_same_v<T, bool>)
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, std::vector<T, A>& v) {
    if constexpr (detail::is_memcpy_serializable_v<T>) {
      ar.load_contiguous(v);
    } else {
      ar.load_sequence(v);
    }
  }

  template <class C, class Traits, class A>
    requires std::is_arithmetic_v<C>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, std::basic_string<C, Traits, A>& s) {
    ar.load_contiguous(s);
  }

  template <class T, class A>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, std::deque<T, A>& d) {
    ar.load_sequence(d);
  }

  template <class T, class A>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, std::list<T, A>& l) {
    ar.load_sequence(l);
  }

  // cereal inserts each element before the previous one it inserted, which reverses runs
  // of equivalent keys; appending at the end keeps their order.
  template <class K, class V, class C, class A>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, std::multimap<K, V, C, A>& m) {
    const std::size_t n = ar.load_count(1);
    m.clear();
    for (std::size_t i = 0; i < n; ++i) {
      K key{};
      V value{};
      ar(cereal::make_map_item(key, value));
      m.emplace_hint(m.end(), std::move(key), std::move(value));
    }
  }

  template <class K, class C, class A>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar, std::multiset<K, C, A>& s) {
    const std::size_t n = ar.load_count(1);
    s.clear();
    for (std::size_t i = 0; i < n; ++i) {
      K key{};
      ar(key);
      s.emplace_hint(s.end(), std::move(key));
    }
  }

  // cereal's shared_ptr loader, with typed back-references (a forged id must not alias an
  // object of another type) and, for load_and_construct types, registration only once the
  // object is constructed (so no reference to unconstructed storage escapes).
  template <class T>
  friend void CEREAL_LOAD_FUNCTION_NAME(input_archive& ar,
                                        cereal::memory_detail::PtrWrapper<std::shared_ptr<T>&>& wrapper) {
    using U = std::remove_cv_t<T>;
    const std::size_t at = ar.pos_;
    std::uint32_t id = 0;
    ar(id);
    if ((id & cereal::detail::msb_32bit) == 0) {
      wrapper.ptr = ar.find_shared<U>(id, at);
    } else if constexpr (cereal::traits::has_load_and_construct<T, input_archive>::value) {
      struct alignas(U) storage {
        std::byte bytes[sizeof(U)];
      };
      auto valid = std::make_shared<bool>(false);
      std::shared_ptr<U> ptr(reinterpret_cast<U*>(new storage()), [valid](U* p) {
        if (*valid) p->~U();
        delete reinterpret_cast<storage*>(p);
      });
      cereal::memory_detail::loadAndConstructSharedPtr(ar, ptr.get(),
                                                       typename cereal::traits::has_shared_from_this<U>::type());
      *valid = true;
      ar.register_shared(id, ptr);
      wrapper.ptr = std::move(ptr);
    } else {
      std::shared_ptr<U> ptr(cereal::detail::Construct<U, input_archive>::load_andor_construct());
      ar.register_shared(id, ptr);  // before the data, so cycles back to it resolve
      ar(*ptr);
      wrapper.ptr = std::move(ptr);
    }
  }

  struct shared_entry {
    const std::type_info* type = nullptr;
    std::shared_ptr<void> ptr;
  };

  std::span<const std::byte> bytes_;
  std::size_t pos_ = 0;
  std::size_t depth_ = 0;
  std::size_t starts_[serialization_max_depth];  // only [0, depth_) is ever read
  std::unordered_map<std::uint32_t, shared_entry> shared_;
};

}  // namespace mproc

CEREAL_REGISTER_ARCHIVE(mproc::output_archive)
CEREAL_REGISTER_ARCHIVE(mproc::input_archive)
CEREAL_SETUP_ARCHIVE_TRAITS(mproc::input_archive, mproc::output_archive)
