#include "builder/rpi/kernel_module_closure.hpp"

#include <functional>
#include <map>
#include <set>

#include "core/error.hpp"

namespace aggrik8s::builder {
namespace {

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> words;
  std::size_t at = 0;
  while (at < text.size()) {
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) ++at;
    std::size_t end = at;
    while (end < text.size() && text[end] != ' ' && text[end] != '\t') ++end;
    if (end > at) words.emplace_back(text.substr(at, end - at));
    at = end;
  }
  return words;
}

struct ModuleEntry {
  std::string path;
  std::vector<std::string> dependencies;  // paths
};

}  // namespace

std::string kernel_module_name(std::string_view path_or_name) {
  std::size_t slash = path_or_name.rfind('/');
  if (slash != std::string_view::npos) path_or_name.remove_prefix(slash + 1);
  std::size_t ko = path_or_name.find(".ko");
  if (ko != std::string_view::npos) path_or_name = path_or_name.substr(0, ko);
  std::string name(path_or_name);
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

KernelModuleClosure resolve_kernel_modules(std::string_view modules_dep, std::string_view modules_builtin,
                                           const std::vector<std::string>& required,
                                           const std::vector<std::string>& optional, std::string_view kernel_release) {
  std::string where = "modules.dep of kernel " + std::string(kernel_release);
  std::map<std::string, ModuleEntry> by_path;
  std::map<std::string, std::string> path_of_name;
  std::size_t line_number = 0;
  for (std::string_view line : lines_of(modules_dep)) {
    ++line_number;
    if (line.empty() || line.front() == '#') continue;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      throw Error(where + ", line " + std::to_string(line_number) + ": expected 'path.ko: dependencies...', got '" +
                  std::string(line) + "'");
    }
    std::string path(line.substr(0, colon));
    if (path.find(".ko") == std::string::npos) {
      throw Error(where + ", line " + std::to_string(line_number) + ": '" + path + "' is not a .ko file");
    }
    ModuleEntry entry{path, words_of(line.substr(colon + 1))};
    path_of_name[kernel_module_name(path)] = path;
    by_path[path] = std::move(entry);
  }
  std::set<std::string> builtin;
  for (std::string_view line : lines_of(modules_builtin)) {
    if (!line.empty()) builtin.insert(kernel_module_name(line));
  }

  KernelModuleClosure closure;
  std::set<std::string> emitted;
  std::set<std::string> in_progress;
  // Depth-first: a module's dependencies (in modules.dep's order) before the module itself.
  std::function<void(const std::string&, const std::string&)> visit = [&](const std::string& path, const std::string& needed_by) {
    if (emitted.contains(path)) return;
    auto it = by_path.find(path);
    if (it == by_path.end()) {
      throw Error(where + ": " + needed_by + " depends on " + path + ", which modules.dep does not list (run depmod " +
                  std::string(kernel_release) + " on the image?)");
    }
    if (!in_progress.insert(path).second) throw Error(where + ": dependency cycle through " + path);
    for (const auto& dependency : it->second.dependencies) visit(dependency, path);
    in_progress.erase(path);
    emitted.insert(path);
    closure.load_order.push_back(path);
  };
  std::set<std::string> seen;
  auto request = [&](const std::string& given, bool is_required) {
    std::string name = kernel_module_name(given);
    if (name.empty()) throw Error("empty kernel module name in the module list");
    if (!seen.insert(name).second) return;
    RequestedKernelModule module{name, is_required, false, false};
    if (auto it = path_of_name.find(name); it != path_of_name.end()) {
      visit(it->second, name + " (requested)");
      module.available = true;
    } else if (builtin.contains(name)) {
      module.built_in = true;
      module.available = true;
    } else if (is_required) {
      throw Error("missing module: " + name + " is neither in modules.dep nor in modules.builtin of kernel " +
                  std::string(kernel_release) + " (/lib/modules/" + std::string(kernel_release) + "/)");
    }
    closure.requested.push_back(module);
  };
  for (const auto& name : required) request(name, true);
  for (const auto& name : optional) request(name, false);
  return closure;
}

}  // namespace aggrik8s::builder
