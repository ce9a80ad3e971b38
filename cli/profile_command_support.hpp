#pragma once
// What validate, fetch and build share: loading profiles with diagnostics printed, and fetch options
// from the command line.
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
                                                       bool print = true);

}  // namespace aggrik8s::cli
