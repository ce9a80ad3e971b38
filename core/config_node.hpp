#pragma once
// A YAML document as a tree whose every node remembers the file, line and column it came from.
// yaml-cpp's own nodes know their line but not their file; profiles are assembled from several files
// (`extends:`), and an error must point into the file that actually holds the bad value.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/diagnostics.hpp"

namespace aggrik8s {

class ConfigNode {
 public:
  enum class Kind { null, scalar, sequence, map };
  struct Entry;

  Kind kind = Kind::null;
  std::string scalar;     // for Kind::scalar (also the raw text of numbers and booleans)
  bool quoted = false;    // a quoted scalar is always a string, never a number or boolean
  std::vector<ConfigNode> items;   // for Kind::sequence
  std::vector<Entry> entries;      // for Kind::map, in document order
  SourceLocation location;
  std::string tag;        // written before a scalar by to_yaml ("!unsafe": Ansible must not template it)

  bool is_null() const { return kind == Kind::null; }
  bool is_scalar() const { return kind == Kind::scalar; }
  bool is_sequence() const { return kind == Kind::sequence; }
  bool is_map() const { return kind == Kind::map; }
  const ConfigNode* find(std::string_view key) const;
  ConfigNode* find(std::string_view key);
  void set(const std::string& key, ConfigNode value);
  void erase(std::string_view key);
  // "a map", "a list", "a string", "nothing": for "expected X, got Y" messages.
  const char* kind_name() const;
  // The file this node was read from; relative paths in a value resolve against its directory.
  std::filesystem::path base_directory() const;
};

struct ConfigNode::Entry {
  std::string key;
  SourceLocation key_location;
  ConfigNode value;
};

// Reads a YAML file (one document). Syntax errors and duplicate keys are reported as diagnostics with
// the file's position; returns a null node when the file cannot be parsed at all.
ConfigNode load_yaml_file(const std::filesystem::path& path, Diagnostics& diagnostics);
ConfigNode load_yaml_string(const std::string& text, const std::string& name, Diagnostics& diagnostics);
// Several documents, split on "---" lines (alone, or followed by blanks or a comment), each read as
// load_yaml_string reads one, with the file's own line numbers. Documents holding nothing but
// comments are skipped. Errors go to `diagnostics`; the documents that read are returned either way.
std::vector<ConfigNode> load_yaml_documents(const std::string& text, const std::string& name, Diagnostics& diagnostics);
// The text of a file, or nullopt with "cannot read file: <reason>" at the file in `diagnostics`.
std::optional<std::string> read_config_text(const std::filesystem::path& path, Diagnostics& diagnostics);

// Nodes for trees made by code rather than read (derived files: a site's nodes file, an inventory),
// located where their value comes from so that a reader's message names that place. A quoted scalar
// stays a string when the tree is written out and read back (a serial of digits, an address).
ConfigNode scalar_node(std::string text, const SourceLocation& where = {}, bool quoted = true);
ConfigNode map_node(const SourceLocation& where = {});
ConfigNode sequence_node(const SourceLocation& where = {});

// Overlays `top` on `base`: maps merge key by key (recursively); any other value in `top` replaces the
// one in `base`. This is what `extends:` and per-node overrides mean.
ConfigNode merge_config(const ConfigNode& base, const ConfigNode& top);

}  // namespace aggrik8s

namespace aggrik8s {
// Writes the tree back as YAML (block style, keys in document order). Scalars that were quoted in the
// source stay quoted, so "0600" remains a string for the program that reads the output.
std::string to_yaml(const ConfigNode& node);
}  // namespace aggrik8s
