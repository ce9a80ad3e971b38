#include "cli/profile_command_support.hpp"

#include <charconv>

#include "cli/commands.hpp"
#include "core/terminal.hpp"

namespace aggrik8s::cli {

std::vector<OptionSpec> fetch_option_specs() {
  return {
      {"cache-dir", '\0', "DIR", "download cache (default: $AGGRIK8S_CACHE_DIR or $XDG_CACHE_HOME/aggrik8s-image)"},
      {"offline", '\0', "", "use only cached and local inputs; fail if one must be downloaded"},
      {"jobs", 'j', "N", "download up to N inputs at once (1-64, default 4)"},
  };
}

aggrik8s::FetchOptions fetch_options_from(const ParsedArguments& args) {
  aggrik8s::FetchOptions options;
  if (auto dir = args.value("cache-dir")) options.cache_dir = *dir;
  options.offline = args.flag("offline");
  if (auto jobs = args.value("jobs")) {
    unsigned n = 0;
    auto [ptr, ec] = std::from_chars(jobs->data(), jobs->data() + jobs->size(), n);
    if (ec != std::errc() || ptr != jobs->data() + jobs->size() || n < 1 || n > 64) {
      throw UsageError("--jobs must be a number from 1 to 64, got '" + *jobs + "'");
    }
    options.max_parallel = n;
  }
  return options;
}

void print_diagnostics(const Diagnostics& diagnostics) {
  for (const auto& d : diagnostics.distinct()) terminal::print_line(stderr, d.str());
}

std::optional<builder::Profile> load_profile_reporting(const std::string& path, Diagnostics& diagnostics, bool print,
                                                       const builder::ProfileCheckOptions& options) {
  auto profile = builder::load_profile(path, diagnostics, options);
  if (print) print_diagnostics(diagnostics);
  return profile;
}

}  // namespace aggrik8s::cli
