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

std::string join_kernel_args(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

std::vector<std::string> split_kernel_args(std::string_view command_line) {
  std::vector<std::string> args;
  std::string current;
  for (char c : command_line) {
    if (c == ' ' || c == '\t' || c == '\n') {
      if (!current.empty()) args.push_back(std::move(current));
      current.clear();
    } else {
      current += c;
    }
  }
  if (!current.empty()) args.push_back(std::move(current));
  return args;
}

KernelCommandLineLoader grub_loader(std::string_view kernel_path) {
  return {"GRUB", "BOOT_IMAGE=" + std::string(kernel_path) + " ", true, 0};
}

KernelCommandLineLoader uki_loader() { return {"systemd-stub (UKI .cmdline)", "", false, 0}; }

KernelCommandLineLoader ipxe_efi_loader(std::string_view image_name) {
  return {"iPXE (UEFI)", std::string(image_name) + " ", false, 0};
}

KernelCommandLineLoader ipxe_bios_loader() { return {"iPXE (BIOS)", "", false, 1}; }

namespace {

std::size_t written_bytes(const std::string& arg, const KernelCommandLineLoader& loader) {
  if (!loader.grub_escapes) return arg.size();
  std::size_t n = arg.size();
  for (char c : arg) {
    if (c == '\\' || c == '\'' || c == '"') ++n;
  }
  if (arg.find(' ') != std::string::npos) n += 2;
  return n;
}

std::string with_thousands(std::size_t value) {
  std::string digits = std::to_string(value);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

std::size_t kernel_command_line_bytes(const std::vector<std::string>& args, const KernelCommandLineLoader& loader) {
  std::size_t total = loader.prefix.size();
  for (std::size_t i = 0; i < args.size(); ++i) total += written_bytes(args[i], loader) + (i > 0 ? 1 : 0);
  return total;
}

std::optional<std::string> check_kernel_command_line(std::string_view subject, const std::vector<std::string>& args,
                                                     const KernelCommandLineLoader& loader,
                                                     const KernelCommandLineLimit& limit, std::string_view kernel_where,
                                                     std::string_view remedy) {
  std::size_t keeps = limit.max_bytes > loader.reserve ? limit.max_bytes - loader.reserve : 0;
  std::size_t total = kernel_command_line_bytes(args, loader);
  if (total <= keeps) return std::nullopt;
  // The first argument that does not end within the limit: it and all after it are lost (GRUB drops
  // them whole; the kernel cuts inside the first one).
  std::string lost;
  std::size_t end = loader.prefix.size();
  for (std::size_t i = 0; i < args.size(); ++i) {
    end += written_bytes(args[i], loader) + (i > 0 ? 1 : 0);
    if (end > keeps) {
      lost = args[i].size() > 60 ? args[i].substr(0, 57) + "..." : args[i];
      if (i + 1 < args.size()) lost = "'" + lost + "' and the " + std::to_string(args.size() - i - 1) + " argument(s) after it";
      else lost = "'" + lost + "'";
      break;
    }
  }
  std::string how = loader.prefix.empty() ? "through " + loader.name
                                          : "with " + loader.name + "'s prefix '" + loader.prefix + "'";
  std::string kept = loader.reserve > 0 ? " (" + loader.name + " keeps " + std::to_string(loader.reserve) + " fewer)" : "";
  return std::string(subject) + " is " + with_thousands(total) + " bytes " + how + "; the kernel in " + std::string(kernel_where) +
         " keeps at most " + with_thousands(limit.max_bytes) + " (" + limit.basis + ")" + kept + ": " +
         with_thousands(total - keeps) + " bytes too many, " + lost + " would be lost (" + std::string(remedy) + ")";
}

}  // namespace aggrik8s::builder
