#include "mpi/rank_server.hpp"

#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "mpi/mpi_link.hpp"
#include "mpi/mpi_wire.hpp"
#include "pool/remote_runner.hpp"

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

class rank_server {
 public:
  rank_server(pool_core& local, const function_table& table) : local_(local), runner_(local, table) {}

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
    // A message too short for a header is not the root's, which always sends one.
    runner_.run(std::span(message), [box = box_](std::vector<std::byte> reply) { box->add(std::move(reply)); });
  }

  pool_core& local_;
  remote_runner runner_;
  std::shared_ptr<reply_box> box_ = std::make_shared<reply_box>();
  mpi_link link_;
};

}  // namespace

void serve_root(pool_core& local, const function_table& table) { rank_server(local, table).run(); }

}  // namespace mproc::detail
