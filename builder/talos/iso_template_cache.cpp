#include "builder/talos/iso_template_cache.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "builder/build_output.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"
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

std::optional<Sha256Digest> recorded_sha256(const fs::path& sidecar) {
  std::ifstream in(sidecar);
  if (!in) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", 0) != template_format) return std::nullopt;
  return Sha256Digest::parse(j.value("sha256", ""));
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

IsoTemplateCache::IsoTemplateCache(fs::path cache_dir) : dir_(std::move(cache_dir) / "talos-templates") {}

std::optional<CachedIsoTemplate> IsoTemplateCache::find(const std::string& key) const {
  fs::path iso = dir_ / (key + ".iso");
  std::error_code ec;
  if (!fs::is_regular_file(iso, ec)) return std::nullopt;
  std::optional<Sha256Digest> sha256 = recorded_sha256(dir_ / (key + ".json"));
  if (!sha256 || !cache_file_unchanged(iso)) {
    forget(key);
    return std::nullopt;
  }
  return CachedIsoTemplate{iso, *sha256};
}

void IsoTemplateCache::forget(const std::string& key) const {
  forget_cache_file(dir_ / (key + ".iso"));
  std::error_code ec;
  fs::remove(dir_ / (key + ".json"), ec);
}

void IsoTemplateCache::store(const std::string& key, const IsoTemplateKeyParts& parts, const Sha256Digest& sha256,
                             const std::function<void(const fs::path&)>& write) const {
  fs::path iso = dir_ / (key + ".iso");
  fs::path sidecar = dir_ / (key + ".json");
  // A name of this process's own: two builds storing the same template at once each rename a whole file.
  fs::path temporary = dir_ / (key + ".iso." + std::to_string(::getpid()) + ".partial");
  RemovedOnInterrupt cleanup(temporary);
  std::error_code ec;
  try {
    fs::create_directories(dir_, ec);
    if (ec) throw Error("cannot create " + dir_.string() + ": " + ec.message());
    write(temporary);
    nlohmann::json record = key_json(parts);
    record["format"] = template_format;
    record["sha256"] = sha256.hex();
    record["size"] = fs::file_size(temporary);
    record["iso_writer"] = iso_writer_version();
    // The .json first: a .iso is only ever found with the record of its own bytes beside it (find()
    // removes a .iso whose stamp or record is missing or from another format).
    write_text_file_atomically(sidecar, record.dump(2) + "\n", FileMode::exactly(0644));
    fs::rename(temporary, iso);
    record_cache_file(iso);
  } catch (const std::exception& e) {
    fs::remove(temporary, ec);
    throw Error(std::string("cannot keep the node ISO template in the cache: ") + e.what());
  }
  // The newest few, by when they were stored; and what a process killed while storing left behind.
  std::vector<std::pair<fs::file_time_type, std::string>> stored;
  auto now = fs::file_time_type::clock::now();
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    fs::file_time_type written = it->last_write_time(ec);
    if (ec) break;
    std::string name = it->path().filename().string();
    if (it->path().extension() == ".iso") {
      stored.emplace_back(written, it->path().stem().string());
    } else if (name.ends_with(".partial") && now - written > std::chrono::hours(1)) {
      fs::remove(it->path(), ec);
    }
  }
  std::sort(stored.begin(), stored.end(), std::greater<>());
  for (std::size_t i = kept_templates; i < stored.size(); ++i) {
    if (stored[i].second != key) forget(stored[i].second);
  }
}

}  // namespace aggrik8s::builder
