// The keys of one pool name on a Redis server. Everything a build's clients and workers
// share sits under mproc:<name>:<table hash>, so binaries built differently never see each
// other's tasks; only the list of live workers is per name, so that a client can say which
// other builds are serving it.
#pragma once

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>

#include "mproc/error.hpp"

namespace mproc::detail {

struct redis_names {
  redis_names(const std::string& pool_name, std::uint64_t table_hash) : name(pool_name) {
    if (pool_name.empty() || pool_name.size() > 200 || pool_name.find_first_of(" \t\r\n") != std::string::npos)
      throw error("mproc::redis: the pool name \"" + pool_name +
                  "\" must be 1 to 200 characters without spaces (it is part of Redis key names)");
    char text[17];
    std::snprintf(text, sizeof text, "%016" PRIx64, table_hash);
    hash = text;
    prefix = "mproc:" + name + ":" + hash;
  }

  std::string name;
  std::string hash;  // the function table's, 16 hex digits
  std::string prefix;

  std::string tasks() const { return prefix + ":tasks"; }                               // a stream
  std::string client(const std::string& id) const { return prefix + ":client:" + id; }  // liveness, with a TTL
  std::string replies(const std::string& id) const { return prefix + ":reply:" + id; }  // a stream, expiring
  std::string workers() const { return "mproc:" + name + ":workers"; }  // sorted set: member → expiry (ms)
  static constexpr const char* group = "workers";                       // the tasks stream's consumer group
};

// A live worker, as it lists itself in redis_names::workers(): "<hash> <processes> <host> <pid>".
struct worker_listing {
  std::string hash;
  unsigned processes = 0;
  std::string host;
  long pid = 0;

  std::string member() const { return hash + " " + std::to_string(processes) + " " + host + " " + std::to_string(pid); }
  static bool parse(const std::string& member, worker_listing& out) {
    char hash_text[17] = {};
    char host_text[256] = {};
    unsigned processes = 0;
    long pid = 0;
    if (std::sscanf(member.c_str(), "%16s %u %255s %ld", hash_text, &processes, host_text, &pid) != 4) return false;
    out = {hash_text, processes, host_text, pid};
    return true;
  }
};

}  // namespace mproc::detail
