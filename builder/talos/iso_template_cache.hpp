#pragma once
// Node ISO templates kept in the cache, so that a later build's first node is a variant of one
// (iso_variant.hpp) instead of a libisoburn remaster: ~0.3-0.5 s of a 20-node build that otherwise costs
// about as much as copying the ISO 20 times (docs/benchmarks.md, Talos section).
//
// A template is the first node's ISO with every byte that is the node's own zeroed: its config.yaml,
// grub.cfg and embedded-config archive, and the archive slot of each UKI copy (with the word that
// balances its PE checksum set for an empty slot), so no machine config or cluster secret is kept.
// What else decides its bytes is in its key: the input ISO's SHA-256, the fixed time
// (SOURCE_DATE_EPOCH; a build stamped with the current time has no reusable template), the UKIs'
// kernel arguments, each node file's path and padded size, the library that lays the ISO out and
// this exact program (its build ID), so a template is only reused by the binary that would write the
// same bytes from scratch.
//
// <cache>/talos-templates/<key>.iso and <key>.json (the template's SHA-256 and what the key was made
// of), with the .iso's stamp (core/artifact_fetcher.hpp: record_cache_file). A template whose stamp
// no longer matches is removed; one whose bytes do not hash to the recorded SHA-256 is removed too,
// and the build, which checks that before it commits, runs again without it. The newest few are kept.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "builder/template_store.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {

struct IsoTemplateKeyParts {
  Sha256Digest input_iso;
  std::int64_t source_date_epoch = 0;
  std::string volume_id;
  std::vector<std::string> uki_args;  // the arguments the template's UKIs were edited with
  struct NodeFile {
    std::string path_in_image;
    std::uint32_t mode = 0;
    std::int32_t sort_weight = 0;
    std::uint64_t size = 0;  // as written, padding included
  };
  std::vector<NodeFile> node_files;
};

// The key's hex, or nullopt when this program has no build ID (no template is then kept or used).
std::optional<std::string> iso_template_key(const IsoTemplateKeyParts& parts);

struct CachedIsoTemplate {
  std::filesystem::path path;
  Sha256Digest sha256;  // recorded when it was stored
  TemplateStore::Lease in_use;  // held while the build reads it (template_store.hpp)
};

class IsoTemplateCache {
 public:
  explicit IsoTemplateCache(std::filesystem::path cache_dir);
  // The template under `key`, or nullopt (none, or one changed since it was stored: removed).
  std::optional<CachedIsoTemplate> find(const std::string& key) const;
  // Stores a template: `write` makes the file at the path it is given (a temporary name beside the
  // final one), whose bytes hash to `sha256`; then the oldest templates beyond the newest few are
  // removed. Throws Error when the cache cannot be written (nothing is left under a final name).
  void store(const std::string& key, const IsoTemplateKeyParts& parts, const Sha256Digest& sha256,
             const std::function<void(const std::filesystem::path&)>& write) const;
  // Removes a template found to be corrupt.
  void forget(const std::string& key) const;
  std::filesystem::path directory() const { return store_.directory(); }

 private:
  TemplateStore store_;
};

}  // namespace aggrik8s::builder
