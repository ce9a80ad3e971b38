#include "netboot/service/ephemeral_pi_build.hpp"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/ephemeral_boot_arguments.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace aggrik8s::netboot {

namespace fs = std::filesystem;

namespace {

std::string read_small_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool is_build_id(std::string_view id) {
  return id.size() >= 8 && id.size() <= 64 &&
         std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A file name from the manifest: relative, no "..", no empty or "." components.
bool is_inside(std::string_view name) {
  if (name.empty() || name.front() == '/') return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find('/', start);
    std::string_view part = name.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return true;
}

nlohmann::json parse_json(std::string_view text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": not JSON: " + e.what());
  }
}

std::string string_field(const nlohmann::json& object, const char* key, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) throw Error(where + ": '" + key + "' must be a string");
  return it->get<std::string>();
}

std::string file_field(const nlohmann::json& object, const char* key, const std::string& where) {
  std::string name = string_field(object, key, where);
  if (!is_inside(name)) throw Error(where + ": '" + key + "' must be a relative path inside the build, got '" + name + "'");
  return name;
}

}  // namespace

EphemeralBuildManifest parse_ephemeral_manifest(std::string_view json, const std::string& where) {
  nlohmann::json doc = parse_json(json, where);
  if (!doc.is_object()) throw Error(where + ": expected a JSON object");
  if (doc.value("format", 0) != 1) throw Error(where + ": 'format' must be 1 (written by another aggrik8s-image version?)");
  EphemeralBuildManifest m;
  m.id = string_field(doc, "build", where);
  if (!is_build_id(m.id)) throw Error(where + ": 'build' must be lowercase hex, got '" + m.id + "'");
  m.profile = string_field(doc, "profile", where);
  auto root = doc.find("root");
  if (root == doc.end() || !root->is_object()) throw Error(where + ": 'root' must be an object");
  m.root_file = file_field(*root, "file", where + ": root");
  m.root_sha256 = string_field(*root, "sha256", where + ": root");
  if (m.root_sha256.size() != 64 || !is_build_id(m.root_sha256)) throw Error(where + ": root: 'sha256' must be 64 hex digits");
  if (!root->contains("size") || !(*root)["size"].is_number_unsigned()) throw Error(where + ": root: 'size' must be a number");
  m.root_size = (*root)["size"].get<std::uint64_t>();
  auto nodes = doc.find("nodes");
  if (nodes == doc.end() || !nodes->is_object()) throw Error(where + ": 'nodes' must be an object");
  for (const auto& [name, entry] : nodes->items()) {
    std::string at = where + ": nodes." + name;
    if (!entry.is_object()) throw Error(at + ": expected an object");
    EphemeralNodeEntry node;
    node.hostname = string_field(entry, "hostname", at);
    node.cmdline = string_field(entry, "cmdline", at);
    if (node.cmdline.find('\n') != std::string::npos) throw Error(at + ": 'cmdline' must be one line");
    node.config_txt = file_field(entry, "config_txt", at);
    node.layer = file_field(entry, "layer", at);
    m.nodes.emplace(name, std::move(node));
  }
  if (auto base = doc.find("http_boot_url_base"); base != doc.end()) {
    if (!base->is_string()) throw Error(where + ": 'http_boot_url_base' must be a string");
    m.http_boot_url_base = base->get<std::string>();
  }
  return m;
}

std::string parse_ephemeral_current(std::string_view json, const std::string& where) {
  nlohmann::json doc = parse_json(json, where);
  if (!doc.is_object()) throw Error(where + ": expected a JSON object");
  std::string id = string_field(doc, "build", where);
  if (!is_build_id(id)) throw Error(where + ": 'build' must be lowercase hex, got '" + id + "'");
  return id;
}

std::string ephemeral_node_cmdline(const EphemeralBuildManifest& build, const std::string& node, const std::string& url_base) {
  return ephemeral_boot_cmdline(build.nodes.at(node).cmdline, {url_base, build.id, build.root_file, build.root_sha256}, node);
}

EphemeralPiBuilds::EphemeralPiBuilds(fs::path directory, Clock::duration boot_window)
    : directory_(std::move(directory)), boot_window_(boot_window) {}

std::shared_ptr<const EphemeralBuild> EphemeralPiBuilds::load(const std::string& id) {
  if (auto it = loaded_.find(id); it != loaded_.end()) return it->second;
  fs::path dir = directory_ / id;
  fs::path manifest_file = dir / "ephemeral.json";
  auto build = std::make_shared<EphemeralBuild>();
  build->directory = dir;
  build->manifest = parse_ephemeral_manifest(read_small_file(manifest_file), manifest_file.string());
  if (build->manifest.id != id) {
    throw Error(manifest_file.string() + ": names build '" + build->manifest.id + "' but lies in directory '" + id + "'");
  }
  loaded_[id] = build;
  return build;
}

std::shared_ptr<const EphemeralBuild> EphemeralPiBuilds::current() {
  std::lock_guard lock(mutex_);
  fs::path pointer = directory_ / "current.json";
  std::error_code ec;
  auto mtime = fs::last_write_time(pointer, ec);
  if (ec) throw Error("cannot read " + pointer.string() + ": " + ec.message());
  if (current_id_.empty() || mtime != current_mtime_) {
    std::string id = parse_ephemeral_current(read_small_file(pointer), pointer.string());
    if (id != current_id_ && !current_id_.empty()) log::info("ephemeral: ", directory_.string(), ": build ", id, " is current (was ", current_id_, ")");
    current_id_ = id;
    current_mtime_ = mtime;
  }
  return load(current_id_);
}

std::shared_ptr<const EphemeralBuild> EphemeralPiBuilds::find(std::string_view id) {
  if (!is_build_id(id)) return nullptr;
  std::lock_guard lock(mutex_);
  std::error_code ec;
  if (!fs::is_directory(directory_ / std::string(id), ec)) return nullptr;
  try {
    return load(std::string(id));
  } catch (const std::exception& e) {
    log::warning("ephemeral: ", e.what());
    return nullptr;
  }
}

std::shared_ptr<const EphemeralBuild> EphemeralPiBuilds::for_boot(const std::string& node, bool boot_starts, Clock::time_point now) {
  if (!boot_starts) {
    std::lock_guard lock(mutex_);
    auto pin = pins_.find(node);
    if (pin != pins_.end() && now - pin->second.at < boot_window_) {
      std::error_code ec;
      if (fs::is_directory(directory_ / pin->second.id, ec)) return load(pin->second.id);
    }
  }
  auto build = current();
  std::lock_guard lock(mutex_);
  pins_[node] = Pin{build->manifest.id, now};
  return build;
}

std::set<std::string> EphemeralPiBuilds::in_use(Clock::time_point now, Clock::duration within) {
  std::lock_guard lock(mutex_);
  std::set<std::string> ids;
  if (!current_id_.empty()) ids.insert(current_id_);
  for (const auto& [node, pin] : pins_) {
    if (now - pin.at < within) ids.insert(pin.id);
  }
  return ids;
}

std::vector<std::string> EphemeralPiBuilds::prune(Clock::time_point now, Clock::duration keep_for,
                                                  fs::file_time_type files_now) {
  current();  // what current.json says now is never removed
  std::vector<std::string> removed;
  std::error_code ec;
  {
    std::lock_guard lock(mutex_);
    // Every other build was retired when current.json last changed, or before.
    if (files_now - current_mtime_ < keep_for) return removed;
  }
  std::set<std::string> keep = in_use(now, keep_for);
  for (const auto& entry : fs::directory_iterator(directory_, ec)) {
    std::string id = entry.path().filename().string();
    if (!is_build_id(id) || keep.contains(id) || !entry.is_directory(ec)) continue;
    // Only what a build wrote: a directory with its manifest.
    if (!fs::is_regular_file(entry.path() / "ephemeral.json", ec)) continue;
    std::error_code removing;
    fs::remove_all(entry.path(), removing);
    if (removing) {
      log::warning("ephemeral: cannot remove the old build ", entry.path().string(), ": ", removing.message());
      continue;
    }
    log::info("ephemeral: removed build ", id, " of ", directory_.string(), ": retired, and no node booted it recently");
    removed.push_back(id);
    std::lock_guard lock(mutex_);
    loaded_.erase(id);
  }
  return removed;
}

}  // namespace aggrik8s::netboot
