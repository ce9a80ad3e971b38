#include <cstdio>

#include "cli/commands.hpp"
#include "cli/profile_command_support.hpp"

namespace aggrik8s::cli {

Command build_command() {
  std::vector<OptionSpec> options{
      {"out", 'o', "DIR", "output directory (default: ./out/<profile name>)"},
      {"node", 'n', "NAME", "build only this node (repeatable)", true},
      {"json", '\0', "", "print a machine-readable summary of the outputs"},
  };
  for (auto& o : fetch_option_specs()) options.push_back(o);
  CommandSpec spec{"build", "PROFILE", "Build the images a profile describes", "", options, 1, 1};
  return {spec, [](const ParsedArguments& args) {
            Diagnostics diagnostics;
            auto profile = load_profile_reporting(args.positional.front(), diagnostics);
            if (!profile) return exit_failure;
            std::fprintf(stderr, "aggrik8s-image build: building %s profiles is not implemented yet; nothing was built.\n",
                         builder::to_string(profile->kind));
            return exit_failure;
          }};
}

}  // namespace aggrik8s::cli
