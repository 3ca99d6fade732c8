// Hostile bytes fed to mproc::from_bytes: truncated, corrupted, random, forged sizes,
// trailing garbage, invalid values. The only acceptable outcomes are a decoded value or
// mproc::serialization_error; anything else (another exception, a crash, a sanitizer
// report, a huge allocation) fails the test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "mproc/serialize.hpp"

namespace fuzz_test {

struct record {
  std::uint32_t id = 0;
  bool active = false;
  std::string name;
  std::vector<double> samples;
  std::optional<std::map<std::string, int>> tags;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, active, name, samples, tags);
  }
  bool operator==(const record&) const = default;
};

struct node {
  int value = 0;
  std::vector<node> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
  bool operator==(const node&) const = default;
};

struct chain {
  int value = 0;
  std::unique_ptr<chain> next;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, next);
  }
};

struct empty {
  bool operator==(const empty&) const = default;
};

struct throws_on_load {
  int kind = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(kind);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(kind);
    if (kind == 1) throw std::runtime_error("user load rejects kind 1");
    if (kind == 2) throw std::length_error("user load: too long");
    if (kind == 3) throw std::bad_alloc();
    if (kind == 4) throw 4;
  }
};

// Records the largest single allocation requested through it.
inline std::size_t largest_allocation = 0;

template <class T>
struct tracking_allocator {
  using value_type = T;
  tracking_allocator() = default;
  template <class U>
  tracking_allocator(const tracking_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    largest_allocation = std::max(largest_allocation, n * sizeof(T));
    return std::allocator<T>{}.allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>{}.deallocate(p, n); }
  template <class U>
  bool operator==(const tracking_allocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace fuzz_test

namespace {

using namespace fuzz_test;
using ::testing::HasSubstr;
using bytes = std::vector<std::byte>;

// Decodes `input` as T: a value, or serialization_error. Anything else is a failure.
template <class T>
bool decodes(std::span<const std::byte> input) {
  try {
    (void)mproc::from_bytes<T>(input);
    return true;
  } catch (const mproc::serialization_error&) {
    return false;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception: " << e.what();
  } catch (...) {
    ADD_FAILURE() << "unexpected non-standard exception";
  }
  return false;
}

template <class T>
std::string error_of(std::span<const std::byte> input) {
  try {
    (void)mproc::from_bytes<T>(input);
  } catch (const mproc::serialization_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a serialization_error: " << e.what();
    return {};
  }
  ADD_FAILURE() << "decoded, but a serialization_error was expected";
  return {};
}

template <class T>
void append_raw(bytes& b, const T& v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  b.insert(b.end(), p, p + sizeof v);
}

bytes message() { return bytes{std::byte{mproc::serialization_format_version}}; }

// Valid encodings of several shapes, each with a check that it decodes.
struct sample {
  std::string name;
  bytes encoded;
  std::function<bool(std::span<const std::byte>)> decode;
};

template <class T>
sample make_sample(std::string name, const T& value) {
  sample s{std::move(name), mproc::to_bytes(value), &decodes<T>};
  EXPECT_EQ(mproc::from_bytes<T>(s.encoded), value) << s.name;
  return s;
}

// For values without a meaningful ==, e.g. pointers whose sharing is the point.
template <class T>
sample make_unchecked_sample(std::string name, const T& value) {
  sample s{std::move(name), mproc::to_bytes(value), &decodes<T>};
  EXPECT_TRUE(s.decode(s.encoded)) << s.name;
  return s;
}

std::vector<sample> samples() {
  std::vector<sample> out;
  out.push_back(make_sample("int", 123456789));
  out.push_back(make_sample("bool", true));
  out.push_back(make_sample("string", std::string("a string of some length")));
  out.push_back(make_sample("vector<int>", std::vector<int>{1, 2, 3, 4, 5}));
  out.push_back(make_sample("vector<string>", std::vector<std::string>{"a", "", "ccc"}));
  out.push_back(make_sample("vector<bool>", std::vector<bool>{true, false, true}));
  out.push_back(make_sample("array<bool,3>", std::array<bool, 3>{true, false, true}));
  out.push_back(
      make_sample("map<string,vector<int>>", std::map<std::string, std::vector<int>>{{"k", {1, 2}}, {"", {}}}));
  out.push_back(make_sample("unordered_set<int>", std::unordered_set<int>{1, 2, 3}));
  out.push_back(make_sample("nested", std::map<std::string, std::vector<std::optional<std::variant<int, std::string>>>>{
                                          {"x", {1, std::nullopt, std::string("y")}}}));
  out.push_back(make_sample("tuple", std::tuple<int, std::string, double, bool>{1, "t", 2.5, false}));
  out.push_back(make_sample("record", record{7, true, "rec", {1.5, 2.5}, std::map<std::string, int>{{"a", 1}}}));
  out.push_back(make_sample("tree", node{1, {{2, {}}, {3, {{4, {}}}}}}));
  out.push_back(make_sample("deque<list<string>>", std::deque<std::list<std::string>>{{"a", "b"}, {}, {"c"}}));
  out.push_back(make_sample("pair<vector<empty>,int>", std::pair<std::vector<empty>, int>{{{}, {}}, 8}));
  out.push_back(make_sample("duration", std::chrono::milliseconds(1234)));
  out.push_back(make_sample("vector<array<int,0>>", std::vector<std::array<int, 0>>(3)));
  out.push_back(make_sample("variant<monostate,...>", std::vector<std::variant<std::monostate, int, std::string>>{
                                                          std::monostate{}, 5, std::string("s")}));
  out.push_back(make_sample("optional<vector<bool>>", std::optional<std::vector<bool>>{{true, false}}));
  const auto shared = std::make_shared<std::string>("shared");
  out.push_back(make_unchecked_sample(
      "shared_ptrs", std::make_tuple(shared, std::shared_ptr<int>(), shared, std::make_shared<int>(3))));
  chain c{1, std::make_unique<chain>(chain{2, std::make_unique<chain>(chain{3, nullptr})})};
  out.push_back(make_unchecked_sample("unique_ptr chain", c));
  return out;
}

// (a) Every strict prefix of a valid message is truncated input.
TEST(SerializeFuzz, EveryTruncationIsASerializationError) {
  for (const auto& s : samples()) {
    for (std::size_t len = 0; len < s.encoded.size(); ++len) {
      EXPECT_FALSE(s.decode(std::span(s.encoded).first(len))) << s.name << " cut to " << len;
    }
  }
  // One spelled out: the message names what was missing and where.
  auto b = mproc::to_bytes(std::string("hello"));
  b.pop_back();
  const auto what = error_of<std::string>(b);
  EXPECT_THAT(what, HasSubstr("element count 5"));
  EXPECT_THAT(what, HasSubstr("offset 1"));
  auto i = mproc::to_bytes(std::vector<int>{1, 2});
  i.resize(i.size() - 2);
  EXPECT_THAT(error_of<std::vector<int>>(i), HasSubstr("does not fit"));
  auto r = mproc::to_bytes(record{});
  r.resize(3);
  EXPECT_THAT(error_of<record>(r), HasSubstr("truncated input"));
}

// (b) Every single-byte corruption decodes to something or is a serialization_error.
TEST(SerializeFuzz, EverySingleByteCorruptionDecodesOrFailsCleanly) {
  const std::byte values[] = {std::byte{0x00}, std::byte{0xFF}, std::byte{0x7F},
                              std::byte{0x80}, std::byte{0x01}, std::byte{0x02}};
  std::size_t attempts = 0;
  for (const auto& s : samples()) {
    for (std::size_t i = 0; i < s.encoded.size(); ++i) {
      for (const auto v : values) {
        bytes b = s.encoded;
        b[i] = v;
        (void)s.decode(b);
        b[i] = s.encoded[i] ^ std::byte{0x10};
        (void)s.decode(b);
        attempts += 2;
      }
    }
  }
  EXPECT_GT(attempts, 1000u);
}

// (c) Random byte strings, most given a valid version byte so they reach the decoder.
TEST(SerializeFuzz, RandomBytesDecodeOrFailCleanly) {
  std::mt19937 rng(20240607);
  std::uniform_int_distribution<int> byte_dist(0, 255);
  std::uniform_int_distribution<int> len_dist(0, 48);
  const auto all = samples();
  std::size_t decoded = 0;
  for (int round = 0; round < 4000; ++round) {
    bytes b(static_cast<std::size_t>(len_dist(rng)));
    for (auto& x : b) x = static_cast<std::byte>(byte_dist(rng));
    if (!b.empty() && round % 8 != 0) b[0] = std::byte{mproc::serialization_format_version};
    // Small values make short counts and valid flags more likely.
    if (round % 3 == 0) {
      for (auto& x : b) x &= std::byte{0x03};
      if (!b.empty()) b[0] = std::byte{1};
    }
    for (const auto& s : all) decoded += s.decode(b) ? 1 : 0;
  }
  // Mutations of valid messages: several random bytes changed, maybe cut or extended.
  for (int round = 0; round < 4000; ++round) {
    const auto& s = all[static_cast<std::size_t>(round) % all.size()];
    bytes b = s.encoded;
    const int changes = 1 + round % 4;
    for (int c = 0; c < changes && b.size() > 1; ++c) {
      std::uniform_int_distribution<std::size_t> pos(1, b.size() - 1);
      b[pos(rng)] = static_cast<std::byte>(byte_dist(rng));
    }
    if (round % 5 == 0) b.resize(b.size() / 2);
    if (round % 7 == 0) b.push_back(std::byte{0});
    decoded += s.decode(b) ? 1 : 0;
  }
  RecordProperty("decoded", static_cast<int>(decoded));
}

// (d) Forged huge counts fail at once, before anything large is allocated.
template <class T>
void expect_forged_count_rejected(std::uint64_t count, std::size_t payload = 16) {
  bytes b = message();
  append_raw(b, count);
  b.resize(b.size() + payload, std::byte{0x01});
  largest_allocation = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto what = error_of<T>(b);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_THAT(what, HasSubstr("offset")) << what;
  EXPECT_LE(largest_allocation, 64u * b.size()) << what;
  EXPECT_LT(elapsed, std::chrono::seconds(2)) << what;
}

TEST(SerializeFuzz, ForgedHugeSizesAreRejectedWithoutAllocating) {
  using tstring = std::basic_string<char, std::char_traits<char>, tracking_allocator<char>>;
  using tvector_int = std::vector<int, tracking_allocator<int>>;
  using tvector_string = std::vector<std::string, tracking_allocator<std::string>>;
  using tvector_array = std::vector<std::array<double, 1024>, tracking_allocator<std::array<double, 1024>>>;
  using tvector_record = std::vector<record, tracking_allocator<record>>;
  using tmap = std::map<int, int, std::less<>, tracking_allocator<std::pair<const int, int>>>;
  using tdeque = std::deque<std::string, tracking_allocator<std::string>>;
  using tlist = std::list<int, tracking_allocator<int>>;
  for (const std::uint64_t count : {std::uint64_t{0xFFFFFFFFFFFFFFFF}, std::uint64_t{1} << 40, std::uint64_t{1} << 63,
                                    std::uint64_t{17}, std::uint64_t{16}}) {
    SCOPED_TRACE(count);
    expect_forged_count_rejected<tstring>(count, 15);
    expect_forged_count_rejected<tvector_int>(count);
    expect_forged_count_rejected<tvector_string>(count);
    expect_forged_count_rejected<tvector_array>(count, 4096);
    expect_forged_count_rejected<tvector_record>(count);
    expect_forged_count_rejected<tmap>(count);
    expect_forged_count_rejected<tdeque>(count);
    expect_forged_count_rejected<tlist>(count);
    expect_forged_count_rejected<std::vector<empty>>(count, 15);
    expect_forged_count_rejected<std::unordered_set<int>>(count, 15);
    expect_forged_count_rejected<std::vector<bool>>(count, 15);
  }
  // The plain std types too (nothing to measure, but they must fail cleanly and fast).
  for (const std::uint64_t count : {std::uint64_t{0xFFFFFFFFFFFFFFFF}, std::uint64_t{1} << 40}) {
    expect_forged_count_rejected<std::string>(count);
    expect_forged_count_rejected<std::vector<double>>(count);
    expect_forged_count_rejected<std::map<std::string, std::string>>(count);
    expect_forged_count_rejected<std::unordered_map<int, int>>(count);
  }
  // A count that fits the bytes present but not the elements' size: exact check for numbers.
  bytes b = message();
  append_raw(b, std::uint64_t{4});
  b.resize(b.size() + 12);  // 4 ints need 16
  EXPECT_THAT(error_of<std::vector<int>>(b), HasSubstr("of 4-byte elements"));
}

// (e) Bytes after a complete value are an error.
TEST(SerializeFuzz, TrailingGarbageIsRejected) {
  for (const auto& s : samples()) {
    bytes b = s.encoded;
    b.push_back(std::byte{0});
    EXPECT_FALSE(s.decode(b)) << s.name;
    b.push_back(std::byte{0xFF});
    EXPECT_FALSE(s.decode(b)) << s.name;
  }
  bytes b = mproc::to_bytes(std::int64_t{5});  // the memcpy fast path
  b.push_back(std::byte{1});
  const auto what = error_of<std::int64_t>(b);
  EXPECT_THAT(what, HasSubstr("1 trailing bytes"));
  EXPECT_THAT(what, HasSubstr("offset 9"));
  EXPECT_THAT(error_of<std::int64_t>(std::span(b).first(5)), HasSubstr("truncated"));
}

// (f) Invalid values: bool bytes, variant indexes, versions, markers, pointer ids.
TEST(SerializeFuzz, BadBoolBytesAreRejected) {
  for (const int v : {2, 0x7F, 0x80, 0xFF}) {
    SCOPED_TRACE(v);
    const auto x = std::byte(v);
    EXPECT_THAT(error_of<bool>(bytes{std::byte{1}, x}), HasSubstr("invalid bool byte"));

    bytes opt = mproc::to_bytes(std::optional<int>{});
    opt[1] = x;  // the optional's "empty" flag is a bool
    EXPECT_THAT(error_of<std::optional<int>>(opt), HasSubstr("offset 1"));

    bytes vec = mproc::to_bytes(std::vector<bool>{true, false});
    vec.back() = x;
    EXPECT_THAT(error_of<std::vector<bool>>(vec), HasSubstr("invalid bool byte"));

    bytes arr = mproc::to_bytes(std::array<bool, 3>{true, true, true});
    arr[2] = x;  // cereal sends std::array<bool, N> as raw bytes: still checked
    EXPECT_THAT((error_of<std::array<bool, 3>>(arr)), HasSubstr("offset 2"));

    bytes rec = mproc::to_bytes(record{});
    rec[1 + 4] = x;  // record::active
    EXPECT_THAT(error_of<record>(rec), HasSubstr("invalid bool byte"));
  }
}

TEST(SerializeFuzz, BadVariantIndexesAreRejected) {
  using v = std::variant<int, std::string>;
  for (const std::int32_t index : {2, 3, 1000, -1, -2147483647 - 1}) {
    SCOPED_TRACE(index);
    bytes b = message();
    append_raw(b, index);
    append_raw(b, std::int32_t{0});
    const auto what = error_of<v>(b);
    EXPECT_THAT(what, HasSubstr("offset 5"));
    EXPECT_THAT(what, HasSubstr("variant"));
  }
}

TEST(SerializeFuzz, WrongVersionsAndEmptyInputAreRejected) {
  EXPECT_THAT(error_of<int>(bytes{}), HasSubstr("empty input"));
  EXPECT_THAT(error_of<std::string>(bytes{}), HasSubstr("empty input"));
  for (const int version : {0, 2, 0x7F, 0xFF}) {
    bytes b = mproc::to_bytes(std::string("v"));
    b[0] = std::byte(version);
    const auto what = error_of<std::string>(b);
    EXPECT_THAT(what, HasSubstr("unsupported format version " + std::to_string(version)));
    EXPECT_THAT(what, HasSubstr("reads version 1"));
    bytes i = mproc::to_bytes(1);
    i[0] = std::byte(version);
    EXPECT_THAT(error_of<int>(i), HasSubstr("unsupported format version"));
  }
}

TEST(SerializeFuzz, BadEmptyValueMarkersAreRejected) {
  bytes b = mproc::to_bytes(std::vector<empty>(3));
  b.back() = std::byte{1};
  EXPECT_THAT(error_of<std::vector<empty>>(b), HasSubstr("invalid empty-value marker"));
}

TEST(SerializeFuzz, ForgedSharedPointerIdsAreRejected) {
  // An id never defined.
  bytes unknown = message();
  append_raw(unknown, std::uint32_t{5});
  EXPECT_THAT(error_of<std::shared_ptr<int>>(unknown), HasSubstr("unknown id 5"));

  // A back-reference to an object of another type: cereal alone would hand out an int as
  // a std::string.
  const auto encoded = mproc::to_bytes(std::make_pair(std::make_shared<std::string>("s"), std::make_shared<int>(1)));
  bytes forged = message();
  append_raw(forged, std::uint32_t{0x80000001});  // first: a new int, id 1
  append_raw(forged, std::int32_t{7});
  append_raw(forged, std::uint32_t{1});  // second: "the object with id 1", as a string
  const auto what = error_of<std::pair<std::shared_ptr<int>, std::shared_ptr<std::string>>>(forged);
  EXPECT_THAT(what, HasSubstr("another type"));
  EXPECT_TRUE((decodes<std::pair<std::shared_ptr<std::string>, std::shared_ptr<int>>>(encoded)));
}

TEST(SerializeFuzz, DeepNestingIsRejectedBeforeTheStackRunsOut) {
  // node{0, [node{0, [ ... ]}]}, far deeper than the limit: 12 bytes a level.
  bytes b = message();
  for (int i = 0; i < 200000; ++i) {
    append_raw(b, std::int32_t{i});
    append_raw(b, std::uint64_t{1});
  }
  EXPECT_THAT(error_of<node>(b), HasSubstr("deeper than"));

  bytes c = message();
  for (int i = 0; i < 200000; ++i) {
    append_raw(c, std::int32_t{i});
    c.push_back(std::byte{1});  // unique_ptr: non-null, pointee follows
  }
  EXPECT_THAT(error_of<chain>(c), HasSubstr("deeper than"));
}

// Exceptions from user load functions become serialization errors.
TEST(SerializeFuzz, UserLoadExceptionsBecomeSerializationErrors) {
  for (const int kind : {1, 2, 3, 4}) {
    SCOPED_TRACE(kind);
    const auto what = error_of<throws_on_load>(mproc::to_bytes(throws_on_load{kind}));
    EXPECT_THAT(what, HasSubstr("offset 5"));
  }
  EXPECT_THAT(error_of<throws_on_load>(mproc::to_bytes(throws_on_load{1})), HasSubstr("user load rejects kind 1"));
  EXPECT_TRUE(decodes<throws_on_load>(mproc::to_bytes(throws_on_load{0})));
}

}  // namespace
