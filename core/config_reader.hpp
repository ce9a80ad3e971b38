#pragma once
// Typed reading of a ConfigNode map with every problem collected as a diagnostic: wrong types, missing
// required keys, values out of range, and (when the reader is done) keys nobody asked for, which are
// almost always typos. The profile, inventory and server config readers are all written with it, so
// every file the tool reads reports errors the same way.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"

namespace aggrik8s {

class ConfigMapReader {
 public:
  // `path` names the map for messages ("rke2", "nodes[2].network").
  ConfigMapReader(const ConfigNode& node, Diagnostics& diagnostics, std::string path);
  ConfigMapReader(const ConfigMapReader&) = delete;
  ConfigMapReader& operator=(const ConfigMapReader&) = delete;
  ConfigMapReader(ConfigMapReader&&) = default;
  // Reports unknown keys once, if finish() was not called.
  ~ConfigMapReader();

  bool valid() const { return node_.is_map(); }
  bool has(std::string_view key) const;
  const SourceLocation& location() const { return node_.location; }
  const std::string& path() const { return path_; }
  Diagnostics& diagnostics() { return diagnostics_; }

  // Each accessor marks the key as known. `required` reports a missing key at the map's location.
  std::optional<std::string> string(std::string_view key, bool required = false);
  std::optional<std::string> one_of(std::string_view key, const std::vector<std::string>& allowed, bool required = false);
  std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max, bool required = false);
  std::optional<bool> boolean(std::string_view key, bool required = false);
  // "8GiB", "512M", or a plain number of bytes.
  std::optional<std::uint64_t> byte_size(std::string_view key, bool required = false);
  std::optional<std::vector<std::string>> string_list(std::string_view key, bool required = false);
  // A path relative to the file that holds the value (not the file that included it).
  std::optional<std::filesystem::path> path_value(std::string_view key, bool required = false);
  // The raw node, for values with their own reader; marks the key known.
  const ConfigNode* node(std::string_view key, bool required = false);
  // Reads a nested map; nullopt (with a diagnostic) if present but not a map, nullopt silently if absent
  // and not required.
  std::optional<ConfigMapReader> map(std::string_view key, bool required = false);
  // Calls `each` for every item of a list, with the item's path ("nodes[3]").
  void list(std::string_view key, const std::function<void(const ConfigNode&, const std::string&)>& each,
            bool required = false);

  // Marks keys as known without reading them (handled elsewhere, e.g. `extends`).
  void ignore(std::string_view key);
  void error_at(std::string_view key, const std::string& message);
  void error(const std::string& message);
  // Reports unknown keys; called by the destructor if not called before.
  void finish();

  std::string key_path(std::string_view key) const;

 private:
  const ConfigNode* lookup(std::string_view key, bool required);
  void type_error(const ConfigNode& value, std::string_view key, const std::string& expected);

  const ConfigNode& node_;
  Diagnostics& diagnostics_;
  std::string path_;
  std::set<std::string, std::less<>> known_;
  bool finished_ = false;
};

// Scalar conversions with YAML 1.2 core-schema spelling; nullopt when the text is not of that type.
std::optional<bool> parse_yaml_bool(const ConfigNode& node);
std::optional<std::int64_t> parse_yaml_integer(const ConfigNode& node);
// The closest known key within edit distance 2, for "did you mean" hints.
std::optional<std::string> closest_match(std::string_view word, const std::set<std::string, std::less<>>& candidates);

}  // namespace aggrik8s
