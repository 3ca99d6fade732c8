// Shared by the "Process" examples: print C++ values the way the tutorial's Python prints
// them, so that `(1, 2)`, `{'A': 'a'}` and `False` look the same in both languages.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <tuple>
#include <utility>

namespace example {

// Python's repr() for the few types the tutorial prints. Strings are quoted with '...'
// and not escaped, which is exact for the tutorial's plain ASCII keys and values.
inline std::string repr(bool b) { return b ? "True" : "False"; }
inline std::string repr(int i) { return std::to_string(i); }
inline std::string repr(const std::string& s) { return "'" + s + "'"; }
template <class... T>
std::string repr(const std::tuple<T...>& t);
template <class K, class V>
std::string repr(const std::map<K, V>& m);

template <class... T>
std::string repr(const std::tuple<T...>& t) {
  std::string out = "(";
  std::apply(
      [&out](const T&... item) {
        std::size_t i = 0;
        ((out += (i++ == 0 ? "" : ", ") + repr(item)), ...);
      },
      t);
  // Python writes a one-element tuple as (1,), to tell it from a parenthesised 1.
  if (sizeof...(T) == 1) out += ',';
  return out + ")";
}

template <class K, class V>
std::string repr(const std::map<K, V>& m) {
  std::string out = "{";
  for (const auto& [key, value] : m) {
    if (out.size() > 1) out += ", ";
    out += repr(key) + ": " + repr(value);
  }
  return out + "}";
}

}  // namespace example
