#include <cstdio>

#include "builder/rpi/rke2_release.hpp"
#include "cli/commands.hpp"
#include "cli/profile_command_support.hpp"
#include "core/byte_size.hpp"
#include "core/log.hpp"
#include "site/site_inventory.hpp"

namespace aggrik8s::cli {

Command fetch_command() {
  CommandSpec spec{"fetch",
                   "PROFILE|SITE...",
                   "Download and verify a profile's inputs into the cache (for later --offline builds)",
                   "A site inventory (kind: site) fetches the inputs of every profile its machines use.",
                   fetch_option_specs(),
                   1,
                   1000};
  return {spec, [](const ParsedArguments& args) {
            ArtifactFetcher fetcher(fetch_options_from(args));
            // A site stands for its profiles (as `build SITE` builds them), each fetched once.
            std::vector<builder::Profile> profiles;
            for (const auto& path : args.positional) {
              Diagnostics diagnostics;
              if (site::is_site_file(path)) {
                auto loaded = site::load_site(path, diagnostics);
                print_diagnostics(diagnostics);
                if (!loaded) return exit_failure;
                for (auto& [file, profile] : loaded->profiles) profiles.push_back(std::move(profile));
                continue;
              }
              auto profile = load_profile_reporting(path, diagnostics);
              if (!profile) return exit_failure;
              profiles.push_back(std::move(*profile));
            }
            for (const auto& loaded_profile : profiles) {
              const builder::Profile* profile = &loaded_profile;
              std::vector<FetchedArtifact> fetched = fetcher.fetch_all(profile->inputs());
              if (profile->kind == builder::ProfileKind::rpi5_rke2 && !profile->rpi_nodes.empty()) {
                auto release = builder::fetch_rke2_release(profile->rpi_nodes.front().rke2, "arm64", fetcher);
                fetched.push_back(release.checksums);
                fetched.push_back(release.bundle);
                fetched.insert(fetched.end(), release.images.begin(), release.images.end());
              }
              for (const auto& f : fetched) {
                std::printf("%s  %s  %s\n", f.sha256.hex().c_str(), format_byte_size(f.size).c_str(), f.path.c_str());
              }
            }
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
