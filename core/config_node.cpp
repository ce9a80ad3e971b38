#include "core/config_node.hpp"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

namespace aggrik8s {
namespace {

SourceLocation location_of(const YAML::Mark& mark, const std::string& file) {
  if (mark.is_null()) return {file, 0, 0};
  return {file, mark.line + 1, mark.column + 1};
}

// yaml-cpp resolves an alias by sharing the anchored node, so its tree is a graph: `&a [*a]` refers to
// itself, and ten lines of aliases to aliases stand for a billion values ("billion laughs"). Copying
// it into a ConfigNode tree would recurse forever or run out of memory, so the copy is bounded in depth
// and in size, far beyond any real profile or nodes file.
constexpr int max_config_depth = 100;
constexpr std::size_t max_config_values = 100000;

struct ConvertBudget {
  std::size_t values_left = max_config_values;
  bool exhausted = false;  // reported once
};

ConfigNode convert(const YAML::Node& node, const std::string& file, Diagnostics& diagnostics, ConvertBudget& budget,
                   int depth) {
  ConfigNode out;
  out.location = location_of(node.Mark(), file);
  if (budget.exhausted) return out;
  if (depth > max_config_depth || budget.values_left == 0) {
    budget.exhausted = true;
    diagnostics.error(out.location, depth > max_config_depth
                                        ? "nested more than " + std::to_string(max_config_depth) +
                                              " levels deep (an alias that contains itself?)"
                                        : "more than " + std::to_string(max_config_values) +
                                              " values (aliases that repeat aliases?)");
    return out;
  }
  --budget.values_left;
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      out.kind = ConfigNode::Kind::null;
      break;
    case YAML::NodeType::Scalar:
      out.kind = ConfigNode::Kind::scalar;
      out.scalar = node.Scalar();
      // yaml-cpp marks plain scalars with the "?" tag and quoted ones with "!".
      out.quoted = node.Tag() == "!";
      break;
    case YAML::NodeType::Sequence:
      out.kind = ConfigNode::Kind::sequence;
      for (const auto& item : node) out.items.push_back(convert(item, file, diagnostics, budget, depth + 1));
      break;
    case YAML::NodeType::Map: {
      out.kind = ConfigNode::Kind::map;
      std::set<std::string> seen;
      for (const auto& pair : node) {
        SourceLocation key_location = location_of(pair.first.Mark(), file);
        if (!pair.first.IsScalar()) {
          diagnostics.error(key_location, "map keys must be plain strings");
          continue;
        }
        std::string key = pair.first.Scalar();
        if (!seen.insert(key).second) {
          // yaml-cpp keeps both; a silent "last one wins" hides typos, so it is an error.
          diagnostics.error(key_location, "duplicate key '" + key + "'");
          continue;
        }
        out.entries.push_back({key, key_location, convert(pair.second, file, diagnostics, budget, depth + 1)});
      }
      break;
    }
  }
  return out;
}

ConfigNode parse(const std::string& text, const std::string& name, Diagnostics& diagnostics) {
  try {
    std::vector<YAML::Node> documents = YAML::LoadAll(text);
    if (documents.size() > 1) {
      diagnostics.error({name, 0, 0}, "expected one YAML document, found " + std::to_string(documents.size()));
    }
    if (documents.empty()) return ConfigNode{ConfigNode::Kind::null, {}, false, {}, {}, {name, 1, 1}};
    ConvertBudget budget;
    return convert(documents.front(), name, diagnostics, budget, 0);
  } catch (const YAML::Exception& e) {
    diagnostics.error(location_of(e.mark, name), "YAML syntax error: " + e.msg);
    return ConfigNode{};
  }
}

}  // namespace

const ConfigNode* ConfigNode::find(std::string_view key) const {
  for (const auto& e : entries) {
    if (e.key == key) return &e.value;
  }
  return nullptr;
}

ConfigNode* ConfigNode::find(std::string_view key) {
  for (auto& e : entries) {
    if (e.key == key) return &e.value;
  }
  return nullptr;
}

void ConfigNode::set(const std::string& key, ConfigNode value) {
  if (ConfigNode* existing = find(key)) {
    *existing = std::move(value);
    return;
  }
  SourceLocation where = value.location;
  entries.push_back({key, where, std::move(value)});
}

void ConfigNode::erase(std::string_view key) {
  std::erase_if(entries, [&](const Entry& e) { return e.key == key; });
}

const char* ConfigNode::kind_name() const {
  switch (kind) {
    case Kind::null: return "nothing";
    case Kind::scalar: return "a scalar";
    case Kind::sequence: return "a list";
    case Kind::map: return "a map";
  }
  return "?";
}

std::filesystem::path ConfigNode::base_directory() const {
  std::filesystem::path file(location.file);
  return file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
}

ConfigNode load_yaml_file(const std::filesystem::path& path, Diagnostics& diagnostics) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diagnostics.error({path.string(), 0, 0}, "cannot read file");
    return ConfigNode{};
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path.string(), diagnostics);
}

ConfigNode load_yaml_string(const std::string& text, const std::string& name, Diagnostics& diagnostics) {
  return parse(text, name, diagnostics);
}

ConfigNode merge_config(const ConfigNode& base, const ConfigNode& top) {
  if (!base.is_map() || !top.is_map()) return top;
  ConfigNode out = base;
  out.location = top.location;
  for (const auto& entry : top.entries) {
    if (ConfigNode* existing = out.find(entry.key)) {
      *existing = merge_config(*existing, entry.value);
      for (auto& e : out.entries) {
        if (e.key == entry.key) e.key_location = entry.key_location;
      }
    } else {
      out.entries.push_back(entry);
    }
  }
  return out;
}

}  // namespace aggrik8s

namespace aggrik8s {
namespace {
void emit(YAML::Emitter& out, const ConfigNode& node) {
  switch (node.kind) {
    case ConfigNode::Kind::null:
      out << YAML::Null;
      break;
    case ConfigNode::Kind::scalar:
      if (node.quoted) {
        out << YAML::DoubleQuoted << node.scalar;
      } else {
        out << node.scalar;
      }
      break;
    case ConfigNode::Kind::sequence:
      out << YAML::BeginSeq;
      for (const auto& item : node.items) emit(out, item);
      out << YAML::EndSeq;
      break;
    case ConfigNode::Kind::map:
      out << YAML::BeginMap;
      for (const auto& entry : node.entries) {
        out << YAML::Key << entry.key << YAML::Value;
        emit(out, entry.value);
      }
      out << YAML::EndMap;
      break;
  }
}
}  // namespace

std::string to_yaml(const ConfigNode& node) {
  YAML::Emitter out;
  emit(out, node);
  std::string text = out.c_str();
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  return text;
}
}  // namespace aggrik8s
