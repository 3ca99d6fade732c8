// Exceptions crossing from a worker to the parent: a type name and a message on the wire,
// recreated as their own type when the parent knows how.
#include <cxxabi.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>

#include "mproc/detail/os/type_name.hpp"
#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {
namespace {

using factory = std::exception_ptr (*)(const std::string& what);

template <class E>
std::exception_ptr make(const std::string& what) {
  return std::make_exception_ptr(E(what));
}

struct exception_registry {
  std::mutex mutex;
  std::map<std::string, factory, std::less<>> factories;

  exception_registry() {
    add<std::runtime_error>();
    add<std::logic_error>();
    add<std::invalid_argument>();
    add<std::out_of_range>();
    add<std::domain_error>();
    add<std::length_error>();
    add<std::range_error>();
    add<std::overflow_error>();
    add<std::underflow_error>();
    factories[demangled_name(typeid(std::bad_alloc))] = [](const std::string&) {
      return std::make_exception_ptr(std::bad_alloc());
    };
    add<error>();
    add<timeout_error>();
    add<queue_full>();
    add<queue_empty>();
    add<closed_error>();
    add<cancelled_error>();
    add<worker_lost>();
    add<broken_barrier>();
    add<serialization_error>();
  }
  template <class E>
  void add() {
    factories[demangled_name(typeid(E))] = &make<E>;
  }
};

exception_registry& registry() {
  static exception_registry* const the = new exception_registry;  // never destroyed
  return *the;
}

struct wire_exception {
  std::string type;
  std::string what;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(type, what);
  }
};

}  // namespace

void register_exception_factory(std::string type_name, std::exception_ptr (*make_exception)(const std::string&)) {
  exception_registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.factories[std::move(type_name)] = make_exception;
}

void encode_current_exception(std::vector<std::byte>& out) {
  wire_exception e;
  try {
    throw;
  } catch (const remote_error& remote) {
    e = {remote.type_name(), remote.what()};  // keeps the original type across hops
  } catch (const std::exception& ex) {
    e = {demangled_name(typeid(ex)), ex.what()};
  } catch (...) {
    const std::type_info* type = abi::__cxa_current_exception_type();
    e = {type != nullptr ? demangled_name(*type) : "unknown", "(not derived from std::exception)"};
  }
  to_bytes(e, out);
}

std::exception_ptr decode_exception(std::span<const std::byte> bytes) {
  wire_exception e;
  try {
    e = from_bytes<wire_exception>(bytes);
  } catch (const serialization_error& bad) {
    return std::make_exception_ptr(remote_error(
        std::string("mproc::async_result::get: the task failed, and its exception could not be decoded (") +
            bad.what() + ")",
        "unknown"));
  }
  exception_registry& r = registry();
  factory make_it = nullptr;
  {
    std::lock_guard lock(r.mutex);
    if (auto it = r.factories.find(e.type); it != r.factories.end()) make_it = it->second;
  }
  if (make_it != nullptr) return make_it(e.what);
  return std::make_exception_ptr(remote_error(e.what, e.type));
}

}  // namespace mproc::detail
