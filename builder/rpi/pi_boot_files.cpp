#include "builder/rpi/pi_boot_files.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <sstream>

namespace aggrik8s::builder {
namespace {

constexpr std::string_view block_begin = "# --- aggrik8s-image: begin (managed, rewritten on every build) ---";
constexpr std::string_view block_end = "# --- aggrik8s-image: end ---";

std::string key_of(std::string_view argument) {
  auto eq = argument.find('=');
  return std::string(eq == std::string_view::npos ? argument : argument.substr(0, eq));
}

std::string join(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) out += (out.empty() ? "" : " ") + a;
  return out + "\n";
}

}  // namespace

std::vector<std::string> split_cmdline(std::string_view cmdline) {
  std::vector<std::string> out;
  std::istringstream in{std::string(cmdline)};
  std::string word;
  while (in >> word) out.push_back(word);
  return out;
}

std::optional<std::string> check_pi_cmdline_length(std::string_view cmdline, const std::string& what) {
  constexpr std::size_t kernel_keeps = 2047, firmware_margin = 1536;
  std::size_t length = cmdline.size() - (cmdline.ends_with("\n") ? 1 : 0);
  if (length > kernel_keeps) {
    std::vector<std::string> arguments = split_cmdline(cmdline);
    throw Error(what + ": cmdline.txt is " + std::to_string(length) + " bytes; the kernel keeps " +
                std::to_string(kernel_keeps) + " and would silently drop the rest (its last argument is " +
                (arguments.empty() ? std::string("none") : arguments.back()) + "): shorten boot.cmdline");
  }
  if (length > firmware_margin) {
    return what + ": cmdline.txt is " + std::to_string(length) + " bytes; the firmware adds its own arguments in " +
           "front (a few hundred bytes), and the kernel keeps 2047 in all: the last arguments may be lost";
  }
  return std::nullopt;
}

std::string add_cmdline_arguments(std::string_view cmdline, const std::vector<std::string>& arguments) {
  std::vector<std::string> args = split_cmdline(cmdline);
  for (const auto& argument : arguments) {
    if (std::find(args.begin(), args.end(), argument) != args.end()) continue;
    // Keys that may legitimately repeat with different values (console=serial0 console=tty1,
    // cgroup_enable=cpuset cgroup_enable=memory) are appended rather than replaced.
    std::string key = key_of(argument);
    bool repeatable = key == "console" || key == "cgroup_enable" || key == "cgroup_disable" || key == "modprobe.blacklist";
    auto same_key = std::find_if(args.begin(), args.end(), [&](const std::string& a) { return key_of(a) == key; });
    if (!repeatable && argument.find('=') != std::string::npos && same_key != args.end()) {
      *same_key = argument;
    } else {
      args.push_back(argument);
    }
  }
  return join(args);
}

std::string remove_cmdline_arguments(std::string_view cmdline, const std::vector<std::string>& keys) {
  std::vector<std::string> args = split_cmdline(cmdline);
  std::erase_if(args, [&](const std::string& a) { return std::find(keys.begin(), keys.end(), key_of(a)) != keys.end(); });
  return join(args);
}

std::optional<std::string> cmdline_root_partuuid(std::string_view cmdline) {
  for (const auto& a : split_cmdline(cmdline)) {
    if (a.starts_with("root=PARTUUID=")) return a.substr(14);
  }
  return std::nullopt;
}

std::vector<std::string> managed_config_txt_lines(const PiBootSettings& boot) {
  std::vector<std::string> lines{"[all]"};
  if (boot.storage == PiBootSettings::Storage::nvme) lines.push_back("dtparam=pciex1");
  if (boot.pcie_gen) lines.push_back("dtparam=pciex1_gen=" + std::to_string(*boot.pcie_gen));
  // Without kernel=, a Pi 5 boots kernel_2712.img (16K pages); kernel8.img is the 4K-page build.
  if (boot.kernel_page_size_kib == 4) lines.push_back("kernel=kernel8.img");
  lines.insert(lines.end(), boot.config_txt.begin(), boot.config_txt.end());
  return lines;
}

std::string apply_config_txt(std::string_view config_txt, const PiBootSettings& boot) {
  std::string kept(config_txt);
  if (auto begin = kept.find(block_begin); begin != std::string::npos) {
    auto end = kept.find(block_end, begin);
    end = end == std::string::npos ? kept.size() : end + block_end.size();
    if (end < kept.size() && kept[end] == '\n') ++end;
    kept.erase(begin, end - begin);
  }
  while (kept.size() >= 2 && kept.ends_with("\n\n")) kept.pop_back();
  if (!kept.empty() && kept.back() != '\n') kept.push_back('\n');
  auto lines = managed_config_txt_lines(boot);
  if (lines.size() == 1) return kept;  // only "[all]": nothing to manage
  std::string out = kept + (kept.empty() ? "" : "\n") + std::string(block_begin) + "\n";
  for (const auto& line : lines) out += line + "\n";
  out += std::string(block_end) + "\n";
  return out;
}

}  // namespace aggrik8s::builder
