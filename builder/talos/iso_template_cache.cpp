#include "builder/talos/iso_template_cache.hpp"

#include <nlohmann/json.hpp>
#include <utility>

#include "builder/talos/talos_iso_image.hpp"
#include "core/program_build_id.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

// Bumped when what a template holds changes in a way the key would not show (the scrub, the format of
// the .json); the build ID already changes with any change to the code that lays ISOs out.
constexpr int template_format = 1;
// ~130 MiB each for a Talos ISO: enough for a few ISOs, fixed times and argument sets in use at once.
constexpr std::size_t kept_templates = 4;

nlohmann::json key_json(const IsoTemplateKeyParts& parts) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : parts.node_files) {
    files.push_back({{"path", f.path_in_image}, {"mode", f.mode}, {"sort_weight", f.sort_weight}, {"size", f.size}});
  }
  return {{"input_iso_sha256", parts.input_iso.hex()},
          {"source_date_epoch", parts.source_date_epoch},
          {"volume_id", parts.volume_id},
          {"uki_args", parts.uki_args},
          {"node_files", files}};
}

}  // namespace

std::optional<std::string> iso_template_key(const IsoTemplateKeyParts& parts) {
  std::optional<std::string> build_id = program_build_id();
  if (!build_id) return std::nullopt;
  nlohmann::json key = key_json(parts);
  key["format"] = template_format;
  key["program_build_id"] = *build_id;
  key["iso_writer"] = iso_writer_version();
  return Sha256::of(key.dump()).hex();
}

IsoTemplateCache::IsoTemplateCache(fs::path cache_dir)
    : store_(std::move(cache_dir) / "talos-templates", ".iso", kept_templates, template_format, "the node ISO template") {}

std::optional<CachedIsoTemplate> IsoTemplateCache::find(const std::string& key) const {
  std::optional<TemplateStore::Found> found = store_.find(key);
  if (!found) return std::nullopt;
  const nlohmann::json& recorded = found->record["sha256"];
  std::optional<Sha256Digest> sha256 = recorded.is_string() ? Sha256Digest::parse(recorded.get<std::string>()) : std::nullopt;
  if (!sha256) {
    forget(key);
    return std::nullopt;
  }
  return CachedIsoTemplate{found->path, *sha256, found->in_use};
}

void IsoTemplateCache::forget(const std::string& key) const { store_.forget(key); }

void IsoTemplateCache::store(const std::string& key, const IsoTemplateKeyParts& parts, const Sha256Digest& sha256,
                             const std::function<void(const fs::path&)>& write) const {
  nlohmann::json record = key_json(parts);
  record["sha256"] = sha256.hex();
  record["iso_writer"] = iso_writer_version();
  store_.store(key, std::move(record), write);
}

}  // namespace aggrik8s::builder
