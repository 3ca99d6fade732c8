// Where a Redis server is, and who to be there: redis://[user[:password]@]host[:port][/db]
// or unix://[user[:password]@]/path/to/redis.sock[?db=N]. A password alone (no user) is
// the `requirepass` one: redis://:secret@host.
#pragma once

#include <string>

namespace mproc::detail {

struct redis_url {
  std::string host;  // empty for a unix socket
  int port = 6379;
  std::string socket_path;  // unix:// only
  std::string user;
  std::string password;
  int db = 0;

  // mproc::error naming the accepted forms for anything else.
  static redis_url parse(const std::string& text);
  // The URL without its password, for messages.
  std::string printable() const;
};

}  // namespace mproc::detail
