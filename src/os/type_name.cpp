#include "mproc/detail/os/type_name.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace mproc::detail {

std::string demangled_name(const std::type_info& type) {
  int status = 0;
  const std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(type.name(), nullptr, nullptr, &status),
                                                    std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(type.name());
}

}  // namespace mproc::detail
