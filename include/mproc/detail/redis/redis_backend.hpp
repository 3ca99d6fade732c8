// The non-template part of mproc::redis: the client's pool (a task_sink whose tasks travel
// on a Redis stream), a worker's main, and the byte-level named queue.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mproc/detail/pool/task_sink.hpp"
#include "mproc/detail/wait/deadline.hpp"

namespace mproc::detail {

struct redis_client_settings {
  std::string url;
  std::string name;
  unsigned max_retries = 3;
  std::chrono::milliseconds claim_idle{5000};
  std::chrono::milliseconds task_timeout{0};
  std::chrono::milliseconds no_worker_timeout{10000};
};
std::shared_ptr<task_sink> make_redis_client(const redis_client_settings& settings);

struct redis_worker_settings {
  std::string url;
  std::string name;
  unsigned processes = 0;
  unsigned prefetch = 0;
};
void serve_redis(const redis_worker_settings& settings);

// A Redis list as a FIFO of byte strings, bounded or not, for one process (a forked child
// connects again on first use).
class redis_list {
 public:
  redis_list(const std::string& url, const std::string& name, std::size_t maxsize);
  ~redis_list();
  redis_list(const redis_list&) = delete;
  redis_list& operator=(const redis_list&) = delete;

  // False when the list stayed full until `until`.
  bool push(std::span<const std::byte> bytes, deadline until);
  // Nullopt when the list stayed empty until `until`.
  std::optional<std::vector<std::byte>> pop(deadline until);
  std::size_t size();
  std::size_t maxsize() const noexcept { return maxsize_; }
  const std::string& name() const noexcept { return name_; }

  struct impl;

 private:
  std::string name_;
  std::size_t maxsize_;
  std::unique_ptr<impl> impl_;
};

}  // namespace mproc::detail
