#include "core/config_node.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
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
// Values alone do not bound memory: 100,000 aliases of one long scalar are gigabytes. The copy's
// bytes (nodes, their locations, keys and scalars) are bounded too; a real file is a few KiB.
constexpr std::size_t max_config_bytes = 16u << 20;

struct ConvertBudget {
  std::size_t values_left = max_config_values;
  std::size_t bytes_left = max_config_bytes;
  bool exhausted = false;  // reported once

  // Takes n bytes from the budget; false once it is spent.
  bool take_bytes(std::size_t n) {
    if (n > bytes_left) {
      bytes_left = 0;
      return false;
    }
    bytes_left -= n;
    return true;
  }
};

void report_too_large(ConvertBudget& budget, const SourceLocation& where, Diagnostics& diagnostics) {
  if (budget.exhausted) return;
  budget.exhausted = true;
  diagnostics.error(where, "expands to more than " + std::to_string(max_config_bytes >> 20) +
                               " MiB (aliases that repeat long values?)");
}

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
  if (!budget.take_bytes(sizeof(ConfigNode) + file.size())) {
    report_too_large(budget, out.location, diagnostics);
    return out;
  }
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      out.kind = ConfigNode::Kind::null;
      break;
    case YAML::NodeType::Scalar:
      out.kind = ConfigNode::Kind::scalar;
      if (!budget.take_bytes(node.Scalar().size())) {
        report_too_large(budget, out.location, diagnostics);
        return out;
      }
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
      std::vector<ConfigNode> merges;
      for (const auto& pair : node) {
        SourceLocation key_location = location_of(pair.first.Mark(), file);
        if (!pair.first.IsScalar()) {
          diagnostics.error(key_location, "map keys must be plain strings");
          continue;
        }
        std::string key = pair.first.Scalar();
        if (key == "<<" && pair.first.Tag() == "?") {
          // A YAML merge key (`<<: *defaults`, or a list of aliases): its maps' entries join this map
          // where it has no key of that name, the earlier map first, as PyYAML and Ansible read it.
          ConfigNode merged = convert(pair.second, file, diagnostics, budget, depth + 1);
          if (merged.is_map()) {
            merges.push_back(std::move(merged));
          } else if (merged.is_sequence() && std::all_of(merged.items.begin(), merged.items.end(),
                                                         [](const ConfigNode& n) { return n.is_map(); })) {
            for (auto& item : merged.items) merges.push_back(std::move(item));
          } else {
            diagnostics.error(key_location, "'<<' (a YAML merge key) takes a map or a list of maps, such as *defaults");
          }
          continue;
        }
        if (budget.exhausted) break;
        if (!budget.take_bytes(2 * key.size() + file.size())) {
          report_too_large(budget, key_location, diagnostics);
          break;
        }
        if (!seen.insert(key).second) {
          // yaml-cpp keeps both; a silent "last one wins" hides typos, so it is an error.
          diagnostics.error(key_location, "duplicate key '" + key + "'");
          continue;
        }
        out.entries.push_back({key, key_location, convert(pair.second, file, diagnostics, budget, depth + 1)});
      }
      for (auto& source : merges) {
        for (auto& entry : source.entries) {
          if (seen.insert(entry.key).second) out.entries.push_back(std::move(entry));
        }
      }
      break;
    }
  }
  return out;
}

// Receives parser events and keeps only where the last one was: used to count a file's documents
// without building them.
class DocumentCounter : public YAML::EventHandler {
 public:
  YAML::Mark last;
  // Where each document with content begins: an empty one (a trailing '---') holds nothing to read.
  std::vector<YAML::Mark> content_starts;
  void OnDocumentStart(const YAML::Mark& mark) override {
    last = mark;
    has_content_ = false;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { last = mark; }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { content(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string&) override { content(mark); }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    content(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    content(mark);
  }

 private:
  void content(const YAML::Mark& mark) {
    last = mark;
    if (!has_content_) content_starts.push_back(mark);
    has_content_ = true;
  }
  bool has_content_ = false;

 public:
  void OnMapEnd() override {}
};

// The first line (1-based, up to `last_line`) indented with a tab: YAML allows only spaces there, and
// yaml-cpp's own words for it ("illegal map value", "end of map not found") do not say so.
std::optional<int> first_tab_indented_line(const std::string& text, int last_line) {
  int line = 1;
  bool in_indent = true;
  for (char c : text) {
    if (line > last_line) break;
    if (c == '\n') {
      ++line;
      in_indent = true;
    } else if (in_indent && c == '\t') {
      return line;
    } else if (c != ' ') {
      in_indent = false;
    }
  }
  return std::nullopt;
}

ConfigNode parse(const std::string& text, const std::string& name, Diagnostics& diagnostics) {
  try {
    // yaml-cpp 0.7's LoadAll never returns on some malformed input (found by the profile_yaml fuzz
    // target: its parser keeps reporting empty documents without consuming a byte), so documents are
    // counted with a bound first, and only the first one is built.
    constexpr int max_documents = 16;
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    DocumentCounter counter;
    int documents = 0;
    while (documents <= max_documents && parser.HandleNextDocument(counter)) ++documents;
    if (documents > max_documents) {
      diagnostics.error(location_of(counter.last, name),
                        "YAML syntax error: more than " + std::to_string(max_documents) +
                            " documents (the parser makes no progress here)");
      return ConfigNode{};
    }
    if (counter.content_starts.size() > 1) {
      diagnostics.error(location_of(counter.content_starts[1], name),
                        "expected one YAML document, found " + std::to_string(counter.content_starts.size()) +
                            ": another begins here, after a '---' line");
    }
    if (documents == 0) return ConfigNode{ConfigNode::Kind::null, {}, false, {}, {}, {name, 1, 1}, {}};
    ConvertBudget budget;
    return convert(YAML::Load(text), name, diagnostics, budget, 0);
  } catch (const YAML::Exception& e) {
    std::string hint;
    if (auto tab = first_tab_indented_line(text, e.mark.line + 1)) {
      hint = " (line " + std::to_string(*tab) + " is indented with a tab; YAML indents with spaces only)";
    }
    diagnostics.error(location_of(e.mark, name), "YAML syntax error: " + e.msg + hint);
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

ConfigNode scalar_node(std::string text, const SourceLocation& where, bool quoted) {
  ConfigNode node;
  node.kind = ConfigNode::Kind::scalar;
  node.scalar = std::move(text);
  node.quoted = quoted;
  node.location = where;
  return node;
}

ConfigNode map_node(const SourceLocation& where) {
  ConfigNode node;
  node.kind = ConfigNode::Kind::map;
  node.location = where;
  return node;
}

ConfigNode sequence_node(const SourceLocation& where) {
  ConfigNode node;
  node.kind = ConfigNode::Kind::sequence;
  node.location = where;
  return node;
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

std::optional<std::string> read_config_text(const std::filesystem::path& path, Diagnostics& diagnostics) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int error = errno;  // what open(2) said: missing, a directory, permission denied
    diagnostics.error({path.string(), 0, 0}, std::string("cannot read file: ") + std::strerror(error != 0 ? error : EIO));
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

ConfigNode load_yaml_file(const std::filesystem::path& path, Diagnostics& diagnostics) {
  auto text = read_config_text(path, diagnostics);
  if (!text) return ConfigNode{};
  return parse(*text, path.string(), diagnostics);
}

ConfigNode load_yaml_string(const std::string& text, const std::string& name, Diagnostics& diagnostics) {
  return parse(text, name, diagnostics);
}

namespace {

// A document separator: "---" at the start of a line, alone or followed by blanks or a comment.
bool is_document_marker(std::string_view line) {
  if (!line.starts_with("---")) return false;
  std::string_view rest = line.substr(3);
  std::size_t i = rest.find_first_not_of(" \t\r");
  return i == std::string_view::npos || rest[i] == '#';
}

}  // namespace

std::vector<ConfigNode> load_yaml_documents(const std::string& text, const std::string& name, Diagnostics& diagnostics) {
  // Split on "---" lines here (parse() takes one document) and pad each piece with the lines before
  // it, so yaml-cpp's line numbers are the file's.
  std::vector<ConfigNode> documents;
  std::istringstream lines(text);
  std::string line;
  std::string current;
  int line_number = 0;
  int current_start = 0;
  bool has_content = false;
  auto flush = [&] {
    if (has_content) {
      ConfigNode document = parse(std::string(static_cast<std::size_t>(current_start), '\n') + current, name, diagnostics);
      if (!document.is_null()) documents.push_back(std::move(document));
    }
    current.clear();
    has_content = false;
    current_start = line_number;
  };
  while (std::getline(lines, line)) {
    ++line_number;
    if (is_document_marker(line)) {
      flush();
      continue;
    }
    current += line;
    current += '\n';
    std::size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string::npos && line[first] != '#') has_content = true;
  }
  flush();
  return documents;
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
bool reads_as_non_string(const std::string& key) {
  if (key.empty()) return true;
  char first = key.front();
  if ((first >= '0' && first <= '9') || first == '+' || first == '-' || first == '.' || first == '~') return true;
  std::string lower;
  for (char c : key) lower.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
  for (const char* word : {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}) {
    if (lower == word) return true;
  }
  return false;
}

void emit(YAML::Emitter& out, const ConfigNode& node) {
  switch (node.kind) {
    case ConfigNode::Kind::null:
      out << YAML::Null;
      break;
    case ConfigNode::Kind::scalar:
      if (!node.tag.empty()) out << YAML::LocalTag(node.tag.substr(node.tag.front() == '!' ? 1 : 0));
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
        // A key that YAML 1.1 would read as a number, boolean or null ("123", "0x1f", "no") is quoted,
        // so a host or node named so comes back a string (Ansible's loader is YAML 1.1).
        if (reads_as_non_string(entry.key)) {
          out << YAML::Key << YAML::DoubleQuoted << entry.key << YAML::Value;
        } else {
          out << YAML::Key << entry.key << YAML::Value;
        }
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
