#include "builder/build_manifest.hpp"

#include <algorithm>
#include <fstream>
#include <map>

namespace aggrik8s::builder {
namespace fs = std::filesystem;

nlohmann::json built_file_json(const BuiltFile& file, const fs::path& output_dir) {
  return {{"file", fs::relative(file.path, output_dir).string()}, {"size", file.size}, {"sha256", file.sha256.hex()}};
}

nlohmann::json input_json(const std::string& role, const FetchedArtifact& artifact) {
  return {{"role", role}, {"source", artifact.source.shown()}, {"sha256", artifact.sha256.hex()}, {"size", artifact.size}};
}

nlohmann::json manifest_base(const Profile& profile, std::optional<std::int64_t> source_date_epoch) {
  nlohmann::json profile_files = nlohmann::json::array();
  for (const auto& file : profile.extends) {
    profile_files.push_back({{"file", file.string()}, {"sha256", Sha256::of_file(file).hex()}});
  }
  profile_files.push_back({{"file", profile.file.string()}, {"sha256", Sha256::of_file(profile.file).hex()}});
  nlohmann::json manifest{{"tool", {{"name", "aggrik8s-image"}, {"version", AGGRIK8S_VERSION}}},
                          {"profile", {{"name", profile.name}, {"kind", to_string(profile.kind)}, {"files", profile_files}}}};
  if (source_date_epoch) manifest["source_date_epoch"] = *source_date_epoch;
  return manifest;
}

std::string sha256sums_text(const std::vector<BuiltFile>& files, const fs::path& output_dir) {
  // In name order, whatever order the files were built or kept in: a `--node` rebuild writes the same
  // SHA256SUMS as a full build of the same bytes, so the two can be compared (diff, a second machine).
  std::vector<std::pair<std::string, std::string>> lines;
  for (const auto& file : files) lines.emplace_back(fs::relative(file.path, output_dir).string(), file.sha256.hex());
  std::sort(lines.begin(), lines.end());
  std::string sums;
  for (const auto& [name, digest] : lines) sums += digest + "  " + name + "\n";
  return sums;
}

namespace {

// Every {"file", "size"} object in `entry`, at any depth: the files a node's entry names.
void collect_files(const nlohmann::json& entry, std::vector<std::pair<std::string, std::uint64_t>>& out) {
  if (entry.is_object()) {
    if (auto file = entry.find("file"); file != entry.end() && file->is_string()) {
      auto size = entry.find("size");
      out.emplace_back(file->get<std::string>(), size != entry.end() && size->is_number_unsigned() ? size->get<std::uint64_t>()
                                                                                                     : UINT64_MAX);
    }
    for (const auto& item : entry) collect_files(item, out);
  } else if (entry.is_array()) {
    for (const auto& item : entry) collect_files(item, out);
  }
}

// The manifest.json an earlier build of the profile named `profile_name` left in output_dir, when it
// is one (parses, has a node list, names that profile); nullopt otherwise.
std::optional<nlohmann::json> previous_manifest(const fs::path& output_dir, const std::string& profile_name) {
  std::ifstream file(output_dir / "manifest.json");
  if (!file) return std::nullopt;
  nlohmann::json old = nlohmann::json::parse(file, nullptr, false);
  if (old.is_discarded() || !old.contains("nodes") || !old["nodes"].is_array() ||
      old.value("/profile/name"_json_pointer, std::string()) != profile_name) {
    return std::nullopt;
  }
  return old;
}

}  // namespace

std::vector<fs::path> remove_dropped_node_outputs(const fs::path& output_dir, const std::vector<std::string>& node_names,
                                                  const std::string& profile_name) {
  std::vector<fs::path> removed;
  std::optional<nlohmann::json> old = previous_manifest(output_dir, profile_name);
  if (!old) return removed;
  auto remove = [&](const fs::path& file) {
    std::error_code ec;
    if (!fs::is_regular_file(fs::symlink_status(file, ec)) || !fs::remove(file, ec)) return;
    removed.push_back(file);
  };
  for (const auto& entry : (*old)["nodes"]) {
    std::string name = entry.value("name", std::string());
    if (name.empty() || std::find(node_names.begin(), node_names.end(), name) != node_names.end()) continue;
    std::vector<std::pair<std::string, std::uint64_t>> named;
    collect_files(entry, named);
    for (const auto& [file, size] : named) {
      // Only names inside the directory: a manifest is ours, but not trusted to reach elsewhere.
      fs::path relative = fs::path(file).lexically_normal();
      if (relative.empty() || relative.is_absolute() || *relative.begin() == "..") continue;
      remove(output_dir / relative);
    }
    std::error_code ec;
    for (fs::directory_iterator it(output_dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::string file = it->path().filename().string();
      if (file.starts_with(name + ".") && file.ends_with(".partial")) remove(it->path());
    }
  }
  return removed;
}

void keep_unbuilt_nodes(const fs::path& output_dir, const std::vector<std::string>& node_names, nlohmann::json& manifest,
                        std::vector<BuiltFile>& files) {
  std::optional<nlohmann::json> old =
      previous_manifest(output_dir, manifest.value("/profile/name"_json_pointer, std::string()));
  std::ifstream old_sums_file(output_dir / "SHA256SUMS");
  if (!old || !old_sums_file) return;
  std::map<std::string, Sha256Digest> old_sums;
  std::string line;
  while (std::getline(old_sums_file, line)) {
    if (line.size() < 67 || line.compare(64, 2, "  ") != 0) continue;
    if (auto digest = Sha256Digest::parse(line.substr(0, 64))) old_sums.emplace(line.substr(66), *digest);
  }
  std::map<std::string, nlohmann::json> built, kept;
  for (const auto& entry : manifest["nodes"]) built.emplace(entry.value("name", std::string()), entry);
  for (const auto& entry : (*old)["nodes"]) {
    std::string name = entry.value("name", std::string());
    if (built.contains(name) || std::find(node_names.begin(), node_names.end(), name) == node_names.end()) continue;
    std::vector<std::pair<std::string, std::uint64_t>> named;
    collect_files(entry, named);
    std::vector<BuiltFile> node_files;
    bool intact = !named.empty();
    for (const auto& [file, size] : named) {
      std::error_code ec;
      auto digest = old_sums.find(file);
      if (digest == old_sums.end() || fs::file_size(output_dir / file, ec) != size || ec) {
        intact = false;
        break;
      }
      node_files.push_back({output_dir / file, size, digest->second});
    }
    if (!intact) continue;
    files.insert(files.end(), node_files.begin(), node_files.end());
    kept.emplace(name, entry);
  }
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& name : node_names) {
    if (auto b = built.find(name); b != built.end()) nodes.push_back(b->second);
    else if (auto k = kept.find(name); k != kept.end()) nodes.push_back(k->second);
  }
  manifest["nodes"] = nodes;
}

BuildRecord write_build_record(const fs::path& output_dir, const std::vector<BuiltFile>& files,
                               const nlohmann::json& manifest, FileMode mode) {
  BuildRecord record{output_dir / "SHA256SUMS", output_dir / "manifest.json"};
  // Both written before either is renamed: a write that fails (a full disk) leaves the old pair.
  fs::path checksums_partial = record.checksums.string() + ".partial";
  fs::path manifest_partial = record.manifest.string() + ".partial";
  try {
    write_file_with_mode(checksums_partial, sha256sums_text(files, output_dir), mode);
    // File names are bytes (an overlay's Latin-1 "caf\xe9.txt" lands in ext4 as it is); JSON is UTF-8,
    // so such a name is listed with U+FFFD for the bytes that are not, rather than failing the build.
    write_file_with_mode(manifest_partial, manifest.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", mode);
    fs::rename(checksums_partial, record.checksums);
    fs::rename(manifest_partial, record.manifest);
  } catch (...) {
    std::error_code ignored;
    fs::remove(checksums_partial, ignored);
    fs::remove(manifest_partial, ignored);
    throw;
  }
  return record;
}

}  // namespace aggrik8s::builder
