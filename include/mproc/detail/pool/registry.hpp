// The registry: every task function of the binary under a name that is the same in every
// process running that binary, so a task can name its function where addresses mean
// nothing (another rank of an MPI job, a worker on another machine).
//
// Two kinds of entry, both made before main by static initialisers, so every process of
// the binary holds the same entries whatever code it runs:
// - invokers (the typed code that decodes a task, calls its function and encodes the
//   result): registered by the template that submits a task, as it is instantiated, under
//   the mangled name of its instantiation. A lambda or function object is its invoker's
//   type, so it needs nothing more.
// - function pointers, which templates cannot see: registered with MPROC_REMOTE(f) at
//   namespace scope, under f's spelling and type.
// A snapshot of the registry (registry_table) numbers each kind sorted by name and hashes
// the names with what else must agree for bytes to mean the same on both sides (wire
// format, mproc version, pointer size, endianness, compiler); two processes with equal
// hashes agree on every index.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

#include "mproc/detail/pool/task_sink.hpp"
#include "mproc/serialize.hpp"  // cereal, with its specialize

namespace mproc::detail {

// For static initialisers: never throw. A name registered twice with different targets
// (two functions with internal linkage spelled alike) is kept as a conflict, reported
// when a task uses it.
bool register_invoker(const std::type_info& key, task_invoker invoker) noexcept;
bool register_function(const char* spelling, const std::type_info& type, generic_function function) noexcept;

template <task_invoker Invoker>
struct invoker_registrar {
  static inline const bool registered = register_invoker(typeid(invoker_registrar), Invoker);
};

// Instantiates Invoker's registrar: called from each template that submits a task, so the
// registration happens before main in every process of the binary, not when (or whether)
// this process reaches the call.
template <task_invoker Invoker>
inline void register_at_startup() noexcept {
  static_cast<void>(&invoker_registrar<Invoker>::registered);
}

// The registry as numbered at one moment.
class function_table {
 public:
  static constexpr std::uint32_t no_function = 0xffffffffU;  // a task whose invoker makes its function

  // A task's (invoker, function) as indices; mproc::error naming the remedy for a function
  // pointer not registered with MPROC_REMOTE, or a name registered twice.
  std::uint32_t invoker_index(task_invoker invoker) const;
  std::uint32_t function_index(generic_function function) const;
  // The other way, for a task that came from elsewhere: serialization_error for an index
  // out of range or a conflicting name (a forged or corrupt message, never a wrong call).
  task_invoker invoker_at(std::uint32_t index) const;
  generic_function function_at(std::uint32_t index) const;
  // A registered function's index by its name, and the name at an index.
  std::uint32_t function_named(const std::string& name) const;
  const std::string& name_at(std::uint32_t index) const;
  // The same for invokers (the forkserver names its child's invoker): invoker_named throws
  // serialization_error for a name this binary did not register.
  std::uint32_t invoker_named(const std::string& name) const;
  const std::string& invoker_name_at(std::uint32_t index) const;

  std::uint64_t hash() const noexcept { return hash_; }
  std::size_t invoker_count() const noexcept { return invokers_.size(); }
  std::size_t function_count() const noexcept { return functions_.size(); }

  struct entry {
    std::string name;
    std::uintptr_t target = 0;  // 0: the name names two targets
  };
  function_table(std::vector<entry> invokers, std::vector<entry> functions);

 private:
  std::vector<entry> invokers_;   // sorted by name
  std::vector<entry> functions_;  // sorted by name
  std::map<std::uintptr_t, std::uint32_t> invoker_index_;
  std::map<std::uintptr_t, std::uint32_t> function_index_;
  std::uint64_t hash_ = 0;
};

// The registry now (made again only when something registered since the last call).
std::shared_ptr<const function_table> registry_table();

// A function pointer as a value, as Python pickles a function: by its registered name.
// function_name: mproc::error naming MPROC_REMOTE for one that is not registered.
// function_named: serialization_error unless this binary registered `name` (whose spelling
// ends with the type `type`).
std::string function_name(generic_function function);
generic_function function_named(const std::string& name, const std::type_info& type);

template <class R, class... A>
struct serial_ok<R (*)(A...)> : std::true_type {};

}  // namespace mproc::detail

namespace cereal {
// A function pointer saves as its registered name (not as a raw pointer, which cereal
// refuses: this pair is the one cereal uses).
template <class Archive, class R, class... A>
struct specialize<Archive, R (*)(A...), specialization::non_member_load_save> {};

template <class Archive, class R, class... A>
void CEREAL_SAVE_FUNCTION_NAME(Archive& archive, R (*const& function)(A...)) {
  archive(::mproc::detail::function_name(reinterpret_cast<::mproc::detail::generic_function>(function)));
}
template <class Archive, class R, class... A>
void CEREAL_LOAD_FUNCTION_NAME(Archive& archive, R (*&function)(A...)) {
  std::string name;
  archive(name);
  function = reinterpret_cast<R (*)(A...)>(::mproc::detail::function_named(name, typeid(R(*)(A...))));
}
}  // namespace cereal

#define MPROC_DETAIL_CONCAT2(a, b) a##b
#define MPROC_DETAIL_CONCAT(a, b) MPROC_DETAIL_CONCAT2(a, b)

// Registers function f (by its name and type) for pools on other machines (mproc::mpi,
// mproc::redis), and so that f can travel as a value. At namespace scope, once per
// function, in any one file of the binary.
#define MPROC_REMOTE(f)                                                                           \
  [[maybe_unused]] static const bool MPROC_DETAIL_CONCAT(mproc_remote_registered_, __COUNTER__) = \
      ::mproc::detail::register_function(#f, typeid(decltype(&(f))),                              \
                                         reinterpret_cast<::mproc::detail::generic_function>(&(f)))
