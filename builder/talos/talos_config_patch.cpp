#include "builder/talos/talos_config_patch.hpp"

#include <algorithm>
#include <charconv>
#include <optional>
#include <stdexcept>

#include "core/config_reader.hpp"

namespace aggrik8s::builder {
namespace {

std::string join_pointer(const std::vector<std::string>& tokens, std::size_t count) {
  std::string out;
  for (std::size_t i = 0; i < count && i < tokens.size(); ++i) {
    out += '/';
    for (char c : tokens[i]) {
      if (c == '~') out += "~0";
      else if (c == '/') out += "~1";
      else out += c;
    }
  }
  return out;
}

// RFC 6901 array index: "0" or digits without a leading zero.
std::optional<std::size_t> parse_index(const std::string& token) {
  if (token.empty() || (token.size() > 1 && token.front() == '0')) return std::nullopt;
  if (!std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  std::size_t value = 0;
  auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec != std::errc() || ptr != token.data() + token.size()) return std::nullopt;
  return value;
}

bool is_string_scalar(const ConfigNode& node) {
  if (node.quoted) return true;
  if (parse_yaml_bool(node) || parse_yaml_integer(node)) return false;
  if (node.scalar == "null" || node.scalar == "~") return false;
  return true;
}

class JsonPatcher {
 public:
  JsonPatcher(ConfigNode& document, const ConfigNode& operation, std::size_t index)
      : document_(document), operation_(operation) {
    if (!operation.is_map()) fail("a JSON patch operation must be a map with 'op' and 'path'");
    op_ = required_string("op");
    label_ = "json6902[" + std::to_string(index) + "] (" + op_;
    path_text_ = required_string("path");
    label_ += " " + path_text_ + ")";
    path_ = pointer(path_text_);
  }

  void run() {
    if (op_ == "add") {
      add(path_, required_value());
    } else if (op_ == "remove") {
      remove(path_);
    } else if (op_ == "replace") {
      ConfigNode value = required_value();
      locate(path_);  // must exist
      remove(path_);
      add(path_, std::move(value));
    } else if (op_ == "move" || op_ == "copy") {
      std::string from_text = required_string("from");
      std::vector<std::string> from = pointer(from_text);
      if (op_ == "move" && from.size() < path_.size() && std::equal(from.begin(), from.end(), path_.begin())) {
        fail("cannot move " + from_text + " into one of its own children");
      }
      ConfigNode value = *locate(from);
      if (op_ == "move") remove(from);
      add(path_, std::move(value));
    } else if (op_ == "test") {
      const ConfigNode* actual = locate(path_);
      if (!same_value(*actual, required_value())) fail("the value at " + path_text_ + " differs from the test's value");
    } else {
      fail("unknown op '" + op_ + "' (add, remove, replace, move, copy, test)");
    }
  }

 private:
  [[noreturn]] void fail(const std::string& message) const {
    throw TalosPatchError(operation_.location, (label_.empty() ? "" : label_ + ": ") + message);
  }

  std::string required_string(std::string_view key) const {
    const ConfigNode* value = operation_.find(key);
    if (value == nullptr || !value->is_scalar()) fail("the operation needs '" + std::string(key) + "' (a string)");
    return value->scalar;
  }

  ConfigNode required_value() const {
    const ConfigNode* value = operation_.find("value");
    if (value == nullptr) fail("the operation needs 'value'");
    return *value;
  }

  std::vector<std::string> pointer(const std::string& text) const {
    try {
      return parse_json_pointer(text);
    } catch (const std::invalid_argument& e) {
      fail(e.what());
    }
  }

  // The node at `tokens`; fails naming the first step that does not exist.
  ConfigNode* locate(const std::vector<std::string>& tokens) const {
    ConfigNode* node = &document_;
    for (std::size_t i = 0; i < tokens.size(); ++i) node = child(*node, tokens, i, false);
    return node;
  }

  ConfigNode* child(ConfigNode& parent, const std::vector<std::string>& tokens, std::size_t i, bool for_add) const {
    const std::string& token = tokens[i];
    std::string where = join_pointer(tokens, i);
    if (where.empty()) where = "the document root";
    if (parent.is_map()) {
      ConfigNode* next = parent.find(token);
      if (next == nullptr) fail("no key '" + token + "' in " + where);
      return next;
    }
    if (parent.is_sequence()) {
      auto index = parse_index(token);
      if (!index) fail("'" + token + "' is not a list index in " + where);
      if (*index >= parent.items.size() && !(for_add && *index == parent.items.size())) {
        fail("index " + token + " is out of range in " + where + " (" + std::to_string(parent.items.size()) + " items)");
      }
      return &parent.items[*index];
    }
    fail(where + " is " + parent.kind_name() + ", not a map or a list");
  }

  void add(const std::vector<std::string>& tokens, ConfigNode value) {
    if (tokens.empty()) {
      document_ = std::move(value);
      return;
    }
    std::vector<std::string> parent_tokens(tokens.begin(), tokens.end() - 1);
    ConfigNode* parent = locate(parent_tokens);
    const std::string& last = tokens.back();
    if (parent->is_map()) {
      parent->set(last, std::move(value));
    } else if (parent->is_sequence()) {
      if (last == "-") {
        parent->items.push_back(std::move(value));
        return;
      }
      auto index = parse_index(last);
      if (!index || *index > parent->items.size()) {
        fail("'" + last + "' is not an index where an item can be added (0.." + std::to_string(parent->items.size()) +
             " or '-')");
      }
      parent->items.insert(parent->items.begin() + static_cast<std::ptrdiff_t>(*index), std::move(value));
    } else {
      fail(join_pointer(tokens, tokens.size() - 1) + " is " + parent->kind_name() + ", not a map or a list");
    }
  }

  void remove(const std::vector<std::string>& tokens) {
    if (tokens.empty()) fail("cannot remove the whole document");
    std::vector<std::string> parent_tokens(tokens.begin(), tokens.end() - 1);
    ConfigNode* parent = locate(parent_tokens);
    child(*parent, tokens, tokens.size() - 1, false);  // must exist
    if (parent->is_map()) {
      parent->erase(tokens.back());
    } else {
      parent->items.erase(parent->items.begin() + static_cast<std::ptrdiff_t>(*parse_index(tokens.back())));
    }
  }

  ConfigNode& document_;
  const ConfigNode& operation_;
  std::string op_;
  std::string label_;
  std::string path_text_;
  std::vector<std::string> path_;
};

}  // namespace

std::vector<std::string> parse_json_pointer(std::string_view pointer) {
  std::vector<std::string> tokens;
  if (pointer.empty()) return tokens;
  if (pointer.front() != '/') {
    throw std::invalid_argument("a JSON pointer must start with '/', got '" + std::string(pointer) + "'");
  }
  std::string current;
  for (std::size_t i = 1; i <= pointer.size(); ++i) {
    if (i == pointer.size() || pointer[i] == '/') {
      tokens.push_back(std::move(current));
      current.clear();
      continue;
    }
    if (pointer[i] == '~') {
      if (i + 1 < pointer.size() && pointer[i + 1] == '0') current += '~';
      else if (i + 1 < pointer.size() && pointer[i + 1] == '1') current += '/';
      else throw std::invalid_argument("'~' must be followed by 0 or 1 in JSON pointer '" + std::string(pointer) + "'");
      ++i;
      continue;
    }
    current += pointer[i];
  }
  return tokens;
}

ConfigNode apply_merge_patch(const ConfigNode& target, const ConfigNode& patch) {
  if (!patch.is_map()) return patch;
  ConfigNode out = target.is_map() ? target : ConfigNode{ConfigNode::Kind::map, {}, false, {}, {}, patch.location, {}};
  for (const auto& entry : patch.entries) {
    if (entry.value.is_null()) {
      out.erase(entry.key);
      continue;
    }
    if (ConfigNode* existing = out.find(entry.key)) {
      *existing = apply_merge_patch(*existing, entry.value);
    } else {
      out.entries.push_back({entry.key, entry.key_location,
                             apply_merge_patch(ConfigNode{ConfigNode::Kind::null, {}, false, {}, {}, entry.value.location, {}},
                                               entry.value)});
    }
  }
  return out;
}

void apply_json_patch(ConfigNode& target, const ConfigNode& operations) {
  if (!operations.is_sequence()) {
    throw TalosPatchError(operations.location, "a JSON patch must be a list of operations");
  }
  ConfigNode working = target;
  for (std::size_t i = 0; i < operations.items.size(); ++i) {
    JsonPatcher(working, operations.items[i], i).run();
  }
  target = std::move(working);
}

bool same_value(const ConfigNode& a, const ConfigNode& b) {
  bool a_null = a.is_null() || (a.is_scalar() && !a.quoted && (a.scalar == "null" || a.scalar == "~"));
  bool b_null = b.is_null() || (b.is_scalar() && !b.quoted && (b.scalar == "null" || b.scalar == "~"));
  if (a_null || b_null) return a_null == b_null;
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case ConfigNode::Kind::null:
      return true;
    case ConfigNode::Kind::scalar:
      return a.scalar == b.scalar && is_string_scalar(a) == is_string_scalar(b);
    case ConfigNode::Kind::sequence:
      if (a.items.size() != b.items.size()) return false;
      for (std::size_t i = 0; i < a.items.size(); ++i) {
        if (!same_value(a.items[i], b.items[i])) return false;
      }
      return true;
    case ConfigNode::Kind::map:
      if (a.entries.size() != b.entries.size()) return false;
      for (const auto& entry : a.entries) {
        const ConfigNode* other = b.find(entry.key);
        if (other == nullptr || !same_value(entry.value, *other)) return false;
      }
      return true;
  }
  return false;
}

}  // namespace aggrik8s::builder
