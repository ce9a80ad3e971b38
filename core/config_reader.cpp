#include "core/config_reader.hpp"

#include <algorithm>
#include <charconv>

#include "core/byte_size.hpp"

namespace aggrik8s {

ConfigMapReader::ConfigMapReader(const ConfigNode& node, Diagnostics& diagnostics, std::string path)
    : node_(node), diagnostics_(diagnostics), path_(std::move(path)) {}

ConfigMapReader::~ConfigMapReader() {
  if (!finished_) finish();
}

std::string ConfigMapReader::key_path(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

bool ConfigMapReader::has(std::string_view key) const {
  const ConfigNode* value = node_.is_map() ? node_.find(key) : nullptr;
  return value != nullptr && !value->is_null();
}

const ConfigNode* ConfigMapReader::lookup(std::string_view key, bool required) {
  known_.insert(std::string(key));
  const ConfigNode* value = node_.is_map() ? node_.find(key) : nullptr;
  if (value == nullptr || value->is_null()) {
    if (required && node_.is_map()) {
      diagnostics_.error(node_.location, "missing required key '" + key_path(key) + "'");
    }
    return nullptr;
  }
  return value;
}

void ConfigMapReader::type_error(const ConfigNode& value, std::string_view key, const std::string& expected) {
  diagnostics_.error(value.location, "'" + key_path(key) + "' must be " + expected + ", got " +
                                         (value.is_scalar() ? "'" + value.scalar + "'" : std::string(value.kind_name())));
}

std::optional<std::string> ConfigMapReader::string(std::string_view key, bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  if (!value->is_scalar()) {
    type_error(*value, key, "a string");
    return std::nullopt;
  }
  return value->scalar;
}

std::optional<std::string> ConfigMapReader::one_of(std::string_view key, const std::vector<std::string>& allowed,
                                                   bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  if (!value->is_scalar() || std::find(allowed.begin(), allowed.end(), value->scalar) == allowed.end()) {
    type_error(*value, key, "one of: " + list);
    return std::nullopt;
  }
  return value->scalar;
}

std::optional<std::int64_t> ConfigMapReader::integer(std::string_view key, std::int64_t min, std::int64_t max,
                                                     bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  auto parsed = parse_yaml_integer(*value);
  if (!parsed) {
    type_error(*value, key, "an integer");
    return std::nullopt;
  }
  if (*parsed < min || *parsed > max) {
    diagnostics_.error(value->location, "'" + key_path(key) + "' is " + std::to_string(*parsed) + ", must be between " +
                                            std::to_string(min) + " and " + std::to_string(max));
    return std::nullopt;
  }
  return parsed;
}

std::optional<bool> ConfigMapReader::boolean(std::string_view key, bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  auto parsed = parse_yaml_bool(*value);
  if (!parsed) type_error(*value, key, "true or false");
  return parsed;
}

std::optional<std::uint64_t> ConfigMapReader::byte_size(std::string_view key, bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  auto parsed = value->is_scalar() ? parse_byte_size(value->scalar) : std::nullopt;
  if (!parsed) type_error(*value, key, "a size such as 8GiB, 512MiB or a number of bytes");
  return parsed;
}

std::optional<std::vector<std::string>> ConfigMapReader::string_list(std::string_view key, bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  if (!value->is_sequence()) {
    type_error(*value, key, "a list of strings");
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (std::size_t i = 0; i < value->items.size(); ++i) {
    const ConfigNode& item = value->items[i];
    if (!item.is_scalar()) {
      diagnostics_.error(item.location, "'" + key_path(key) + "[" + std::to_string(i) + "]' must be a string, got " +
                                            item.kind_name());
      ok = false;
      continue;
    }
    out.push_back(item.scalar);
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::filesystem::path> ConfigMapReader::path_value(std::string_view key, bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  if (!value->is_scalar() || value->scalar.empty()) {
    type_error(*value, key, "a path");
    return std::nullopt;
  }
  std::filesystem::path p(value->scalar);
  if (p.is_relative()) p = value->base_directory() / p;
  return p.lexically_normal();
}

const ConfigNode* ConfigMapReader::node(std::string_view key, bool required) { return lookup(key, required); }

std::optional<ConfigMapReader> ConfigMapReader::map(std::string_view key, bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return std::nullopt;
  if (!value->is_map()) {
    type_error(*value, key, "a map");
    return std::nullopt;
  }
  return std::optional<ConfigMapReader>(std::in_place, *value, diagnostics_, key_path(key));
}

void ConfigMapReader::list(std::string_view key, const std::function<void(const ConfigNode&, const std::string&)>& each,
                           bool required) {
  const ConfigNode* value = lookup(key, required);
  if (value == nullptr) return;
  if (!value->is_sequence()) {
    type_error(*value, key, "a list");
    return;
  }
  for (std::size_t i = 0; i < value->items.size(); ++i) {
    each(value->items[i], key_path(key) + "[" + std::to_string(i) + "]");
  }
}

void ConfigMapReader::ignore(std::string_view key) { known_.insert(std::string(key)); }

void ConfigMapReader::error_at(std::string_view key, const std::string& message) {
  const ConfigNode* value = node_.is_map() ? node_.find(key) : nullptr;
  diagnostics_.error(value != nullptr ? value->location : node_.location, message);
}

void ConfigMapReader::error(const std::string& message) { diagnostics_.error(node_.location, message); }

void ConfigMapReader::finish() {
  if (finished_) return;
  finished_ = true;
  if (!node_.is_map()) return;
  for (const auto& entry : node_.entries) {
    if (known_.contains(entry.key)) continue;
    std::string message = "unknown key '" + key_path(entry.key) + "'";
    if (auto hint = closest_match(entry.key, known_)) {
      message += " (did you mean '" + *hint + "'?)";
    } else {
      std::string expected;
      for (const auto& k : known_) expected += (expected.empty() ? "" : ", ") + k;
      message += " (expected one of: " + expected + ")";
    }
    diagnostics_.error(entry.key_location, message);
  }
}

std::optional<bool> parse_yaml_bool(const ConfigNode& node) {
  if (!node.is_scalar() || node.quoted) return std::nullopt;
  const std::string& s = node.scalar;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

std::optional<std::int64_t> parse_yaml_integer(const ConfigNode& node) {
  if (!node.is_scalar() || node.quoted || node.scalar.empty()) return std::nullopt;
  std::string_view s = node.scalar;
  int base = 10;
  bool negative = false;
  if (s.front() == '-' || s.front() == '+') {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.starts_with("0x")) {
    base = 16;
    s.remove_prefix(2);
  } else if (s.starts_with("0o")) {
    base = 8;
    s.remove_prefix(2);
  }
  std::int64_t value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  if (ec != std::errc() || ptr != s.data() + s.size() || s.empty()) return std::nullopt;
  return negative ? -value : value;
}

std::optional<std::string> closest_match(std::string_view word, const std::set<std::string, std::less<>>& candidates) {
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        std::size_t above = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0u : 1u)});
        diagonal = above;
      }
    }
    return row[b.size()];
  };
  std::optional<std::string> best;
  std::size_t best_distance = 3;
  for (const auto& c : candidates) {
    std::size_t d = distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

}  // namespace aggrik8s
