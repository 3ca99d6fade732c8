// The readable name of a C++ type, as error reports print it ("std::runtime_error", not
// "St13runtime_error"), and as exceptions cross between processes by name.
#pragma once

#include <string>
#include <typeinfo>

namespace mproc::detail {

// The demangled name, or the mangled one if the ABI cannot demangle it.
std::string demangled_name(const std::type_info& type);

}  // namespace mproc::detail
