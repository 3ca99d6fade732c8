#include "redis/redis_url.hpp"

#include <charconv>
#include <string_view>

#include "mproc/error.hpp"

namespace mproc::detail {
namespace {

[[noreturn]] void bad(const std::string& text, const std::string& why) {
  throw error("mproc::redis: bad Redis URL \"" + text + "\" (" + why +
              "); expected redis://[user[:password]@]host[:port][/db] or unix://[user[:password]@]/path[?db=N]");
}

int number(std::string_view digits, const std::string& text, const char* what, int max) {
  int value = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc{} || end != digits.data() + digits.size() || value < 0 || value > max)
    bad(text, std::string("the ") + what + " is not a number from 0 to " + std::to_string(max));
  return value;
}

// "user:password@" in front of `rest`, taken off it.
void take_credentials(std::string_view& rest, redis_url& url) {
  const auto at = rest.rfind('@');
  if (at == std::string_view::npos) return;
  const std::string_view who = rest.substr(0, at);
  rest.remove_prefix(at + 1);
  const auto colon = who.find(':');
  if (colon == std::string_view::npos) {
    url.user = who;
  } else {
    url.user = who.substr(0, colon);
    url.password = who.substr(colon + 1);
  }
}

}  // namespace

redis_url redis_url::parse(const std::string& text) {
  redis_url url;
  std::string_view rest = text;
  if (rest.starts_with("unix://")) {
    rest.remove_prefix(7);
    take_credentials(rest, url);
    if (const auto q = rest.find('?'); q != std::string_view::npos) {
      const std::string_view query = rest.substr(q + 1);
      if (!query.starts_with("db=")) bad(text, "the only query is db=N");
      url.db = number(query.substr(3), text, "database", 1 << 20);
      rest = rest.substr(0, q);
    }
    if (!rest.starts_with('/')) bad(text, "a unix socket's path is absolute");
    url.socket_path = rest;
    return url;
  }
  if (!rest.starts_with("redis://")) bad(text, "it starts with neither redis:// nor unix://");
  rest.remove_prefix(8);
  take_credentials(rest, url);
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    if (slash + 1 < rest.size()) url.db = number(rest.substr(slash + 1), text, "database", 1 << 20);
    rest = rest.substr(0, slash);
  }
  if (const auto colon = rest.rfind(':'); colon != std::string_view::npos && rest.find(']') == std::string_view::npos) {
    url.port = number(rest.substr(colon + 1), text, "port", 65535);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) bad(text, "no host");
  url.host = rest;
  return url;
}

std::string redis_url::printable() const {
  // Appended piece by piece: GCC 12 warns (-Wrestrict, falsely) on a chain of operator+.
  std::string text = socket_path.empty() ? "redis://" : "unix://";
  text.append(user);
  if (!password.empty()) text.append(":***");
  if (!user.empty() || !password.empty()) text.append("@");
  if (!socket_path.empty()) {
    text.append(socket_path);
    if (db != 0) text.append("?db=").append(std::to_string(db));
    return text;
  }
  text.append(host).append(":").append(std::to_string(port));
  if (db != 0) text.append("/").append(std::to_string(db));
  return text;
}

}  // namespace mproc::detail
