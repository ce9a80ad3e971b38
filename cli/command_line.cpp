#include "cli/command_line.hpp"

#include <algorithm>

namespace aggrik8s::cli {

std::optional<std::string> ParsedArguments::value(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

const std::vector<OptionSpec>& common_options() {
  static const std::vector<OptionSpec> options{
      {"verbose", 'v', "", "more detail (debug log lines)"},
      {"quiet", 'q', "", "only warnings and errors; no progress"},
      {"help", 'h', "", "show this help"},
  };
  return options;
}

namespace {

const OptionSpec* find_long(const CommandSpec& spec, const std::string& name) {
  for (const auto* list : {&spec.options, &common_options()}) {
    auto it = std::find_if(list->begin(), list->end(), [&](const OptionSpec& o) { return o.name == name; });
    if (it != list->end()) return &*it;
  }
  return nullptr;
}

const OptionSpec* find_short(const CommandSpec& spec, char name) {
  for (const auto* list : {&spec.options, &common_options()}) {
    auto it = std::find_if(list->begin(), list->end(), [&](const OptionSpec& o) { return o.short_name == name; });
    if (it != list->end()) return &*it;
  }
  return nullptr;
}

}  // namespace

ParsedArguments parse_arguments(const CommandSpec& spec, const std::vector<std::string>& arguments) {
  ParsedArguments parsed;
  bool only_positional = false;
  auto store = [&](const OptionSpec& option, std::optional<std::string> value, const std::string& as_written) {
    if (!option.value_name.empty() && !value) {
      throw UsageError("option " + as_written + " needs a value (" + option.value_name + ")");
    }
    if (option.value_name.empty() && value) throw UsageError("option " + as_written + " takes no value");
    auto& slot = parsed.values[option.name];
    if (!slot.empty() && !option.repeatable && !option.value_name.empty()) {
      throw UsageError("option " + as_written + " given more than once");
    }
    slot.push_back(value.value_or(""));
  };
  for (std::size_t i = 0; i < arguments.size(); ++i) {
    const std::string& arg = arguments[i];
    if (only_positional || arg == "-" || !arg.starts_with("-")) {
      parsed.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg.starts_with("--")) {
      std::string name = arg.substr(2);
      std::optional<std::string> value;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      const OptionSpec* option = find_long(spec, name);
      if (option == nullptr) throw UsageError("unknown option --" + name);
      if (!option->value_name.empty() && !value) {
        if (i + 1 >= arguments.size()) throw UsageError("option --" + name + " needs a value (" + option->value_name + ")");
        value = arguments[++i];
      }
      store(*option, value, "--" + name);
      continue;
    }
    // Short options, possibly bundled: -vq, -o DIR, -oDIR.
    for (std::size_t j = 1; j < arg.size(); ++j) {
      const OptionSpec* option = find_short(spec, arg[j]);
      std::string as_written = std::string("-") + arg[j];
      if (option == nullptr) throw UsageError("unknown option " + as_written);
      if (option->value_name.empty()) {
        store(*option, std::nullopt, as_written);
        continue;
      }
      std::string value = arg.substr(j + 1);
      if (value.empty()) {
        if (i + 1 >= arguments.size()) throw UsageError("option " + as_written + " needs a value (" + option->value_name + ")");
        value = arguments[++i];
      }
      store(*option, value, as_written);
      break;
    }
  }
  if (parsed.flag("help")) return parsed;
  if (parsed.positional.size() < spec.min_positional) {
    throw UsageError("missing argument " + spec.arguments);
  }
  if (parsed.positional.size() > spec.max_positional) {
    throw UsageError("unexpected argument '" + parsed.positional[spec.max_positional] + "'");
  }
  if (parsed.flag("verbose") && parsed.flag("quiet")) throw UsageError("--verbose and --quiet contradict each other");
  return parsed;
}

std::string help_text(const CommandSpec& spec) {
  std::string out = "Usage: aggrik8s-image " + spec.name + (spec.options.empty() ? "" : " [OPTIONS]") +
                    (spec.arguments.empty() ? "" : " " + spec.arguments) + "\n\n" + spec.summary + "\n";
  if (!spec.description.empty()) out += "\n" + spec.description + "\n";
  auto describe = [&](const std::vector<OptionSpec>& options) {
    for (const auto& o : options) {
      std::string left = "  " + (o.short_name ? std::string("-") + o.short_name + ", " : std::string("    ")) + "--" + o.name;
      if (!o.value_name.empty()) left += " " + o.value_name;
      if (left.size() < 28) left.resize(28, ' ');
      else left += "  ";
      out += left + o.help + "\n";
    }
  };
  if (!spec.options.empty()) {
    out += "\nOptions:\n";
    describe(spec.options);
  }
  out += "\nCommon options:\n";
  describe(common_options());
  // A command that explains its own exit statuses (inspect, keygen, status) says it once.
  if (spec.description.find("Exit status:") == std::string::npos) out += "\nExit status: 0 success, 1 failure, 2 usage error.\n";
  return out;
}

}  // namespace aggrik8s::cli
