#pragma once
// One function per subcommand, each in its own file (cli/<name>_command.cpp).
#include <functional>
#include <vector>

#include "cli/command_line.hpp"
#include "core/diagnostics.hpp"

namespace aggrik8s::cli {

struct Command {
  CommandSpec spec;
  std::function<int(const ParsedArguments&)> run;
};

Command build_command();
Command validate_command();
Command fetch_command();
Command inspect_command();
Command flash_command();
Command eeprom_config_command();
Command keygen_command();
Command serve_command();
Command upload_command();
Command version_command();
Command export_command();
Command status_command();


// Prints diagnostics to stderr, one "file:line:col: message" per line.
void print_diagnostics(const Diagnostics& diagnostics);

}  // namespace aggrik8s::cli
