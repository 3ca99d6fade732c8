// The bulk encodings pool::map uses for vectors of numbers must be byte for byte what
// to_bytes writes, and their decoder must reject what does not fit the chunk.
#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mproc/pool.hpp"

namespace {

using mproc::detail::decode_vector_into;
using mproc::detail::encode_chunk_after_header;
using mproc::detail::pool_core;

template <class T>
void expect_same_bytes_as_to_bytes(std::span<const T> items) {
  std::vector<std::byte> fast(3, std::byte{0x5a});  // a dirty, too small buffer
  const std::size_t size = encode_chunk_after_header({}, items, fast);
  std::vector<std::byte> reference = mproc::to_bytes(std::vector<T>(items.begin(), items.end()));
  ASSERT_EQ(size, pool_core::task_header_bytes + reference.size());
  EXPECT_TRUE(std::equal(reference.begin(), reference.end(), fast.begin() + pool_core::task_header_bytes));
}

TEST(PoolFrames, ChunkEncodingIsToBytesOfTheVector) {
  const std::vector<int> none;
  const std::vector<int> ints{1, -2, 3};
  const std::vector<double> doubles{0.5, 1e300};
  const bool bools[] = {true, false};                 // the general path
  const std::vector<std::string> strings{"a", "bc"};  // likewise
  expect_same_bytes_as_to_bytes<int>(none);
  expect_same_bytes_as_to_bytes<int>(ints);
  expect_same_bytes_as_to_bytes<double>(doubles);
  expect_same_bytes_as_to_bytes<bool>(bools);
  expect_same_bytes_as_to_bytes<std::string>(strings);
}

TEST(PoolFrames, ABufferReusedForASmallerChunkHoldsJustThatMessage) {
  std::vector<std::byte> buffer;
  const std::vector<std::int64_t> big(1000, 7);
  const std::vector<std::int64_t> small{1, 2};
  encode_chunk_after_header({}, std::span<const std::int64_t>(big), buffer);
  const std::size_t size = encode_chunk_after_header({}, std::span<const std::int64_t>(small), buffer);
  std::vector<std::int64_t> out(2);
  EXPECT_TRUE(decode_vector_into(
      std::span(buffer).subspan(pool_core::task_header_bytes, size - pool_core::task_header_bytes), std::span(out)));
  EXPECT_EQ(out, small);
}

TEST(PoolFrames, DecodeIntoPlaceChecksVersionCountAndLength) {
  const std::vector<std::int64_t> values{4, 5, 6};
  const auto bytes = mproc::to_bytes(values);
  std::vector<std::int64_t> into(3);
  EXPECT_TRUE(decode_vector_into(std::span(bytes), std::span(into)));
  EXPECT_EQ(into, values);

  std::vector<std::int64_t> wrong_count(2);
  EXPECT_THROW(decode_vector_into(std::span(bytes), std::span(wrong_count)), mproc::serialization_error);
  auto truncated = bytes;
  truncated.pop_back();
  EXPECT_THROW(decode_vector_into(std::span(truncated), std::span(into)), mproc::serialization_error);
  auto bad_version = bytes;
  bad_version[0] = std::byte{0x7f};
  EXPECT_THROW(decode_vector_into(std::span(bad_version), std::span(into)), mproc::serialization_error);
  EXPECT_THROW(decode_vector_into(std::span<const std::byte>(), std::span(into)), mproc::serialization_error);
  std::vector<std::string> strings(1);
  EXPECT_FALSE(decode_vector_into(std::span(bytes), std::span(strings)));  // not its layout: caller decodes
}

}  // namespace
