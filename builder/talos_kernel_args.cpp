#include "builder/talos_kernel_args.hpp"

#include <algorithm>
#include <charconv>

namespace aggrik8s::builder {
namespace {

std::optional<int> parse_number(std::string_view text) {
  int value = 0;
  if (text.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<TalosVersion> parse_parts(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == separator) {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() != 3) return std::nullopt;
  auto major = parse_number(parts[0]);
  auto minor = parse_number(parts[1]);
  auto patch = parse_number(parts[2]);
  if (!major || !minor || !patch) return std::nullopt;
  return TalosVersion{*major, *minor, *patch};
}

}  // namespace

std::optional<TalosVersion> TalosVersion::parse(std::string_view text) {
  if (!text.empty() && text.front() == 'v') text.remove_prefix(1);
  if (auto dash = text.find('-'); dash != std::string_view::npos) text = text.substr(0, dash);
  return parse_parts(text, '.');
}

std::optional<TalosVersion> TalosVersion::from_volume_id(std::string_view volume_id) {
  constexpr std::string_view prefix = "TALOS_V";
  if (!volume_id.starts_with(prefix)) return std::nullopt;
  return parse_parts(volume_id.substr(prefix.size()), '_');
}

std::string TalosVersion::str() const {
  return "v" + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::vector<std::string> talos_default_kernel_args(const TalosVersion& version, std::string_view arch) {
  // The order is the imager's; the version steps are those listed in talos.md.
  std::vector<std::string> args{"talos.platform=metal"};
  std::string serial = arch == "arm64" ? "console=ttyAMA0" : "console=ttyS0";
  if (!version.at_least(1, 8)) args.push_back(serial);
  args.push_back("console=tty0");
  if (!version.at_least(1, 14)) args.push_back("init_on_alloc=1");
  for (const char* a : {"slab_nomerge", "pti=on", "consoleblank=0"}) args.emplace_back(a);
  if (!version.at_least(1, 14)) args.push_back("nvme_core.io_timeout=4294967295");
  args.push_back("printk.devkmsg=on");
  if (!version.at_least(1, 11)) {
    for (const char* a : {"ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"}) args.emplace_back(a);
  }
  if (version.at_least(1, 10)) args.push_back("selinux=1");
  if (version.at_least(1, 13)) {
    args.push_back("module.sig_enforce=1");
    args.push_back("proc_mem.force_override=never");
  }
  return args;
}

std::vector<std::string> append_kernel_args(std::vector<std::string> base, const std::vector<std::string>& extra) {
  for (const auto& arg : extra) {
    if (std::find(base.begin(), base.end(), arg) == base.end()) base.push_back(arg);
  }
  return base;
}

}  // namespace aggrik8s::builder
