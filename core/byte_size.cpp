#include "core/byte_size.hpp"

#include <array>
#include <cctype>
#include <cstdio>
#include <limits>
#include <utility>

namespace aggrik8s {

std::optional<std::uint64_t> parse_byte_size(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  std::size_t i = 0;
  std::uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    std::uint64_t digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return std::nullopt;
  std::string_view unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  static constexpr std::array<std::pair<std::string_view, unsigned>, 13> units{{
      {"", 0}, {"B", 0}, {"K", 10}, {"KiB", 10}, {"M", 20}, {"MiB", 20}, {"G", 30}, {"GiB", 30},
      {"T", 40}, {"TiB", 40}, {"k", 10}, {"KB", 10}, {"MB", 20}}};
  for (auto [name, shift] : units) {
    if (unit == name) {
      if (shift > 0 && value > (std::numeric_limits<std::uint64_t>::max() >> shift)) return std::nullopt;
      return value << shift;
    }
  }
  if (unit == "GB") return value > (std::numeric_limits<std::uint64_t>::max() >> 30) ? std::nullopt : std::optional(value << 30);
  return std::nullopt;
}

std::string format_byte_size(std::uint64_t bytes) {
  static constexpr std::array<const char*, 5> names{"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < names.size()) {
    value /= 1024.0;
    ++unit;
  }
  char out[32];
  if (unit == 0) {
    std::snprintf(out, sizeof out, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(out, sizeof out, value < 10 ? "%.2f %s" : value < 100 ? "%.1f %s" : "%.0f %s", value, names[unit]);
  }
  return out;
}

}  // namespace aggrik8s
