// What every target in tests/fuzz provides, to libFuzzer (`<name>_fuzz`, built with
// MPROC_FUZZ=ON) and to replay_main.cpp (`mproc_fuzz_<name>_replay`, built always: the
// seed corpus and every input that once failed become regression tests under ctest).
//
// A target's contract: LLVMFuzzerTestOneInput accepts any bytes and returns 0; when the
// code under test breaks one of its promises it calls mproc_fuzz::fail, which aborts, so
// that libFuzzer saves the input (and a replay fails). Crashes and sanitizer reports count
// the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace mproc_fuzz {

// Small valid inputs, from which the committed seed corpus tests/fuzz/corpus/<name>/ was
// written (`mproc_fuzz_<name>_replay --write-seeds DIR`).
std::vector<std::vector<std::uint8_t>> seeds();

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "mproc fuzz: invariant broken: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

inline void require(bool ok, const char* what) {
  if (!ok) fail(what);
}

}  // namespace mproc_fuzz
