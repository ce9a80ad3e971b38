// aggrik8s-image: build edge Kubernetes node images, flash them, and netboot nodes.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"

namespace {

using namespace aggrik8s::cli;

const std::vector<Command>& commands() {
  static const std::vector<Command> all{build_command(),   validate_command(),      fetch_command(), upload_command(),
                                        inspect_command(), flash_command(),         eeprom_config_command(),
                                        keygen_command(),  serve_command(),         status_command(),
                                        export_command(),  version_command()};
  return all;
}

void print_overview(std::FILE* out) {
  std::string text =
      "Usage: aggrik8s-image COMMAND [OPTIONS] [ARGUMENTS]\n\n"
      "Builds Raspberry Pi 5 + RKE2 disk images and Talos ISOs from YAML profiles, flashes them, and\n"
      "netboots nodes.\n\nCommands:\n";
  for (const auto& c : commands()) {
    std::string left = "  " + c.spec.name;
    left.resize(17, ' ');  // "  eeprom-config" plus a gap
    text += left + c.spec.summary + "\n";
  }
  text += "\nRun 'aggrik8s-image COMMAND --help' for a command's options.\n"
          "Exit status: 0 success, 1 failure, 2 usage error.\n";
  std::fputs(text.c_str(), out);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_overview(stderr);
    return exit_usage;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_overview(stdout);
    return exit_success;
  }
  if (args[0] == "--version") args[0] = "version";
  const Command* command = nullptr;
  for (const auto& c : commands()) {
    if (c.spec.name == args[0]) command = &c;
  }
  if (command == nullptr) {
    std::fprintf(stderr, "aggrik8s-image: unknown command '%s'\n\n", args[0].c_str());
    print_overview(stderr);
    return exit_usage;
  }
  ParsedArguments parsed;
  try {
    parsed = parse_arguments(command->spec, {args.begin() + 1, args.end()});
  } catch (const UsageError& e) {
    std::fprintf(stderr, "aggrik8s-image %s: %s\nTry 'aggrik8s-image %s --help'.\n", command->spec.name.c_str(),
                 e.what(), command->spec.name.c_str());
    return exit_usage;
  }
  if (parsed.flag("help")) {
    std::fputs(help_text(command->spec).c_str(), stdout);
    return exit_success;
  }
  if (parsed.flag("verbose")) aggrik8s::log::set_level(aggrik8s::log::Level::debug);
  if (parsed.flag("quiet")) {
    aggrik8s::log::set_level(aggrik8s::log::Level::warning);
    aggrik8s::set_progress_mode(aggrik8s::ProgressMode::off);
  }
  try {
    return command->run(parsed);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "aggrik8s-image %s: %s\n", command->spec.name.c_str(), e.what());
    return exit_usage;
  } catch (const std::exception& e) {
    aggrik8s::log::error(e.what());
    return exit_failure;
  }
}
