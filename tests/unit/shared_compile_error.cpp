// Must not compile: a shared_value of a type that owns heap memory (built only by the
// test unit.Shared.NotTriviallyCopyableFailsToCompileWithAHint, which expects mproc's hint).
#include <string>

#include "mproc/shared.hpp"

void shared_string() {
  mproc::shared_value<std::string> v;
  (void)v;
}
