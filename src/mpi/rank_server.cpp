#include "mpi/rank_server.hpp"

#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "mpi/mpi_link.hpp"
#include "mpi/mpi_wire.hpp"

namespace mproc::detail {
namespace {

// The outcomes the local pool's result thread has ready for the link.
struct reply_box {
  std::mutex mutex;
  std::condition_variable ready;
  std::vector<std::vector<std::byte>> replies;

  void add(std::vector<std::byte> reply) {
    std::lock_guard lock(mutex);
    replies.push_back(std::move(reply));
    ready.notify_one();
  }
};

std::vector<std::byte> reply_for(std::uint64_t id, bool failed, std::span<const std::byte> body) {
  const mpi_wire::result_header h{id, failed ? 1U : 0U};
  std::vector<std::byte> out(sizeof h + body.size());
  std::memcpy(out.data(), &h, sizeof h);
  if (!body.empty()) std::memcpy(out.data() + sizeof h, body.data(), body.size());
  return out;
}

std::vector<std::byte> failure_reply(std::uint64_t id, std::exception_ptr error) {
  std::vector<std::byte> encoded;
  try {
    std::rethrow_exception(std::move(error));
  } catch (...) {
    encode_current_exception(encoded);
  }
  return reply_for(id, true, encoded);
}

class reply_state final : public task_state {
 public:
  reply_state(std::shared_ptr<reply_box> box, std::uint64_t id) : box_(std::move(box)), id_(id) {}
  void complete(std::span<const std::byte> bytes) noexcept override {
    try {
      box_->add(reply_for(id_, false, bytes));
    } catch (...) {
      fail(std::current_exception());
    }
  }
  void fail(std::exception_ptr error) noexcept override {
    try {
      box_->add(failure_reply(id_, std::move(error)));
    } catch (...) {
      // No memory for a reply: the root's task would wait forever, so end the job.
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }

 private:
  std::shared_ptr<reply_box> box_;
  std::uint64_t id_;
};

class rank_server {
 public:
  rank_server(pool_core& local, const function_table& table) : local_(local), table_(table) {}

  void run() {
    idle_pause pause;
    bool stopping = false;
    while (!stopping) {
      bool worked = send_replies();
      worked = link_.progress_sends() || worked;
      while (auto m = link_.try_receive(0)) {
        worked = true;
        if (m->tag == mpi_wire::task) {
          run_task(std::move(m->bytes));
        } else if (m->tag == mpi_wire::stop || m->tag == mpi_wire::terminate) {
          if (m->tag == mpi_wire::terminate) local_.terminate();
          local_.close();
          local_.join();  // every outcome is in the box now
          stopping = true;
          break;
        }
      }
      if (worked) {
        pause.worked();
      } else {
        pause.pause(box_->mutex, box_->ready, [&] { return !box_->replies.empty(); });
      }
    }
    send_replies();
    link_.send(0, mpi_wire::stopped, {});
    link_.flush();
  }

 private:
  bool send_replies() {
    std::vector<std::vector<std::byte>> out;
    {
      std::lock_guard lock(box_->mutex);
      out.swap(box_->replies);
    }
    for (auto& reply : out) link_.send(0, mpi_wire::result, std::move(reply));
    return !out.empty();
  }

  void run_task(std::vector<std::byte> message) {
    if (message.size() < sizeof(mpi_wire::task_header)) return;  // not the root's: it always sends one
    mpi_wire::task_header h{};
    std::memcpy(&h, message.data(), sizeof h);
    try {
      const std::pair key{h.invoker, h.function};
      auto it = local_ids_.find(key);
      if (it == local_ids_.end())
        it = local_ids_.emplace(key, local_.function_id(table_.invoker_at(h.invoker), table_.function_at(h.function)))
                 .first;
      local_.submit(it->second, std::span(message), std::make_shared<reply_state>(box_, h.id));
    } catch (...) {
      box_->add(failure_reply(h.id, std::current_exception()));
    }
  }

  pool_core& local_;
  const function_table& table_;
  std::shared_ptr<reply_box> box_ = std::make_shared<reply_box>();
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> local_ids_;
  mpi_link link_;
};

}  // namespace

void serve_root(pool_core& local, const function_table& table) { rank_server(local, table).run(); }

}  // namespace mproc::detail
