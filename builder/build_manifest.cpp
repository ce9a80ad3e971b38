#include "builder/build_manifest.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

nlohmann::json built_file_json(const BuiltFile& file, const fs::path& output_dir) {
  return {{"file", fs::relative(file.path, output_dir).string()}, {"size", file.size}, {"sha256", file.sha256.hex()}};
}

nlohmann::json input_json(const std::string& role, const FetchedArtifact& artifact) {
  return {{"role", role}, {"source", artifact.source.location}, {"sha256", artifact.sha256.hex()}, {"size", artifact.size}};
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
  std::string sums;
  for (const auto& file : files) sums += file.sha256.hex() + "  " + fs::relative(file.path, output_dir).string() + "\n";
  return sums;
}

BuildRecord write_build_record(const fs::path& output_dir, const std::vector<BuiltFile>& files,
                               const nlohmann::json& manifest, FileMode mode) {
  BuildRecord record{output_dir / "SHA256SUMS", output_dir / "manifest.json"};
  write_text_file_atomically(record.checksums, sha256sums_text(files, output_dir), mode);
  write_text_file_atomically(record.manifest, manifest.dump(2) + "\n", mode);
  return record;
}

}  // namespace aggrik8s::builder
