// The registry's store, filled by static initialisers, and its numbered snapshots.
#include "mproc/detail/pool/registry.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <utility>

#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

#ifndef MPROC_VERSION_STRING
#error "the build defines MPROC_VERSION_STRING (CMakeLists.txt)"
#endif

namespace mproc::detail {
namespace {

struct registry_store {
  std::mutex mutex;
  std::map<std::string, std::uintptr_t> invokers;  // 0: conflicting targets
  std::map<std::string, std::uintptr_t> functions;
  std::uint64_t generation = 0;
  std::uint64_t table_generation = ~std::uint64_t{0};
  std::shared_ptr<const function_table> table;
};

// A function-local static: registrars of other files run before main in any order.
registry_store& store() {
  static registry_store* s = new registry_store;  // never destroyed: late static destructors may still look
  return *s;
}

void add(std::map<std::string, std::uintptr_t>& names, std::string name, std::uintptr_t target) {
  auto [it, inserted] = names.emplace(std::move(name), target);
  if (!inserted && it->second != target) it->second = 0;
}

// FNV-1a, 64 bits: the hash only has to tell tables apart, and be the same everywhere.
class fnv1a {
 public:
  void bytes(const void* data, std::size_t n) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) {
      value_ ^= p[i];
      value_ *= 0x100000001b3ULL;
    }
  }
  void text(const std::string& s) noexcept {
    const std::uint64_t n = s.size();
    bytes(&n, sizeof n);
    bytes(s.data(), s.size());
  }
  std::uint64_t value() const noexcept { return value_; }

 private:
  std::uint64_t value_ = 0xcbf29ce484222325ULL;
};

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace

bool register_invoker(const std::type_info& key, task_invoker invoker) noexcept {
  try {
    registry_store& s = store();
    std::lock_guard lock(s.mutex);
    add(s.invokers, key.name(), reinterpret_cast<std::uintptr_t>(invoker));
    ++s.generation;
    return true;
  } catch (...) {
    return false;  // out of memory before main: the task fails at submit, naming itself
  }
}

bool register_function(const char* spelling, const std::type_info& type, generic_function function) noexcept {
  try {
    registry_store& s = store();
    std::lock_guard lock(s.mutex);
    add(s.functions, std::string(spelling) + " " + type.name(), reinterpret_cast<std::uintptr_t>(function));
    ++s.generation;
    return true;
  } catch (...) {
    return false;
  }
}

std::shared_ptr<const function_table> registry_table() {
  registry_store& s = store();
  std::lock_guard lock(s.mutex);
  if (s.table_generation != s.generation || !s.table) {
    const auto entries = [](const std::map<std::string, std::uintptr_t>& names) {
      std::vector<function_table::entry> out;
      out.reserve(names.size());
      for (const auto& [name, target] : names) out.push_back({name, target});
      return out;  // sorted: a std::map's order
    };
    s.table = std::make_shared<const function_table>(entries(s.invokers), entries(s.functions));
    s.table_generation = s.generation;
  }
  return s.table;
}

function_table::function_table(std::vector<entry> invokers, std::vector<entry> functions)
    : invokers_(std::move(invokers)), functions_(std::move(functions)) {
  fnv1a h;
  h.text("mproc function table 1");
  h.text(MPROC_VERSION_STRING);
  h.text(compiler());
  const std::uint64_t facts[] = {serialization_format_version, sizeof(void*),
                                 std::endian::native == std::endian::little ? 1U : 2U, invokers_.size(),
                                 functions_.size()};
  h.bytes(facts, sizeof facts);
  for (std::uint32_t i = 0; i < invokers_.size(); ++i) {
    h.text(invokers_[i].name);
    if (invokers_[i].target != 0) invoker_index_.emplace(invokers_[i].target, i);
  }
  for (std::uint32_t i = 0; i < functions_.size(); ++i) {
    h.text(functions_[i].name);
    // Two spellings of one function (f and ns::f): the first name is its name everywhere.
    if (functions_[i].target != 0) function_index_.emplace(functions_[i].target, i);
  }
  hash_ = h.value();
}

std::uint32_t function_table::invoker_index(task_invoker invoker) const {
  const auto it = invoker_index_.find(reinterpret_cast<std::uintptr_t>(invoker));
  if (it != invoker_index_.end()) return it->second;
  throw error(
      "mproc: this task's type is registered under a name that another task type of the binary also has (two "
      "types with internal linkage, spelled alike, in two files): give one of them another name, or move it out of "
      "its anonymous namespace");
}

std::uint32_t function_table::function_index(generic_function function) const {
  if (function == nullptr) return no_function;
  const auto it = function_index_.find(reinterpret_cast<std::uintptr_t>(function));
  if (it != function_index_.end()) return it->second;
  throw error(
      "mproc: a function pointer (a task's function for a pool on other machines, or a function passed as a value) "
      "is not registered: add MPROC_REMOTE(f) at namespace scope beside f's definition (a lambda without captures "
      "registers itself as a task); if f is registered, another function of the same name and type in another "
      "file is too: rename one");
}

std::uint32_t function_table::function_named(const std::string& name) const {
  const auto it = std::lower_bound(functions_.begin(), functions_.end(), name,
                                   [](const entry& e, const std::string& n) { return e.name < n; });
  if (it == functions_.end() || it->name != name)
    throw serialization_error("mproc: no function of this binary is registered as \"" + name +
                              "\" (MPROC_REMOTE): the sender runs another build");
  return static_cast<std::uint32_t>(it - functions_.begin());
}

const std::string& function_table::name_at(std::uint32_t index) const {
  if (index >= functions_.size()) throw error("mproc: no registered function at index " + std::to_string(index));
  return functions_[index].name;
}

std::uint32_t function_table::invoker_named(const std::string& name) const {
  const auto it = std::lower_bound(invokers_.begin(), invokers_.end(), name,
                                   [](const entry& e, const std::string& n) { return e.name < n; });
  if (it == invokers_.end() || it->name != name)
    throw serialization_error("mproc: no task of this binary is registered as \"" + name +
                              "\": the sender runs another build, or registered it after this process started "
                              "(a library loaded later)");
  return static_cast<std::uint32_t>(it - invokers_.begin());
}

const std::string& function_table::invoker_name_at(std::uint32_t index) const {
  if (index >= invokers_.size()) throw error("mproc: no registered task at index " + std::to_string(index));
  return invokers_[index].name;
}

task_invoker function_table::invoker_at(std::uint32_t index) const {
  if (index >= invokers_.size() || invokers_[index].target == 0)
    throw serialization_error("mproc: a task names invoker " + std::to_string(index) + " of " +
                              std::to_string(invokers_.size()) + ": not a task of this binary");
  return reinterpret_cast<task_invoker>(invokers_[index].target);
}

generic_function function_table::function_at(std::uint32_t index) const {
  if (index == no_function) return nullptr;
  if (index >= functions_.size() || functions_[index].target == 0)
    throw serialization_error("mproc: a task names function " + std::to_string(index) + " of " +
                              std::to_string(functions_.size()) + ": not a registered function of this binary");
  return reinterpret_cast<generic_function>(functions_[index].target);
}

std::string function_name(generic_function function) {
  if (function == nullptr) return {};
  const auto table = registry_table();
  return table->name_at(table->function_index(function));
}

generic_function function_named(const std::string& name, const std::type_info& type) {
  if (name.empty()) return nullptr;
  const std::string suffix = std::string(" ") + type.name();
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    throw serialization_error("mproc: a function named \"" + name +
                              "\" arrived where a function of another type "
                              "is expected");
  const auto table = registry_table();
  return table->function_at(table->function_named(name));
}

}  // namespace mproc::detail
