// Fuzz target: the message decoder, mproc::from_bytes, over representative types.
//
// Input: one byte choosing the type, then the message (version byte and encoding), as a
// queue, pipe or pool would hand it to from_bytes.
// Promises checked:
// - from_bytes returns a value or throws mproc::serialization_error, nothing else (no
//   other exception, no crash, no sanitizer report, no huge allocation);
// - a value it returns encodes again (to_bytes does not throw), that encoding decodes, and
//   encoding is then stable: the same bytes again (the same value, for unordered
//   containers, whose order may differ).
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "fuzz_target.hpp"
#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

namespace serialize_fuzz {

enum class color : std::uint8_t { red, green, blue };

struct point {
  double x = 0;
  double y = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(x, y);
  }
};

struct record {
  std::uint32_t id = 0;
  bool active = false;
  std::string name;
  std::vector<double> samples;
  std::optional<std::map<std::string, int>> tags;
  std::variant<std::monostate, int, std::string, std::vector<point>> payload;
  color shade = color::red;
  std::chrono::milliseconds age{0};
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, active, name, samples, tags, payload, shade, age);
  }
};

struct node {  // recursion: nesting as deep as the input asks
  int value = 0;
  std::vector<node> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
};

struct chain {
  std::int16_t value = 0;
  std::unique_ptr<chain> next;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, next);
  }
};

struct shared_parts {  // back-references, typed
  std::shared_ptr<std::string> a;
  std::shared_ptr<std::string> b;
  std::shared_ptr<std::vector<int>> c;
  std::weak_ptr<std::vector<int>> d;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(a, b, c, d);
  }
};

struct versioned {  // save/load pair with a class version
  int a = 0;
  std::string b;
  template <class Archive>
  void save(Archive& ar, const std::uint32_t version) const {
    ar(a);
    if (version >= 2) ar(b);
  }
  template <class Archive>
  void load(Archive& ar, const std::uint32_t version) {
    ar(a);
    if (version >= 2) ar(b);
  }
};

struct minimal {  // save_minimal / load_minimal
  std::int32_t value = 0;
  template <class Archive>
  std::int32_t save_minimal(const Archive&) const {
    return value;
  }
  template <class Archive>
  void load_minimal(const Archive&, const std::int32_t& v) {
    value = v;
  }
};

struct empty {};

}  // namespace serialize_fuzz

CEREAL_CLASS_VERSION(serialize_fuzz::versioned, 2);

namespace serialize_fuzz {

using mproc_fuzz::require;

std::vector<std::byte> as_bytes(std::span<const std::uint8_t> data) {
  std::vector<std::byte> out(data.size());
  if (!data.empty()) std::memcpy(out.data(), data.data(), data.size());
  return out;
}

// `ordered`: the encoding of a decoded value is a fixed point (everything but unordered
// containers); otherwise the decoded values are compared with ==.
template <class T, bool ordered = true>
void check(std::span<const std::byte> message) {
  std::optional<T> first;
  try {
    first.emplace(mproc::from_bytes<T>(message));
  } catch (const mproc::serialization_error&) {
    return;  // the one acceptable failure
  }
  std::vector<std::byte> encoded;
  try {
    encoded = mproc::to_bytes(*first);
  } catch (const mproc::serialization_error&) {
    mproc_fuzz::fail("a value from_bytes returned cannot be encoded again");
  }
  std::optional<T> second;
  try {
    second.emplace(mproc::from_bytes<T>(encoded));
  } catch (const mproc::serialization_error&) {
    mproc_fuzz::fail("to_bytes of a decoded value does not decode");
  }
  if constexpr (ordered) {
    require(mproc::to_bytes(*second) == encoded, "encoding a decoded value is not stable");
  } else {
    require(*second == *first, "a decoded value changed through to_bytes and from_bytes");
  }
}

using checker = void (*)(std::span<const std::byte>);

constexpr checker checkers[] = {
    check<std::int32_t>,
    check<std::string>,
    check<std::vector<int>>,
    check<std::map<std::string, int>>,
    check<record>,
    check<std::vector<record>>,
    check<std::variant<int, std::string, std::vector<double>>>,
    check<std::optional<std::vector<std::string>>>,
    check<std::tuple<bool, std::int64_t, std::array<bool, 3>, std::pair<std::string, double>>>,
    check<std::set<std::string>>,
    check<std::multimap<int, std::string>>,
    check<std::multiset<std::int8_t>>,
    check<std::unordered_map<int, std::vector<std::string>>, false>,
    check<std::unordered_set<std::string>, false>,
    check<std::deque<std::list<int>>>,
    check<node>,
    check<chain>,
    check<shared_parts>,
    check<std::vector<std::shared_ptr<versioned>>>,
    check<std::pair<minimal, std::vector<color>>>,
    check<std::array<color, 2>>,
    check<std::vector<bool>>,
    check<std::tuple<empty, std::tuple<>, std::array<int, 0>, std::vector<empty>>>,
    check<std::vector<std::chrono::nanoseconds>>,
    check<std::unique_ptr<std::optional<std::variant<std::string, minimal>>>>,
};
constexpr std::size_t type_count = std::size(checkers);

// A seed: the type's index, then the message.
template <class T>
std::vector<std::uint8_t> seed(std::size_t index, const T& value) {
  const std::vector<std::byte> message = mproc::to_bytes(value);
  std::vector<std::uint8_t> out{static_cast<std::uint8_t>(index)};
  for (std::byte b : message) out.push_back(std::to_integer<std::uint8_t>(b));
  return out;
}

}  // namespace serialize_fuzz

std::vector<std::vector<std::uint8_t>> mproc_fuzz::seeds() {
  using namespace serialize_fuzz;
  using namespace std::chrono_literals;
  record r{7,
           true,
           "alpha",
           {1.5, -2.25},
           std::map<std::string, int>{{"k", 1}, {"z", -3}},
           std::vector<point>{{1, 2}},
           color::blue,
           1500ms};
  node tree{1, {{2, {}}, {3, {{4, {}}}}}};
  chain links{1, std::make_unique<chain>(chain{2, std::make_unique<chain>(chain{3, nullptr})})};
  shared_parts shared;
  shared.a = std::make_shared<std::string>("same");
  shared.b = shared.a;
  shared.c = std::make_shared<std::vector<int>>(std::vector<int>{1, 2, 3});
  shared.d = shared.c;
  std::vector<std::shared_ptr<versioned>> versions{std::make_shared<versioned>(versioned{1, "one"}), nullptr};
  versions.push_back(versions[0]);

  return {
      seed(0, std::int32_t{-42}),
      seed(1, std::string("hello, mproc")),
      seed(2, std::vector<int>{1, 2, 3, -1}),
      seed(3, std::map<std::string, int>{{"a", 1}, {"bb", 2}}),
      seed(4, r),
      seed(5, std::vector<record>{r, record{}}),
      seed(6, std::variant<int, std::string, std::vector<double>>(std::string("v"))),
      seed(7, std::optional<std::vector<std::string>>(std::vector<std::string>{"x", ""})),
      seed(8,
           std::tuple<bool, std::int64_t, std::array<bool, 3>, std::pair<std::string, double>>{
               true, -5, {true, false, true}, {"p", 0.5}}),
      seed(9, std::set<std::string>{"b", "a"}),
      seed(10, std::multimap<int, std::string>{{1, "x"}, {1, "y"}, {0, "z"}}),
      seed(11, std::multiset<std::int8_t>{3, 3, -1}),
      seed(12, std::unordered_map<int, std::vector<std::string>>{{1, {"a"}}, {2, {}}}),
      seed(13, std::unordered_set<std::string>{"u", "v"}),
      seed(14, std::deque<std::list<int>>{{1, 2}, {}, {3}}),
      seed(15, tree),
      seed(16, links),
      seed(17, shared),
      seed(18, versions),
      seed(19, std::pair<minimal, std::vector<color>>{minimal{9}, {color::green, color::red}}),
      seed(20, std::array<color, 2>{color::blue, color::green}),
      seed(21, std::vector<bool>{true, false, true}),
      seed(22, std::tuple<empty, std::tuple<>, std::array<int, 0>, std::vector<empty>>{{}, {}, {}, {empty{}, empty{}}}),
      seed(23, std::vector<std::chrono::nanoseconds>{std::chrono::nanoseconds(5), std::chrono::nanoseconds(-1)}),
      seed(24, std::make_unique<std::optional<std::variant<std::string, minimal>>>(
                   std::variant<std::string, minimal>(minimal{4}))),
  };
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace serialize_fuzz;
  if (size == 0) return 0;
  // A copy of exactly the message, so that a sanitizer sees any read past its end.
  const std::vector<std::byte> message = as_bytes({data + 1, size - 1});
  try {
    checkers[data[0] % type_count](message);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc fuzz: unexpected %s\n", e.what());
    mproc_fuzz::fail("from_bytes or to_bytes threw something other than serialization_error");
  } catch (...) {
    mproc_fuzz::fail("from_bytes or to_bytes threw a non-standard exception");
  }
  return 0;
}
