#include "pool/remote_runner.hpp"

#include <cstring>
#include <memory>

namespace mproc::detail {
namespace {

// The local pool's side of a remote task: its outcome becomes the reply.
class reply_state final : public task_state {
 public:
  reply_state(remote_runner::reply_sink sink, std::uint64_t id) : sink_(std::move(sink)), id_(id) {}
  void complete(std::span<const std::byte> bytes) noexcept override { send(remote_reply(id_, false, bytes)); }
  void fail(std::exception_ptr error) noexcept override { send(remote_failure_reply(id_, std::move(error))); }

 private:
  // A sink that cannot take the reply (out of memory) leaves the sender's task waiting:
  // the backends end the run in their own sinks rather than let that happen quietly.
  void send(std::vector<std::byte> reply) noexcept {
    try {
      sink_(std::move(reply));
    } catch (...) {
      std::terminate();
    }
  }
  remote_runner::reply_sink sink_;
  std::uint64_t id_;
};

}  // namespace

std::vector<std::byte> remote_reply(std::uint64_t id, bool failed, std::span<const std::byte> body) {
  const remote_result_header h{id, failed ? 1U : 0U};
  std::vector<std::byte> out(sizeof h + body.size());
  std::memcpy(out.data(), &h, sizeof h);
  if (!body.empty()) std::memcpy(out.data() + sizeof h, body.data(), body.size());
  return out;
}

std::vector<std::byte> remote_failure_reply(std::uint64_t id, std::exception_ptr error) {
  std::vector<std::byte> encoded;
  try {
    std::rethrow_exception(std::move(error));
  } catch (...) {
    encode_current_exception(encoded);
  }
  return remote_reply(id, true, encoded);
}

bool read_remote_result(std::span<const std::byte> reply, remote_result_header& header) noexcept {
  if (reply.size() < sizeof header) return false;
  std::memcpy(&header, reply.data(), sizeof header);
  return true;
}

bool remote_runner::run(std::span<std::byte> message, const reply_sink& sink, std::chrono::nanoseconds time_limit) {
  if (message.size() < sizeof(remote_task_header)) return false;
  remote_task_header h{};
  std::memcpy(&h, message.data(), sizeof h);
  try {
    const std::pair key{h.invoker, h.function};
    auto it = local_ids_.find(key);
    if (it == local_ids_.end())
      it = local_ids_.emplace(key, local_.function_id(table_.invoker_at(h.invoker), table_.function_at(h.function)))
               .first;
    auto state = std::make_shared<reply_state>(sink, h.id);
    state->set_time_limit(time_limit);
    local_.submit(it->second, message, std::move(state));
  } catch (...) {
    sink(remote_failure_reply(h.id, std::current_exception()));
  }
  return true;
}

}  // namespace mproc::detail
