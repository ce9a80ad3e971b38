#pragma once
// What validate, fetch and build share: loading profiles with diagnostics printed, and fetch options
// from the command line.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "cli/command_line.hpp"
#include "core/artifact_fetcher.hpp"

namespace aggrik8s::cli {

std::vector<OptionSpec> fetch_option_specs();
aggrik8s::FetchOptions fetch_options_from(const ParsedArguments& args);

// Loads one profile, printing its diagnostics unless `quiet_diagnostics`.
std::optional<builder::Profile> load_profile_reporting(const std::string& path, Diagnostics& diagnostics,
                                                       bool print = true, const builder::ProfileCheckOptions& options = {});

// `upload` and `build --upload`: the ISOs of the build in `out_dir` to the profile's Proxmox storage
// (cli/upload_command.cpp). Prints one line per file on stdout, or only logs them when `quiet_stdout`.
void upload_talos_isos(const builder::Profile& profile, const std::filesystem::path& out_dir,
                       const std::vector<std::string>& only_nodes, bool dry_run, bool force,
                       bool quiet_stdout = false);

}  // namespace aggrik8s::cli
