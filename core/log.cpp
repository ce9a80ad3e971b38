#include "core/log.hpp"

#include <atomic>
#include <cstdio>

#include "core/terminal.hpp"

namespace aggrik8s::log {
namespace {
std::atomic<Level> current_level{Level::info};

const char* prefix(Level level) {
  switch (level) {
    case Level::debug: return "debug: ";
    case Level::info: return "";
    case Level::warning: return "warning: ";
    case Level::error: return "error: ";
  }
  return "";
}
}  // namespace

void set_level(Level level) { current_level = level; }
Level level() { return current_level; }
bool enabled(Level level) { return level >= current_level.load(); }

void write(Level level, std::string_view message) {
  // Shares the terminal lock with the progress bar so a log line never lands inside a half-drawn bar.
  terminal::print_line(stderr, std::string(prefix(level)) + std::string(message));
}

}  // namespace aggrik8s::log
