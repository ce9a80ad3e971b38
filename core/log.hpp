#pragma once
// Structured enough for a terminal and for journald: one line per event on stderr, prefixed with the
// level. Secrets must never be passed here; core/secret.hpp's Secret cannot be streamed.
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>

namespace aggrik8s::log {

enum class Level { debug = 0, info = 1, warning = 2, error = 3 };

void set_level(Level level);
Level level();
bool enabled(Level level);
void write(Level level, std::string_view message);

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <typename... Parts>
void debug(const Parts&... parts) {
  if (enabled(Level::debug)) write(Level::debug, concat(parts...));
}
template <typename... Parts>
void info(const Parts&... parts) {
  if (enabled(Level::info)) write(Level::info, concat(parts...));
}
template <typename... Parts>
void warning(const Parts&... parts) {
  if (enabled(Level::warning)) write(Level::warning, concat(parts...));
}
template <typename... Parts>
void error(const Parts&... parts) {
  write(Level::error, concat(parts...));
}

}  // namespace aggrik8s::log
