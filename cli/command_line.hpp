#pragma once
// Argument parsing for the subcommands. Small on purpose: each subcommand declares its options once,
// and the same declaration produces both the parser and the --help text, so they cannot drift apart.
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace aggrik8s::cli {

// Exit codes, as documented in --help and the README.
constexpr int exit_success = 0;
constexpr int exit_failure = 1;
constexpr int exit_usage = 2;

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OptionSpec {
  std::string name;        // long name without dashes, e.g. "out"
  char short_name = '\0';  // e.g. 'o'
  std::string value_name;  // empty: a flag
  std::string help;
  bool repeatable = false;
};

struct CommandSpec {
  std::string name;
  std::string arguments;  // e.g. "PROFILE..."
  std::string summary;
  std::string description;
  std::vector<OptionSpec> options;
  std::size_t min_positional = 0;
  std::size_t max_positional = 0;
};

struct ParsedArguments {
  std::map<std::string, std::vector<std::string>> values;
  std::vector<std::string> positional;

  bool flag(const std::string& name) const { return values.contains(name); }
  std::optional<std::string> value(const std::string& name) const;
};

// Options every subcommand accepts.
const std::vector<OptionSpec>& common_options();

// Throws UsageError with a message that names the bad argument.
ParsedArguments parse_arguments(const CommandSpec& spec, const std::vector<std::string>& arguments);
std::string help_text(const CommandSpec& spec);

}  // namespace aggrik8s::cli
