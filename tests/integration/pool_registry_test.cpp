// The registry: task functions named the same in every process of the binary, and
// functions that travel as values by their registered names (as Python pickles them).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "mproc/detail/pool/registry.hpp"
#include "mproc/pool.hpp"

namespace {

int mul(int a, int b) { return a * b; }
MPROC_REMOTE(mul);
int add(int a, int b) { return a + b; }
MPROC_REMOTE(add);
int unregistered_sub(int a, int b) { return a - b; }
double half(double x) { return x / 2; }
MPROC_REMOTE(half);

// The tutorial's calculate(func, args): the function is an argument.
int calculate(int (*f)(int, int), std::tuple<int, int> args) { return f(std::get<0>(args), std::get<1>(args)); }

// Never called: its task's invoker registers before main all the same.
constexpr auto add_char = [](int x, char c) { return x + c; };
[[maybe_unused]] void never_called(mproc::pool& p) { p.apply(add_char, 1, 'a'); }

TEST(Registry, AFunctionTravelsAsATaskArgumentByItsRegisteredName) {
  mproc::pool p(2);
  EXPECT_EQ(p.apply(calculate, mul, std::tuple(6, 7)), 42);
  EXPECT_EQ(p.apply(calculate, add, std::tuple(6, 7)), 13);
  const std::vector<std::tuple<int (*)(int, int), std::tuple<int, int>>> jobs{{mul, {2, 3}}, {add, {2, 3}}};
  EXPECT_EQ(p.starmap(calculate, jobs), (std::vector<int>{6, 5}));
}

TEST(Registry, AnUnregisteredFunctionAsAnArgumentNamesTheRemedy) {
  mproc::pool p(1);
  try {
    p.apply(calculate, unregistered_sub, std::tuple(1, 2));
    FAIL() << "no error";
  } catch (const mproc::error& e) {
    EXPECT_NE(std::string(e.what()).find("MPROC_REMOTE(f)"), std::string::npos) << e.what();
  }
}

TEST(Registry, AFunctionValueRoundTripsAndChecksItsType) {
  const auto bytes = mproc::to_bytes(&mul);
  EXPECT_EQ(mproc::from_bytes<int (*)(int, int)>(bytes), &mul);
  EXPECT_EQ(mproc::from_bytes<int (*)(int, int)>(mproc::to_bytes<int (*)(int, int)>(nullptr)), nullptr);
  // The same name read as a function of another type: an error, never a wrong call.
  EXPECT_THROW(mproc::from_bytes<double (*)(double)>(bytes), mproc::serialization_error);
  EXPECT_EQ(mproc::from_bytes<double (*)(double)>(mproc::to_bytes(&half))(3.0), 1.5);
  // A name this binary does not have (another build sent it).
  EXPECT_THROW(mproc::from_bytes<int (*)(int, int)>(mproc::to_bytes(std::string("nothing PFiiiE"))),
               mproc::serialization_error);
}

TEST(Registry, TaskTypesRegisterBeforeMainWhetherOrNotTheyRun) {
  const auto table = mproc::detail::registry_table();
  // never_called's task is among the invokers; every entry has an index both ways.
  const auto invoker = &mproc::detail::invoke_apply<std::remove_const_t<decltype(add_char)>, int, char>;
  EXPECT_EQ(table->invoker_at(table->invoker_index(invoker)), invoker);
  EXPECT_GE(table->function_count(), 3U);
  const auto mul_index = table->function_index(reinterpret_cast<mproc::detail::generic_function>(&mul));
  EXPECT_EQ(table->function_at(mul_index), reinterpret_cast<mproc::detail::generic_function>(&mul));
  EXPECT_THROW(table->function_at(static_cast<std::uint32_t>(table->function_count())), mproc::serialization_error);
  EXPECT_THROW(table->invoker_at(static_cast<std::uint32_t>(table->invoker_count())), mproc::serialization_error);
  EXPECT_THROW(table->function_index(reinterpret_cast<mproc::detail::generic_function>(&unregistered_sub)),
               mproc::error);
}

TEST(Registry, TheHashIsStableAndChangesWithTheTable) {
  const auto before = mproc::detail::registry_table();
  EXPECT_EQ(mproc::detail::registry_table()->hash(), before->hash());  // a snapshot, made once
  // A registration after main (a plugin loaded late) makes a new table with another hash.
  mproc::detail::register_function("late_function", typeid(int (*)(int, int)),
                                   reinterpret_cast<mproc::detail::generic_function>(&unregistered_sub));
  const auto after = mproc::detail::registry_table();
  EXPECT_NE(after->hash(), before->hash());
  EXPECT_EQ(after->function_count(), before->function_count() + 1);
}

}  // namespace
