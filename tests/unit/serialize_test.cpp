// <mproc/serialize.hpp>: round trips, the wire format's visible properties, cereal
// compatibility for user types, and the compile-time traits.
#include "mproc/serialize.hpp"

#if defined(MPROC_SERIALIZE_EXPECT_COMPILE_ERROR)
// Compiled only by the ctest check `unit.Serialize.NotSerializableFailsToCompileWithAHint`
// (tests/unit/CMakeLists.txt), which expects mproc's static_assert message.
namespace {
struct not_serializable {
  int x = 0;
};
}  // namespace
std::vector<std::byte> encode_not_serializable() { return mproc::to_bytes(not_serializable{}); }
#else

#include <cereal/types/polymorphic.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace ser_test {

// --- user types, written for cereal as anyone would write them ----------------------------

struct member_s {
  int a = 0;
  std::string b;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(a, b);
  }
  bool operator==(const member_s&) const = default;
};

struct free_s {
  double x = 0;
  std::vector<int> v;
  bool operator==(const free_s&) const = default;
};
template <class Archive>
void serialize(Archive& ar, free_s& s) {
  ar(s.x, s.v);
}

// save/load members that do different things, so the test sees both ran.
struct split_s {
  std::string text;
  template <class Archive>
  void save(Archive& ar) const {
    ar(text + "!");
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(text);
    text.pop_back();
  }
  bool operator==(const split_s&) const = default;
};

struct point {
  int x = 0;
  int y = 0;
  bool operator==(const point&) const = default;
};
template <class Archive>
void save(Archive& ar, const point& p) {
  ar(p.x, p.y);
}
template <class Archive>
void load(Archive& ar, point& p) {
  ar(p.x, p.y);
}

struct celsius {
  double degrees = 0;
  template <class Archive>
  double save_minimal(const Archive&) const {
    return degrees;
  }
  template <class Archive>
  void load_minimal(const Archive&, const double& value) {
    degrees = value;
  }
  bool operator==(const celsius&) const = default;
};

struct base {
  int id = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id);
  }
};
struct derived : base {
  std::string name;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(cereal::base_class<base>(this), name);
  }
};

struct with_nvp {
  int width = 0;
  int height = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(CEREAL_NVP(width), CEREAL_NVP(height));
  }
  bool operator==(const with_nvp&) const = default;
};

struct versioned {
  int a = 0;
  int b = 0;
  std::uint32_t seen_version = 0;
  template <class Archive>
  void serialize(Archive& ar, const std::uint32_t version) {
    ar(a);
    if (version >= 2) ar(b);
    seen_version = version;
  }
};

class private_parts {
 public:
  private_parts() = default;
  explicit private_parts(int v) : v_(v) {}
  int value() const { return v_; }

 private:
  friend class cereal::access;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(v_);
  }
  int v_ = 0;
};

struct no_default {
  explicit no_default(int value) : v(value) {}
  int v;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(v);
  }
  template <class Archive>
  static void load_and_construct(Archive& ar, cereal::construct<no_default>& construct) {
    int value = 0;
    ar(value);
    construct(value);
  }
};

struct empty {
  bool operator==(const empty&) const = default;
};

// Not an empty class, but its encoding is empty.
struct writes_nothing {
  int ignored = 0;
  template <class Archive>
  void serialize(Archive&) {}
};

struct tree {
  int value = 0;
  std::vector<tree> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
  bool operator==(const tree&) const = default;
};

struct linked {
  int value = 0;
  std::unique_ptr<linked> next;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, next);
  }
};

struct no_serialize {
  int x = 0;
};

struct throws_on_save {
  template <class Archive>
  void save(Archive&) const {
    throw std::runtime_error("the disk is on fire");
  }
  template <class Archive>
  void load(Archive&) {}
};

struct throws_int_on_save {
  template <class Archive>
  void save(Archive&) const {
    throw 42;
  }
  template <class Archive>
  void load(Archive&) {}
};

struct bad_alloc_on_save {
  template <class Archive>
  void save(Archive&) const {
    throw std::bad_alloc();
  }
  template <class Archive>
  void load(Archive&) {}
};

struct explodes_on_copy {
  explodes_on_copy() = default;
  explodes_on_copy(const explodes_on_copy&) { throw std::runtime_error("copy"); }
  explodes_on_copy& operator=(const explodes_on_copy&) = default;
  template <class Archive>
  void serialize(Archive&) {}
};

struct shape {
  virtual ~shape() = default;
  virtual double area() const = 0;
};
struct square : shape {
  double side = 0;
  double area() const override { return side * side; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(side);
  }
};

enum class color : std::uint8_t { red, green, blue };
enum fixed_plain : int { minus_one = -1, zero = 0, big = 1 << 20 };
enum unfixed_plain { alpha, beta };

}  // namespace ser_test

CEREAL_CLASS_VERSION(ser_test::versioned, 2)
CEREAL_REGISTER_TYPE(ser_test::square)
CEREAL_REGISTER_POLYMORPHIC_RELATION(ser_test::shape, ser_test::square)

namespace {

using namespace ser_test;
using ::testing::HasSubstr;

template <class T>
T round_trip(const T& value) {
  return mproc::from_bytes<T>(mproc::to_bytes(value));
}

template <class T>
void expect_round_trip(const T& value) {
  EXPECT_EQ(round_trip(value), value);
}

std::vector<std::byte> raw_bytes(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  return {b, b + n};
}

// --- built-in types ---------------------------------------------------------------------

template <class T>
void expect_limits_round_trip() {
  expect_round_trip<T>(T{});
  expect_round_trip<T>(std::numeric_limits<T>::min());
  expect_round_trip<T>(std::numeric_limits<T>::max());
  expect_round_trip<T>(std::numeric_limits<T>::lowest());
}

TEST(Serialize, ArithmeticTypesRoundTrip) {
  expect_round_trip(true);
  expect_round_trip(false);
  expect_limits_round_trip<char>();
  expect_limits_round_trip<signed char>();
  expect_limits_round_trip<unsigned char>();
  expect_limits_round_trip<short>();
  expect_limits_round_trip<unsigned short>();
  expect_limits_round_trip<int>();
  expect_limits_round_trip<unsigned>();
  expect_limits_round_trip<long>();
  expect_limits_round_trip<unsigned long>();
  expect_limits_round_trip<long long>();
  expect_limits_round_trip<unsigned long long>();
  expect_limits_round_trip<wchar_t>();
  expect_limits_round_trip<char8_t>();
  expect_limits_round_trip<char16_t>();
  expect_limits_round_trip<char32_t>();
  expect_limits_round_trip<float>();
  expect_limits_round_trip<double>();
  expect_limits_round_trip<long double>();
  expect_round_trip(3.25f);
  expect_round_trip(-2.5e300);
  expect_round_trip(std::numeric_limits<double>::infinity());
  expect_round_trip(std::numeric_limits<double>::denorm_min());
  EXPECT_TRUE(std::isnan(round_trip(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_TRUE(std::signbit(round_trip(-0.0)));
}

TEST(Serialize, ArithmeticEncodingIsVersionThenNativeBytes) {
  const std::int32_t v = -123456;
  auto expected = std::vector<std::byte>{std::byte{mproc::serialization_format_version}};
  const auto body = raw_bytes(&v, sizeof v);
  expected.insert(expected.end(), body.begin(), body.end());
  EXPECT_EQ(mproc::to_bytes(v), expected);
  EXPECT_EQ(mproc::to_bytes(true), (std::vector<std::byte>{std::byte{1}, std::byte{1}}));
  EXPECT_EQ(mproc::to_bytes(false), (std::vector<std::byte>{std::byte{1}, std::byte{0}}));
}

TEST(Serialize, EnumsRoundTrip) {
  expect_round_trip(color::blue);
  expect_round_trip(minus_one);
  expect_round_trip(big);
  expect_round_trip(std::byte{0xAB});
  // Any value of the underlying type is a value of a fixed enum, so it decodes.
  EXPECT_EQ(static_cast<int>(round_trip(static_cast<color>(200))), 200);
  EXPECT_EQ(mproc::to_bytes(color::green).size(), 2u);
}

TEST(Serialize, StringsRoundTrip) {
  expect_round_trip(std::string());
  expect_round_trip(std::string("hello, world"));
  expect_round_trip(std::string("embedded\0nul", 12));
  expect_round_trip(std::string(100000, 'x'));
  expect_round_trip(std::wstring(L"wide \u00e9"));
  expect_round_trip(std::u16string(u"utf-16"));
  expect_round_trip(std::u32string(U"utf-32"));
  // version, u64 count, the characters
  EXPECT_EQ(mproc::to_bytes(std::string("abc")).size(), 1u + 8u + 3u);
}

TEST(Serialize, VectorsRoundTrip) {
  expect_round_trip(std::vector<int>{});
  expect_round_trip(std::vector<int>{1, -2, 3});
  expect_round_trip(std::vector<bool>{true, false, true, true});
  expect_round_trip(std::vector<bool>{});
  expect_round_trip(std::vector<std::string>{"a", "", "ccc"});
  expect_round_trip(std::vector<std::vector<double>>{{1.5}, {}, {2.5, 3.5}});
  expect_round_trip(std::vector<color>{color::red, color::blue});
  expect_round_trip(std::vector<std::array<float, 3>>{{1, 2, 3}, {4, 5, 6}});
  expect_round_trip(std::vector<empty>(7));
}

TEST(Serialize, VectorsOfMemcpyTypesAreCountThenRawBytes) {
  const std::vector<std::array<float, 3>> points{{1, 2, 3}, {4, 5, 6}};
  const auto bytes = mproc::to_bytes(points);
  ASSERT_EQ(bytes.size(), 1u + 8u + sizeof(float) * 6);
  EXPECT_EQ(std::memcmp(bytes.data() + 9, points.data(), sizeof(float) * 6), 0);

  // The same bytes cereal's element-by-element path produces.
  std::vector<std::byte> by_element{std::byte{mproc::serialization_format_version}};
  {
    mproc::output_archive ar(by_element);
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(points.size())));
    for (const auto& p : points) ar(p);
  }
  EXPECT_EQ(bytes, by_element);
}

TEST(Serialize, LargeVectorOfDoublesTakesTheMemcpyPath) {
  const std::size_t n = 16u * 1024 * 1024 / sizeof(double);
  std::vector<double> big(n);
  for (std::size_t i = 0; i < n; ++i) big[i] = static_cast<double>(i) * 0.5;
  const auto bytes = mproc::to_bytes(big);
  EXPECT_EQ(bytes.size(), 8 * n + 1 + 8);  // version byte, u64 count, the doubles
  EXPECT_EQ(std::memcmp(bytes.data() + 9, big.data(), 8 * n), 0);
  EXPECT_EQ(mproc::from_bytes<std::vector<double>>(bytes), big);
}

TEST(Serialize, ArraysRoundTrip) {
  expect_round_trip(std::array<int, 4>{1, 2, 3, 4});
  expect_round_trip(std::array<bool, 3>{true, false, true});
  expect_round_trip(std::array<std::string, 2>{"x", "yz"});
  expect_round_trip(std::array<std::array<short, 2>, 2>{{{1, 2}, {3, 4}}});
  expect_round_trip(std::array<int, 0>{});
  EXPECT_EQ(mproc::to_bytes(std::array<int, 4>{}).size(), 1u + 16u);
}

TEST(Serialize, PairsTuplesOptionalsVariantsRoundTrip) {
  expect_round_trip(std::pair<int, std::string>{7, "seven"});
  expect_round_trip(std::tuple<int, double, std::string, bool>{1, 2.5, "three", true});
  expect_round_trip(std::tuple<>{});
  expect_round_trip(std::optional<int>{});
  expect_round_trip(std::optional<int>{42});
  expect_round_trip(std::optional<std::string>{"present"});
  using v = std::variant<std::monostate, int, std::string, std::vector<double>>;
  expect_round_trip(v{});
  expect_round_trip(v{5});
  expect_round_trip(v{std::string("five")});
  expect_round_trip(v{std::vector<double>{5.5}});
  EXPECT_EQ(round_trip(v{std::string("x")}).index(), 2u);
}

TEST(Serialize, AssociativeContainersRoundTrip) {
  expect_round_trip(std::map<std::string, int>{});
  expect_round_trip(std::map<std::string, int>{{"a", 1}, {"b", 2}});
  expect_round_trip(std::multimap<int, int>{{1, 1}, {1, 2}, {0, 5}, {1, 3}});
  expect_round_trip(std::multiset<int>{3, 1, 3, 2});
  expect_round_trip(std::unordered_multimap<int, std::string>{{1, "a"}, {1, "b"}});
  expect_round_trip(std::unordered_map<int, std::string>{{1, "one"}, {2, "two"}});
  expect_round_trip(std::set<std::string>{"x", "y"});
  expect_round_trip(std::unordered_set<long>{3, 4, 5});
  expect_round_trip(std::unordered_set<long>{});
}

TEST(Serialize, DequesAndListsRoundTrip) {
  expect_round_trip(std::deque<int>{1, 2, 3});
  expect_round_trip(std::deque<std::string>{});
  expect_round_trip(std::list<std::string>{"a", "b"});
  expect_round_trip(std::list<int>{});
}

TEST(Serialize, DurationsRoundTrip) {
  expect_round_trip(std::chrono::seconds(90));
  expect_round_trip(std::chrono::milliseconds(-5));
  expect_round_trip(std::chrono::duration<double>(1.25));
  expect_round_trip(std::chrono::nanoseconds::max());
}

TEST(Serialize, UniquePointersRoundTrip) {
  EXPECT_EQ(round_trip(std::unique_ptr<int>()), nullptr);
  const auto p = round_trip(std::make_unique<std::string>("owned"));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, "owned");

  linked head{1, std::make_unique<linked>(linked{2, std::make_unique<linked>(linked{3, {}})})};
  const auto copy = round_trip(head);
  ASSERT_NE(copy.next, nullptr);
  ASSERT_NE(copy.next->next, nullptr);
  EXPECT_EQ(copy.next->next->value, 3);
  EXPECT_EQ(copy.next->next->next, nullptr);
}

TEST(Serialize, SharedPointersKeepTheirSharing) {
  const auto s = std::make_shared<member_s>(member_s{1, "shared"});
  const auto copy = round_trip(std::vector<std::shared_ptr<member_s>>{s, nullptr, s});
  ASSERT_EQ(copy.size(), 3u);
  ASSERT_NE(copy[0], nullptr);
  EXPECT_EQ(copy[0], copy[2]);
  EXPECT_EQ(copy[1], nullptr);
  EXPECT_EQ(*copy[0], *s);

  const auto w =
      round_trip(std::pair<std::shared_ptr<int>, std::weak_ptr<int>>{std::make_shared<int>(9), std::weak_ptr<int>()});
  ASSERT_NE(w.first, nullptr);
  EXPECT_EQ(*w.first, 9);
}

TEST(Serialize, PolymorphicPointersRegisteredWithCerealWork) {
  auto sq = std::make_unique<square>();
  sq->side = 3;
  const std::unique_ptr<shape> original = std::move(sq);
  const auto copy = round_trip(original);
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(copy->area(), 9.0);
}

TEST(Serialize, NestedCombinationsRoundTrip) {
  using inner = std::vector<std::optional<std::variant<int, std::string>>>;
  std::map<std::string, inner> m{
      {"empty", {}},
      {"mixed", {1, std::nullopt, std::string("two"), 3}},
      {"nones", {std::nullopt, std::nullopt}},
  };
  expect_round_trip(m);

  std::unordered_map<int, std::vector<std::tuple<std::string, std::set<int>, std::optional<double>>>> deep{
      {1, {{"a", {1, 2}, 0.5}, {"", {}, std::nullopt}}}, {2, {}}};
  expect_round_trip(deep);

  tree t{1, {{2, {}}, {3, {{4, {}}}}}};
  expect_round_trip(t);
}

TEST(Serialize, EmptyValuesTakeOneMarkerByte) {
  EXPECT_EQ(mproc::to_bytes(empty{}), (std::vector<std::byte>{std::byte{1}, std::byte{0}}));
  EXPECT_EQ(mproc::to_bytes(std::monostate{}).size(), 2u);
  // So any count of them passes the "count <= bytes that remain" check.
  EXPECT_EQ(mproc::to_bytes(std::vector<empty>(1000)).size(), 1u + 8u + 1000u);
  EXPECT_EQ(round_trip(std::vector<empty>(1000)).size(), 1000u);
  EXPECT_EQ(round_trip(std::vector<std::tuple<>>(3)).size(), 3u);
  EXPECT_EQ(mproc::to_bytes(std::array<int, 0>{}).size(), 2u);
  EXPECT_EQ(round_trip(std::vector<std::array<int, 0>>(50)).size(), 50u);
  EXPECT_EQ(mproc::to_bytes(writes_nothing{}).size(), 2u);
  EXPECT_EQ(round_trip(std::vector<writes_nothing>(40)).size(), 40u);
  // A value that writes something gets no marker, even if its parts are empty.
  EXPECT_EQ(mproc::to_bytes(std::pair<empty, int>{}).size(), 1u + 1u + 4u);
}

// --- user types -------------------------------------------------------------------------

TEST(Serialize, UserTypeWithMemberSerialize) { expect_round_trip(member_s{3, "three"}); }

TEST(Serialize, UserTypeWithFreeSerialize) { expect_round_trip(free_s{1.5, {1, 2, 3}}); }

TEST(Serialize, UserTypeWithMemberSaveAndLoad) {
  expect_round_trip(split_s{"text"});
  // save appended a '!', load removed it: both ran.
  EXPECT_EQ(mproc::to_bytes(split_s{"text"}).size(), 1u + 8u + 5u);
}

TEST(Serialize, UserTypeWithFreeSaveAndLoad) { expect_round_trip(point{3, -4}); }

TEST(Serialize, UserTypeWithMinimalSaveAndLoad) {
  expect_round_trip(celsius{36.6});
  EXPECT_EQ(mproc::to_bytes(celsius{1}).size(), 1u + sizeof(double));
}

TEST(Serialize, UserTypeWithBaseClass) {
  derived d;
  d.id = 17;
  d.name = "derived";
  const auto copy = round_trip(d);
  EXPECT_EQ(copy.id, 17);
  EXPECT_EQ(copy.name, "derived");
}

TEST(Serialize, NameValuePairsDropTheirNames) {
  expect_round_trip(with_nvp{640, 480});
  EXPECT_EQ(mproc::to_bytes(with_nvp{}).size(), 1u + 2 * sizeof(int));
}

// A versioned user type sees its version, written once per message.
TEST(Serialize, VersionedUserTypeSeesItsVersionOncePerMessage) {
  const auto copy = round_trip(versioned{1, 2, 0});
  EXPECT_EQ(copy.a, 1);
  EXPECT_EQ(copy.b, 2);
  EXPECT_EQ(copy.seen_version, 2u);
  // version, count, the u32 class version once, then a and b of each element
  const auto bytes = mproc::to_bytes(std::vector<versioned>(3));
  EXPECT_EQ(bytes.size(), 1u + 8u + 4u + 3 * 2 * sizeof(int));
}

TEST(Serialize, PrivateSerializeThroughCerealAccess) { EXPECT_EQ(round_trip(private_parts(99)).value(), 99); }

TEST(Serialize, LoadAndConstructThroughSmartPointers) {
  const auto u = round_trip(std::make_unique<no_default>(5));
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->v, 5);
  const auto s = std::make_shared<no_default>(6);
  const auto pair = round_trip(std::make_pair(s, s));
  ASSERT_NE(pair.first, nullptr);
  EXPECT_EQ(pair.first->v, 6);
  EXPECT_EQ(pair.first, pair.second);
}

// --- buffers ----------------------------------------------------------------------------

TEST(Serialize, VersionByteComesFirst) {
  for (const auto& bytes :
       {mproc::to_bytes(1), mproc::to_bytes(std::string("s")), mproc::to_bytes(member_s{}), mproc::to_bytes(empty{})}) {
    ASSERT_FALSE(bytes.empty());
    EXPECT_EQ(bytes[0], std::byte{mproc::serialization_format_version});
  }
  EXPECT_EQ(mproc::serialization_format_version, 1);
}

TEST(Serialize, ToBytesAppendsToExistingContent) {
  std::vector<std::byte> buf{std::byte{0xAA}, std::byte{0xBB}};
  mproc::to_bytes(std::string("abc"), buf);
  mproc::to_bytes(7, buf);
  ASSERT_EQ(buf.size(), 2u + (1 + 8 + 3) + (1 + 4));
  EXPECT_EQ(buf[0], std::byte{0xAA});
  EXPECT_EQ(buf[1], std::byte{0xBB});
  const std::span<const std::byte> all(buf);
  EXPECT_EQ(mproc::from_bytes<std::string>(all.subspan(2, 12)), "abc");
  EXPECT_EQ(mproc::from_bytes<int>(all.subspan(14)), 7);
}

TEST(Serialize, AReusedBufferIsNotReallocated) {
  const std::map<std::string, std::vector<int>> value{{"k", {1, 2, 3}}, {"l", {}}};
  std::vector<std::byte> buf;
  mproc::to_bytes(value, buf);
  const auto* data = buf.data();
  const auto capacity = buf.capacity();
  for (int i = 0; i < 100; ++i) {
    buf.clear();
    mproc::to_bytes(value, buf);
  }
  EXPECT_EQ(buf.data(), data);
  EXPECT_EQ(buf.capacity(), capacity);
  EXPECT_EQ(mproc::from_bytes<std::remove_cvref_t<decltype(value)>>(buf), value);
}

TEST(Serialize, ArchivesCanBeUsedDirectlyLikeAnyCerealArchive) {
  std::vector<std::byte> buf;
  {
    mproc::output_archive out(buf);
    out(1, std::string("two"), 3.0, member_s{4, "four"});
  }
  mproc::input_archive in(buf);
  int a = 0;
  std::string b;
  double c = 0;
  member_s d;
  in(a, b, c);
  EXPECT_EQ(in.position(), 4u + 8u + 3u + 8u);
  in(d);
  EXPECT_EQ(in.remaining(), 0u);
  EXPECT_NO_THROW(in.expect_end());
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, "two");
  EXPECT_EQ(c, 3.0);
  EXPECT_EQ(d, (member_s{4, "four"}));
}

// --- encoding failures ------------------------------------------------------------------

// A throwing save becomes a serialization_error and restores the buffer.
TEST(Serialize, AThrowingSaveThrowsAndRestoresTheBuffer) {
  std::vector<std::byte> buf{std::byte{1}, std::byte{2}, std::byte{3}};
  try {
    mproc::to_bytes(std::vector<throws_on_save>(2), buf);
    FAIL() << "expected serialization_error";
  } catch (const mproc::serialization_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("the disk is on fire"));
    EXPECT_THAT(e.what(), HasSubstr("mproc::to_bytes<"));
  }
  EXPECT_EQ(buf.size(), 3u);
  EXPECT_THROW(mproc::to_bytes(throws_int_on_save{}), mproc::serialization_error);
}

TEST(Serialize, OutOfMemoryWhileEncodingStaysBadAlloc) {
  std::vector<std::byte> buf{std::byte{1}};
  EXPECT_THROW(mproc::to_bytes(bad_alloc_on_save{}, buf), std::bad_alloc);
  EXPECT_EQ(buf.size(), 1u);
}

TEST(Serialize, AValuelessVariantCannotBeEncoded) {
  std::variant<int, explodes_on_copy> v;
  const explodes_on_copy e;
  try {
    v = e;  // copy-assigning a different alternative: the copy throws, v is valueless
  } catch (const std::runtime_error&) {
  }
  ASSERT_TRUE(v.valueless_by_exception());
  EXPECT_THROW(mproc::to_bytes(v), mproc::serialization_error);
}

TEST(Serialize, NestingDeeperThanTheLimitFailsAtTheSender) {
  linked head;
  linked* tail = &head;
  for (std::size_t i = 0; i < mproc::serialization_max_depth; ++i) {
    tail->next = std::make_unique<linked>();
    tail = tail->next.get();
  }
  try {
    (void)mproc::to_bytes(head);
    FAIL() << "expected serialization_error";
  } catch (const mproc::serialization_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("deeper than"));
  }
  while (head.next) head.next = std::move(head.next->next);  // no deep recursive destructor
}

// Shared pointers of different types at one address fail at the sender.
TEST(Serialize, SharedPointersOfTwoTypesAtOneAddressFailToEncode) {
  const auto s = std::make_shared<member_s>(member_s{5, "x"});
  const std::shared_ptr<int> alias(s, &s->a);  // same address as *s, another type
  ASSERT_EQ(static_cast<const void*>(alias.get()), static_cast<const void*>(s.get()));
  EXPECT_THROW(mproc::to_bytes(std::make_pair(s, alias)), mproc::serialization_error);
}

// --- traits -----------------------------------------------------------------------------

TEST(Serialize, MemcpySerializableTrait) {
  using mproc::detail::is_memcpy_serializable_v;
  static_assert(is_memcpy_serializable_v<int>);
  static_assert(is_memcpy_serializable_v<char>);
  static_assert(is_memcpy_serializable_v<double>);
  static_assert(is_memcpy_serializable_v<long double>);
  static_assert(is_memcpy_serializable_v<std::uint64_t>);
  static_assert(is_memcpy_serializable_v<color>);
  static_assert(is_memcpy_serializable_v<fixed_plain>);
  static_assert(is_memcpy_serializable_v<std::byte>);
  static_assert(is_memcpy_serializable_v<std::array<int, 3>>);
  static_assert(is_memcpy_serializable_v<std::array<color, 2>>);
  static_assert(is_memcpy_serializable_v<std::array<std::array<float, 2>, 4>>);

  static_assert(!is_memcpy_serializable_v<bool>);
  static_assert(!is_memcpy_serializable_v<std::array<bool, 4>>);
  static_assert(!is_memcpy_serializable_v<std::array<int, 0>>);
  static_assert(!is_memcpy_serializable_v<unfixed_plain>);
  static_assert(!is_memcpy_serializable_v<std::string>);
  static_assert(!is_memcpy_serializable_v<std::vector<int>>);
  static_assert(!is_memcpy_serializable_v<std::pair<int, int>>);
  static_assert(!is_memcpy_serializable_v<point>);
  static_assert(!is_memcpy_serializable_v<int*>);

  // For these types the encoding is exactly the object's bytes.
  const std::array<std::int16_t, 3> a{1, -2, 3};
  const auto bytes = mproc::to_bytes(a);
  ASSERT_EQ(bytes.size(), 1u + sizeof a);
  EXPECT_EQ(std::memcmp(bytes.data() + 1, &a, sizeof a), 0);
  std::vector<std::byte> through_cereal;
  {
    mproc::output_archive ar(through_cereal);
    ar(a);
  }
  EXPECT_EQ(through_cereal, raw_bytes(&a, sizeof a));
}

TEST(Serialize, SerializableConcept) {
  static_assert(mproc::serializable<int>);
  static_assert(mproc::serializable<bool>);
  static_assert(mproc::serializable<color>);
  static_assert(mproc::serializable<std::string>);
  static_assert(mproc::serializable<std::vector<std::map<std::string, std::optional<int>>>>);
  static_assert(mproc::serializable<std::variant<std::monostate, int, std::string>>);
  static_assert(mproc::serializable<std::chrono::milliseconds>);
  static_assert(mproc::serializable<std::unique_ptr<member_s>>);
  static_assert(mproc::serializable<std::unique_ptr<no_default>>);
  static_assert(mproc::serializable<std::shared_ptr<no_default>>);
  static_assert(mproc::serializable<member_s>);
  static_assert(mproc::serializable<free_s>);
  static_assert(mproc::serializable<split_s>);
  static_assert(mproc::serializable<point>);
  static_assert(mproc::serializable<celsius>);
  static_assert(mproc::serializable<derived>);
  static_assert(mproc::serializable<with_nvp>);
  static_assert(mproc::serializable<versioned>);
  static_assert(mproc::serializable<private_parts>);
  static_assert(mproc::serializable<empty>);
  static_assert(mproc::serializable<tree>);
  static_assert(mproc::serializable<linked>);

  static_assert(!mproc::serializable<void>);
  static_assert(!mproc::serializable<int&>);
  static_assert(!mproc::serializable<const int>);
  static_assert(!mproc::serializable<int*>);
  static_assert(!mproc::serializable<int[3]>);
  static_assert(!mproc::serializable<unfixed_plain>);
  static_assert(!mproc::serializable<std::vector<unfixed_plain>>);
  static_assert(!mproc::serializable<no_serialize>);
  static_assert(!mproc::serializable<no_default>);  // from_bytes must default-construct it
  static_assert(!mproc::serializable<std::vector<no_serialize>>);
  static_assert(!mproc::serializable<std::map<std::string, no_serialize>>);
  static_assert(!mproc::serializable<std::optional<int*>>);
  static_assert(!mproc::serializable<std::pair<int, no_serialize>>);
  static_assert(!mproc::serializable<std::tuple<int, std::vector<no_serialize>>>);
  static_assert(!mproc::serializable<std::vector<no_default>>);
  static_assert(!mproc::serializable<std::unique_ptr<no_serialize>>);
  static_assert(!mproc::serializable<std::unique_ptr<int, void (*)(int*)>>);
  SUCCEED();
}

TEST(Serialize, ErrorMessagesNameTheType) {
  try {
    (void)mproc::from_bytes<std::vector<int>>(std::vector<std::byte>{std::byte{1}});
    FAIL() << "expected serialization_error";
  } catch (const mproc::serialization_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("mproc::from_bytes<std::vector<int"));
  }
}

}  // namespace

#endif  // MPROC_SERIALIZE_EXPECT_COMPILE_ERROR

// Big contiguous containers round-trip through the huge-page path.
// Buffers of huge_page_advice_bytes and more are reserved and advised before they are
// filled (big_vector.hpp): the bytes and the size must be those of the message all the same.
TEST(Serialize, BigContainersRoundTripThroughTheHugePagePath) {
  std::vector<std::uint8_t> bytes((std::size_t{5} << 20) + 3);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 131 + 7);
  EXPECT_EQ(mproc::from_bytes<std::vector<std::uint8_t>>(mproc::to_bytes(bytes)), bytes);
  const std::string text(std::size_t{4} << 20, 'q');
  EXPECT_EQ(mproc::from_bytes<std::string>(mproc::to_bytes(text)), text);
  std::vector<double> doubles(std::size_t{1} << 20);
  for (std::size_t i = 0; i < doubles.size(); ++i) doubles[i] = static_cast<double>(i) / 3;
  EXPECT_EQ(mproc::from_bytes<std::vector<double>>(mproc::to_bytes(doubles)), doubles);
}

// A message handed to read_flat as a queue hands it over: copying reads, and pieces in
// place of at most `piece_bytes` (as a block's end cuts them).
struct flat_source {
  const std::vector<std::byte>& bytes;
  std::size_t piece_bytes = 5;
  std::size_t at = 0;
  auto read() {
    return [this](std::byte* into, std::size_t n) {
      if (at + n > bytes.size()) throw std::logic_error("read past the message");
      std::memcpy(into, bytes.data() + at, n);
      at += n;
    };
  }
  auto read_piece() {
    return [this](std::size_t max) {
      if (at >= bytes.size() || max == 0) throw std::logic_error("read past the message");
      const std::size_t k = std::min({max, piece_bytes, bytes.size() - at});
      const std::span<const std::byte> piece(bytes.data() + at, k);
      at += k;
      return piece;
    };
  }
};

template <class T>
T read_flat_from(const std::vector<std::byte>& bytes, flat_source* source = nullptr) {
  flat_source own{bytes};
  flat_source& s = source ? *source : own;
  return mproc::detail::read_flat<T>(bytes.size(), s.read(), s.read_piece());
}

// Flat values (detail::is_flat_v) travel as flat_header + flat_elements, which must be
// exactly what to_bytes writes, and read_flat must decode exactly what from_bytes does.
template <class T>
void expect_flat_matches_to_bytes(const T& value) {
  static_assert(mproc::detail::is_flat_v<T>);
  const auto header = mproc::detail::flat_header(value);
  const auto elements = mproc::detail::flat_elements(value);
  std::vector<std::byte> pieces(header.begin(), header.end());
  pieces.insert(pieces.end(), elements.begin(), elements.end());
  EXPECT_EQ(pieces, mproc::to_bytes(value));
  flat_source source{pieces};
  EXPECT_EQ(read_flat_from<T>(pieces, &source), value);
  EXPECT_EQ(source.at, pieces.size());
}

// What queues, task arguments and results travel as: a memcpy-serializable value, or a
// tuple of them, as its values' own bytes; anything else as to_bytes writes it.
TEST(Serialize, MessagesOfRawValuesAndTuplesAreTheirOwnBytes) {
  namespace d = mproc::detail;
  std::vector<std::byte> out;
  d::encode_message(std::tuple<int, double, std::array<std::int16_t, 3>>{7, 2.5, {1, 2, 3}}, out);
  EXPECT_EQ(out.size(), sizeof(int) + sizeof(double) + 3 * sizeof(std::int16_t));
  using three = std::tuple<int, double, std::array<std::int16_t, 3>>;
  EXPECT_EQ(d::decode_message<three>(out, "test"), (three{7, 2.5, {1, 2, 3}}));
  out.clear();
  d::encode_message(std::tuple<>{}, out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(d::decode_message<std::tuple<>>(out, "test"), std::tuple<>{});
  out.push_back(std::byte{1});
  EXPECT_THROW((void)d::decode_message<std::tuple<>>(out, "test"), mproc::serialization_error);
  out.clear();
  d::encode_message(std::tuple<int, int>{1, 2}, out);
  out.pop_back();
  using two_ints = std::tuple<int, int>;
  EXPECT_THROW((void)d::decode_message<two_ints>(out, "test"), mproc::serialization_error);
  // Not raw: as to_bytes writes it.
  const std::tuple<int, std::string> mixed{3, "x"};
  out.clear();
  d::encode_message(mixed, out);
  EXPECT_EQ(out, mproc::to_bytes(mixed));
  using int_and_text = std::tuple<int, std::string>;
  EXPECT_EQ(d::decode_message<int_and_text>(out, "test"), mixed);
}

TEST(Serialize, FlatValuesArePutAsTheirHeaderThenTheirElements) {
  static_assert(!mproc::detail::is_flat_v<std::vector<bool>>);
  static_assert(!mproc::detail::is_flat_v<std::vector<std::string>>);
  static_assert(!mproc::detail::is_flat_v<int>);
  expect_flat_matches_to_bytes(std::vector<std::uint8_t>{});
  expect_flat_matches_to_bytes(std::vector<std::uint8_t>{1, 2, 3});
  expect_flat_matches_to_bytes(std::vector<double>{1.5, -2.25});
  expect_flat_matches_to_bytes(std::vector<std::int64_t>(1000, -7));
  std::vector<std::int16_t> more_than_a_buffer(20'000);  // read_flat reads wide elements 8 KiB at a time
  for (std::size_t i = 0; i < more_than_a_buffer.size(); ++i) more_than_a_buffer[i] = static_cast<std::int16_t>(i * 7);
  expect_flat_matches_to_bytes(more_than_a_buffer);
  std::vector<std::uint8_t> bytes(10'000);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 13);
  expect_flat_matches_to_bytes(bytes);
  expect_flat_matches_to_bytes(std::string("hello"));
  expect_flat_matches_to_bytes(std::string());
  expect_flat_matches_to_bytes(std::u16string(u"wide"));
}

TEST(Serialize, ReadFlatRejectsWhatFromBytesRejects) {
  auto good = mproc::to_bytes(std::vector<std::int32_t>{1, 2, 3});
  auto wrong_version = good;
  wrong_version[0] = std::byte{9};
  EXPECT_THROW(read_flat_from<std::vector<std::int32_t>>(wrong_version), mproc::serialization_error);
  auto wrong_count = good;
  wrong_count[1] = std::byte{2};
  EXPECT_THROW(read_flat_from<std::vector<std::int32_t>>(wrong_count), mproc::serialization_error);
  auto wrong_text_count = mproc::to_bytes(std::string("abc"));  // read by pieces
  wrong_text_count[1] = std::byte{7};
  EXPECT_THROW(read_flat_from<std::string>(wrong_text_count), mproc::serialization_error);
  auto ragged = good;
  ragged.push_back(std::byte{0});
  EXPECT_THROW(read_flat_from<std::vector<std::int32_t>>(ragged), mproc::serialization_error);
  const std::vector<std::byte> short_message(5, std::byte{1});
  EXPECT_THROW(read_flat_from<std::vector<std::int32_t>>(short_message), mproc::serialization_error);
}
