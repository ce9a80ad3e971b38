#pragma once
// What a build leaves beside its outputs to say what they are: SHA256SUMS in sha256sum's format (so
// `sha256sum -c SHA256SUMS` checks them) and manifest.json (the tool, the profile files, the inputs
// with their checksums, then what each product adds: nodes, versions, kernel arguments). Neither
// ever holds a secret.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "builder/build_output.hpp"
#include "builder/profile.hpp"
#include "core/artifact_fetcher.hpp"

namespace aggrik8s::builder {

// {"file": path relative to output_dir, "size", "sha256"}.
nlohmann::json built_file_json(const BuiltFile& file, const std::filesystem::path& output_dir);

// {"role", "source", "sha256", "size"} of a fetched input.
nlohmann::json input_json(const std::string& role, const FetchedArtifact& artifact);

// The part of manifest.json every build has: the tool and its version, the profile (name, kind, each
// file it extends and itself with their sha256) and source_date_epoch when it was set.
nlohmann::json manifest_base(const Profile& profile, std::optional<std::int64_t> source_date_epoch);

// SHA256SUMS: one "<sha256>  <path relative to output_dir>" line per file, in path order.
std::string sha256sums_text(const std::vector<BuiltFile>& files, const std::filesystem::path& output_dir);

// A `build --node` of some nodes keeps the record of the profile's others: their entries of the
// previous manifest.json (same profile name) and their lines of SHA256SUMS, when every file an entry
// names is still there at the size it recorded. Without this the other nodes' outputs, still on disk,
// would drop out of SHA256SUMS and manifest.json, and `status` and `upload` would no longer know them.
// `manifest["nodes"]` ends up in `node_names` order (the profile's); `files` gets the kept files.
void keep_unbuilt_nodes(const std::filesystem::path& output_dir, const std::vector<std::string>& node_names,
                        nlohmann::json& manifest, std::vector<BuiltFile>& files);

// The outputs of nodes that the previous build of this profile into output_dir listed (manifest.json)
// and the profile no longer has: the files that manifest names for them, and their unfinished
// "<node>.*.partial" files from a killed build. Left in place they kept the removed node's join
// token, outside SHA256SUMS. Files the manifest does not name (a user's own) stay. Returns what was removed.
std::vector<std::filesystem::path> remove_dropped_node_outputs(const std::filesystem::path& output_dir,
                                                               const std::vector<std::string>& node_names,
                                                               const std::string& profile_name);

struct BuildRecord {
  std::filesystem::path checksums;  // <output_dir>/SHA256SUMS
  std::filesystem::path manifest;   // <output_dir>/manifest.json
};

// Writes SHA256SUMS and manifest.json (each as <name>.partial), then renames both into place; on
// failure both .partial files are removed and the previous pair is left as it was. Builds call it
// inside InterruptCleanup::hold_off with their PartialOutputs::commit, so that an interrupt leaves
// either the new record with every output it lists, or neither.
BuildRecord write_build_record(const std::filesystem::path& output_dir, const std::vector<BuiltFile>& files,
                               const nlohmann::json& manifest, FileMode mode);

}  // namespace aggrik8s::builder
