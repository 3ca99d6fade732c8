// Fuzz target: the pool's task and result frames.
//
// Input, first byte even: a task message, [0][function index: u32][argument bytes...],
// sent to a real pool (one worker) through pool_core::submit, which frames it as every
// task is framed; the worker decodes it as it decodes every task. The pool knows five
// functions (ids 0-4: typed apply and map invokers, each counting its calls in memory
// shared with the workers). Promised:
// - an index the pool does not know fails the task with mproc::error and calls nothing
//   (no invoker, no function): a forged index is never a jump;
// - a known index gives exactly what running its invoker here on the same bytes gives
//   (the encoded result, or the same exception), and runs it once in the worker;
// - the worker never dies of it (no worker_lost) and the pool goes on.
// Input, first byte odd: a result payload, [1][what][argument][payload...], decoded as the
// parent decodes a task's result: decode_exception for a failed task; async_state<R>
// for apply; map_gather<R> for a map chunk (total items and the chunk's offset from
// `argument`); imap_state<R> for an imap chunk. Promised: a value equal to decode_message of
// the payload, or the task fails with serialization_error (an exception payload: some
// exception, never a throw from decode_exception); a map chunk whose result count is not
// the chunk's item count fails the map and writes nothing.
//
// Result frame headers (task id, kind) and task headers are read inside src/pool_core.cpp,
// which offers no entry point to call them directly: they are covered here only as the real
// pool produces them.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <typeinfo>
#include <variant>
#include <vector>

#include "fuzz_target.hpp"
#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"
#include "mproc/serialize.hpp"

namespace pool_frames_fuzz {

namespace d = mproc::detail;
using mproc_fuzz::fail;
using mproc_fuzz::require;

// --- the functions the pool knows ----------------------------------------------------------

constexpr std::size_t function_count = 5;

// Shared with the pool's zygote and workers (mapped before the pool forks).
struct counters {
  std::atomic<std::uint64_t> invoked[function_count];  // invoker entered
  std::atomic<std::uint64_t> called[function_count];   // function body entered
};
counters* shared = nullptr;

int add(int a, int b) {
  shared->called[0].fetch_add(1);
  int sum = 0;
  if (__builtin_add_overflow(a, b, &sum))
    throw std::overflow_error("add: " + std::to_string(a) + " + " + std::to_string(b));
  return sum;
}

std::string join(std::vector<std::string> parts, std::string separator) {
  shared->called[1].fetch_add(1);
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i != 0) out += separator;
    out += parts[i];
  }
  if (out.size() > 1'000'000) throw std::length_error("join: too long");
  return out;
}

std::uint64_t weigh(std::variant<std::int64_t, std::string, std::vector<double>> item,
                    std::optional<std::uint64_t> scale) {
  shared->called[2].fetch_add(1);
  const std::uint64_t size = std::visit(
      [](const auto& v) -> std::uint64_t {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::int64_t>) {
          return static_cast<std::uint64_t>(v);
        } else {
          return v.size();
        }
      },
      item);
  if (!scale) throw std::invalid_argument("weigh: no scale");
  return size * *scale;  // unsigned: wraps, defined
}

int square(int x) {
  shared->called[3].fetch_add(1);
  return static_cast<int>(static_cast<unsigned>(x) * static_cast<unsigned>(x));
}

std::string label(std::string name, int n) {
  shared->called[4].fetch_add(1);
  if (name.empty()) throw mproc::error("label: empty name");
  return name + ":" + std::to_string(n);
}

template <std::size_t I, d::task_invoker Inner>
void counted(d::generic_function function, std::span<const std::byte> arguments, std::vector<std::byte>& result) {
  shared->invoked[I].fetch_add(1);
  Inner(function, arguments, result);
}

struct entry {
  d::task_invoker invoker;
  d::generic_function function;
};

const entry table[function_count] = {
    {&counted<0, &d::invoke_apply<decltype(&add), int, int>>, d::to_generic(&add)},
    {&counted<1, &d::invoke_apply<decltype(&join), std::vector<std::string>, std::string>>, d::to_generic(&join)},
    {&counted<2, &d::invoke_apply<decltype(&weigh), std::variant<std::int64_t, std::string, std::vector<double>>,
                                  std::optional<std::uint64_t>>>,
     d::to_generic(&weigh)},
    {&counted<3, &d::invoke_chunk<decltype(&square), int, false>>, d::to_generic(&square)},
    {&counted<4, &d::invoke_chunk<decltype(&label), std::tuple<std::string, int>, true>>, d::to_generic(&label)},
};

// --- the pool ---------------------------------------------------------------------------------

d::pool_core& pool() {
  static const std::unique_ptr<d::pool_core> core = [] {
    void* memory = ::mmap(nullptr, sizeof(counters), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    require(memory != MAP_FAILED, "mmap of the call counters");
    shared = new (memory) counters{};
    d::pool_config config;
    config.processes = 1;
    auto made = std::make_unique<d::pool_core>(std::move(config));
    for (std::uint32_t i = 0; i < function_count; ++i) {
      require(made->function_id(table[i].invoker, table[i].function) == i, "functions get ids 0, 1, 2, ...");
    }
    return made;
  }();
  return *core;
}

// The parent's side of one task: what the pool delivered.
class recorder final : public d::task_state {
 public:
  void complete(std::span<const std::byte> bytes) noexcept override {
    std::lock_guard lock(mutex_);
    try {
      result_.emplace(bytes.begin(), bytes.end());
    } catch (...) {
      error_ = std::current_exception();
    }
    done_ = true;
    cv_.notify_all();
  }
  void fail(std::exception_ptr error) noexcept override {
    std::lock_guard lock(mutex_);
    error_ = std::move(error);
    done_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return done_; });
  }
  const std::optional<std::vector<std::byte>>& result() const { return result_; }
  std::exception_ptr error() const { return error_; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::optional<std::vector<std::byte>> result_;
  std::exception_ptr error_;
};

// pool_core::submit takes the arguments alone, or (since it copies the message once) room
// for the task header followed by them.
template <class Core>
void submit(Core& core, std::uint32_t id, std::span<const std::byte> arguments, std::shared_ptr<d::task_state> state) {
  if constexpr (requires { Core::task_header_bytes; }) {
    std::vector<std::byte> message(Core::task_header_bytes);
    message.insert(message.end(), arguments.begin(), arguments.end());
    core.submit(id, std::span<std::byte>(message), std::move(state));
  } else {
    core.submit(id, arguments, std::move(state));
  }
}

// An exception as the worker sends it, for comparison.
std::vector<std::byte> encoded(std::exception_ptr error) {
  std::vector<std::byte> out;
  try {
    std::rethrow_exception(error);
  } catch (...) {
    d::encode_current_exception(out);
  }
  return out;
}

void task(std::uint32_t index, std::span<const std::byte> arguments) {
  d::pool_core& core = pool();
  const bool known = index < function_count;
  // What the worker must answer: the invoker run here, on the same bytes.
  std::optional<std::vector<std::byte>> expected_result;
  std::vector<std::byte> expected_error;
  if (known) {
    std::vector<std::byte> out;
    try {
      table[index].invoker(table[index].function, arguments, out);
      expected_result = std::move(out);
    } catch (...) {
      d::encode_current_exception(expected_error);
    }
  }
  std::uint64_t invoked[function_count];
  std::uint64_t called[function_count];
  for (std::size_t i = 0; i < function_count; ++i) {
    invoked[i] = shared->invoked[i].load();
    called[i] = shared->called[i].load();
  }

  auto state = std::make_shared<recorder>();
  submit(core, index, arguments, state);
  state->wait();

  if (state->error()) {
    try {
      std::rethrow_exception(state->error());
    } catch (const mproc::worker_lost&) {
      fail("the worker died of a task message");
    } catch (...) {
    }
  }
  for (std::size_t i = 0; i < function_count; ++i) {
    const std::uint64_t runs = known && i == index ? 1 : 0;
    require(shared->invoked[i].load() == invoked[i] + runs,
            known ? "the worker did not run the invoker its index names exactly once"
                  : "the worker ran an invoker for an index the pool does not know");
    if (!known) require(shared->called[i].load() == called[i], "the worker called a function for a forged index");
  }
  if (!known) {
    require(state->error() != nullptr, "a task naming an unknown function did not fail");
    try {
      std::rethrow_exception(state->error());
    } catch (const mproc::error& e) {
      require(typeid(e) == typeid(mproc::error), "an unknown function fails with mproc::error itself");
    } catch (...) {
      fail("an unknown function fails with mproc::error");
    }
    return;
  }
  if (expected_result) {
    require(state->result() == expected_result, "the worker's result differs from the invoker's here");
  } else {
    require(state->error() != nullptr, "the worker succeeded where the invoker here threw");
    require(encoded(state->error()) == expected_error, "the worker's exception differs from the invoker's here");
  }
}

// --- results, as the parent decodes them ------------------------------------------------------

template <class R>
std::optional<R> decode(std::span<const std::byte> payload) {
  try {
    return d::decode_message<R>(payload, "pool_frames_fuzz");
  } catch (const mproc::serialization_error&) {
    return std::nullopt;
  }
}

void require_serialization_error(std::exception_ptr error, const char* what) {
  try {
    std::rethrow_exception(error);
  } catch (const mproc::serialization_error&) {
  } catch (...) {
    fail(what);
  }
}

void exception_payload(std::span<const std::byte> payload) {
  std::exception_ptr error;
  try {
    error = d::decode_exception(payload);
  } catch (...) {
    fail("decode_exception threw");
  }
  require(error != nullptr, "decode_exception gave no exception");
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    require(e.what() != nullptr, "a decoded exception has no message");
  } catch (...) {
    fail("decode_exception made an exception not derived from std::exception");
  }
}

template <class R>
void apply_result(std::span<const std::byte> payload) {
  const std::optional<R> expected = decode<R>(payload);
  auto state = std::make_shared<d::async_state<R>>(std::weak_ptr<d::pool_core>());
  state->complete(payload);
  require(state->ready(), "a result left its async_result not ready");
  if (expected) {
    require(state->error() == nullptr, "a result that decodes failed its task");
    require(state->value() == *expected, "a result decoded to another value");
  } else {
    require_serialization_error(state->error(), "a result that does not decode must fail with serialization_error");
  }
}

// map_gather::chunk_done takes the chunk's item count, or (before it checked it) not.
template <class Gather>
void chunk_done(Gather& gather, std::size_t offset, std::size_t count, std::span<const std::byte> payload) {
  if constexpr (requires { gather.chunk_done(offset, count, payload); }) {
    gather.chunk_done(offset, count, payload);
  } else {
    gather.chunk_done(offset, payload);
  }
}

template <class R>
void map_result(std::uint8_t argument, std::span<const std::byte> payload) {
  // One chunk, the last `count` of `total` items; the others are already in.
  const std::size_t total = 1 + argument % 16;
  const std::size_t offset = (argument / 16) % total;
  const std::size_t count = total - offset;
  const std::optional<std::vector<R>> part = decode<std::vector<R>>(payload);
  auto state = std::make_shared<d::async_state<std::vector<R>>>(std::weak_ptr<d::pool_core>());
  d::map_gather<R> gather(state, total, 1);
  chunk_done(gather, offset, count, payload);
  require(state->ready(), "the last chunk of a map left it not ready");
  if (part && part->size() == count) {
    require(state->error() == nullptr, "a chunk with the right number of results failed the map");
    const std::vector<R>& all = state->value();
    require(all.size() == total, "a map gave another number of results than items");
    require(std::equal(part->begin(), part->end(), all.begin() + static_cast<std::ptrdiff_t>(offset)),
            "a map's results differ from the chunk's");
  } else {
    require(state->error() != nullptr, "a chunk whose results do not decode to its item count did not fail the map");
    require_serialization_error(state->error(), "a bad chunk must fail the map with serialization_error");
  }
}

template <class R>
void imap_result(std::span<const std::byte> payload) {
  const std::optional<std::vector<R>> part = decode<std::vector<R>>(payload);
  auto state = std::make_shared<d::imap_state<R>>(true);
  state->add_chunk();
  d::imap_chunk_state<R> chunk(state, 0);
  chunk.complete(payload);
  auto got = state->next(d::deadline::no_wait());
  require(got.has_value(), "a delivered imap chunk was not ready");
  if (got->error) {
    require(!part, "an imap chunk that decodes failed");
    require_serialization_error(got->error, "a bad imap chunk must fail with serialization_error");
  } else {
    require(part.has_value(), "an imap chunk that does not decode was delivered");
    require(got->values == *part, "an imap chunk decoded to other values");
  }
}

void result(std::uint8_t what, std::uint8_t argument, std::span<const std::byte> payload) {
  switch (what % 9) {
    case 0:
      return exception_payload(payload);
    case 1:
      return apply_result<int>(payload);
    case 2:
      return apply_result<std::string>(payload);
    case 3:
      return apply_result<std::vector<std::string>>(payload);
    case 4:
      return apply_result<std::tuple<std::uint64_t, std::optional<std::string>>>(payload);
    case 5:
      return map_result<int>(argument, payload);
    case 6:
      return map_result<std::string>(argument, payload);
    case 7:
      return imap_result<int>(payload);
    default:
      return imap_result<std::string>(payload);
  }
}

// --- seeds ----------------------------------------------------------------------------------

std::vector<std::uint8_t> task_seed(std::uint32_t index, const std::vector<std::byte>& arguments) {
  std::vector<std::uint8_t> out{0};
  const auto* p = reinterpret_cast<const std::uint8_t*>(&index);
  out.insert(out.end(), p, p + sizeof index);
  for (std::byte b : arguments) out.push_back(std::to_integer<std::uint8_t>(b));
  return out;
}

std::vector<std::uint8_t> result_seed(std::uint8_t what, std::uint8_t argument, const std::vector<std::byte>& payload) {
  std::vector<std::uint8_t> out{1, what, argument};
  for (std::byte b : payload) out.push_back(std::to_integer<std::uint8_t>(b));
  return out;
}

std::vector<std::byte> exception_bytes(std::exception_ptr error) { return encoded(std::move(error)); }

}  // namespace pool_frames_fuzz

std::vector<std::vector<std::uint8_t>> mproc_fuzz::seeds() {
  using namespace pool_frames_fuzz;
  using mproc::to_bytes;
  const auto encode_message = [](const auto& value) {
    std::vector<std::byte> out;
    d::encode_message(value, out);
    return out;
  };
  using weigh_args =
      std::tuple<std::variant<std::int64_t, std::string, std::vector<double>>, std::optional<std::uint64_t>>;
  return {
      task_seed(0, encode_message(std::tuple<int, int>{2, 3})),
      task_seed(0, encode_message(std::tuple<int, int>{std::numeric_limits<int>::max(), 1})),  // throws overflow_error
      task_seed(0, to_bytes(std::tuple<int, int>{2, 3})),  // not what apply sends: serialization_error
      task_seed(1, to_bytes(std::tuple<std::vector<std::string>, std::string>{{"a", "b", "c"}, ", "})),
      task_seed(2, to_bytes(weigh_args{std::string("four"), 3})),
      task_seed(2, to_bytes(weigh_args{std::vector<double>{1, 2}, std::nullopt})),  // throws invalid_argument
      task_seed(3, to_bytes(std::vector<int>{1, -2, 3})),
      task_seed(4, to_bytes(std::vector<std::tuple<std::string, int>>{{"x", 1}, {"", 2}})),  // throws mproc::error
      task_seed(5, encode_message(std::tuple<int, int>{2, 3})),                              // one past the table
      task_seed(4096, encode_message(std::tuple<int, int>{2, 3})),                           // past any table
      result_seed(0, 0, exception_bytes(std::make_exception_ptr(std::out_of_range("index 7")))),
      result_seed(0, 0, exception_bytes(std::make_exception_ptr(mproc::remote_error("boom", "my::error")))),
      result_seed(1, 0, encode_message(42)),
      result_seed(1, 0, to_bytes(42)),  // not what a worker sends: serialization_error
      result_seed(2, 0, to_bytes(std::string("done"))),
      result_seed(3, 0, to_bytes(std::vector<std::string>{"a", "bc"})),
      result_seed(4, 0, to_bytes(std::tuple<std::uint64_t, std::optional<std::string>>{7, "x"})),
      result_seed(5, 0x23, to_bytes(std::vector<int>{4, 9})),              // the chunk at offset 2 of 4 items
      result_seed(6, 0x12, to_bytes(std::vector<std::string>{"a", "b"})),  // offset 1 of 3 items
      result_seed(7, 0, to_bytes(std::vector<int>{5, 6})),
      result_seed(8, 0, to_bytes(std::vector<std::string>{"z"})),
  };
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace pool_frames_fuzz;
  if (size == 0) return 0;
  std::span<const std::uint8_t> in(data + 1, size - 1);
  try {
    if ((data[0] & 1) == 0) {
      std::uint32_t index = 0;
      const std::size_t n = std::min(sizeof index, in.size());
      std::memcpy(&index, in.data(), n);
      in = in.subspan(n);
      const std::vector<std::byte> arguments(reinterpret_cast<const std::byte*>(in.data()),
                                             reinterpret_cast<const std::byte*>(in.data() + in.size()));
      task(index, arguments);
    } else {
      const std::uint8_t what = in.empty() ? 0 : in[0];
      const std::uint8_t argument = in.size() < 2 ? 0 : in[1];
      in = in.subspan(std::min<std::size_t>(2, in.size()));
      const std::vector<std::byte> payload(reinterpret_cast<const std::byte*>(in.data()),
                                           reinterpret_cast<const std::byte*>(in.data() + in.size()));
      result(what, argument, payload);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc fuzz: unexpected %s\n", e.what());
    fail("decoding a task or result frame threw where it must not");
  }
  return 0;
}
