// Stateful pool tasks: serialisable function objects and mproc::partial, through apply,
// apply_async, map, map_async, starmap and imap, with real worker processes. The state
// is data that travels with the task (once per map chunk); the function is the table's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "mproc/pool.hpp"

namespace {

struct config {
  int factor = 1;
  std::string tag;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(factor, tag);
  }
};

std::string scale(const config& c, int x) { return c.tag + std::to_string(c.factor * x); }
int add3(int a, int b, int c) { return a * 100 + b * 10 + c; }

// A function object with state of its own.
struct affine {
  int a = 0;
  int b = 0;
  int operator()(int x) const { return a * x + b; }
  template <class Archive>
  void serialize(Archive& archive) {
    archive(a, b);
  }
};

// Counts, in each worker, how many times a state was decoded: a map's chunk decodes its
// function once, whatever its number of items.
inline int decodes_in_this_process = 0;
struct decode_counter {
  int salt = 0;
  std::pair<int, int> operator()(int) const { return {static_cast<int>(::getpid()), decodes_in_this_process}; }
  template <class Archive>
  void save(Archive& archive) const {
    archive(salt);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(salt);
    ++decodes_in_this_process;
  }
};

// A state that refuses to decode in the worker.
struct refuses_to_load {
  int value = 7;
  int operator()(int x) const { return x + value; }
  template <class Archive>
  void save(Archive& archive) const {
    archive(value);
  }
  template <class Archive>
  void load(Archive&) {
    throw std::runtime_error("this state cannot be rebuilt here");
  }
};

TEST(PoolStateful, PartialBindsLeadingArgumentsAsFunctoolsPartialDoes) {
  mproc::pool p(2);
  const auto f = mproc::partial(scale, config{3, "x="});
  EXPECT_EQ(f(5), "x=15");  // a partial is callable in the parent too
  EXPECT_EQ(p.apply(f, 5), "x=15");
  EXPECT_EQ(p.apply_async(mproc::partial(add3, 1, 2), 3).get(), 123);
  EXPECT_EQ(p.apply(mproc::partial(add3, 1, 2, 3)), 123);
}

TEST(PoolStateful, PartialsNestAndBindLambdas) {
  mproc::pool p(2);
  const auto twice = mproc::partial(mproc::partial(add3, 4), 5);
  EXPECT_EQ(p.apply(twice, 6), 456);
  const auto lambda =
      mproc::partial([](const std::string& prefix, int x) { return prefix + std::to_string(x); }, std::string("n"));
  EXPECT_EQ(p.apply(lambda, 9), "n9");
  EXPECT_EQ(p.apply(mproc::partial(affine{2, 1}), 10), 21);
}

TEST(PoolStateful, AFunctionObjectCarriesItsStateToEveryPoolCall) {
  mproc::pool p(2);
  const affine f{3, -1};
  EXPECT_EQ(p.apply(f, 4), 11);
  std::vector<int> items(1000);
  for (int i = 0; i < 1000; ++i) items[static_cast<std::size_t>(i)] = i;
  std::vector<int> expected;
  for (int x : items) expected.push_back(f(x));
  EXPECT_EQ(p.map(f, items, 7), expected);
  EXPECT_EQ(p.map_async(affine{3, -1}, items).get(), expected);
  std::vector<int> lazily;
  for (int r : p.imap(f, items, 50)) lazily.push_back(r);
  EXPECT_EQ(lazily, expected);
  std::vector<std::tuple<int, int, int>> triples{{1, 2, 3}, {4, 5, 6}};
  EXPECT_EQ(p.starmap(mproc::partial(add3), triples), (std::vector<int>{123, 456}));
}

TEST(PoolStateful, MapWithAPartialMatchesThePlainFunction) {
  mproc::pool p(2);
  std::vector<int> items(100000);
  for (int i = 0; i < 100000; ++i) items[static_cast<std::size_t>(i)] = i % 1000;
  const config c{2, ""};
  std::vector<std::string> expected;
  for (int x : items) expected.push_back(scale(c, x));
  EXPECT_EQ(p.map(mproc::partial(scale, c), items), expected);
}

TEST(PoolStateful, AMapChunkDecodesItsFunctionOnce) {
  mproc::pool p(2);
  const std::size_t items = 1000;
  const std::size_t chunksize = 100;
  const auto results = p.map(decode_counter{1}, std::vector<int>(items), chunksize);
  ASSERT_EQ(results.size(), items);
  // Each chunk gives its items one (worker, decode number) pair.
  std::set<std::pair<int, int>> decodes(results.begin(), results.end());
  EXPECT_EQ(decodes.size(), items / chunksize);
  for (std::size_t c = 0; c < items; c += chunksize) {
    for (std::size_t i = c; i < c + chunksize; ++i) EXPECT_EQ(results[i], results[c]) << "item " << i;
  }
}

TEST(PoolStateful, AStateThatCannotBeDecodedFailsItsTaskAndThePoolGoesOn) {
  mproc::pool p(1);
  EXPECT_THROW(p.apply(refuses_to_load{}, 1), mproc::serialization_error);
  EXPECT_THROW(p.map(refuses_to_load{}, std::vector<int>{1, 2, 3}), mproc::serialization_error);
  EXPECT_EQ(p.apply(affine{1, 1}, 1), 2);
}

}  // namespace
