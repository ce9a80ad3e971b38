#include "core/kernel_command_line.hpp"

namespace aggrik8s {

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

KernelFile assumed_kernel(const std::string& where, std::string basis) { return {where, {2047, std::move(basis)}}; }

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

}  // namespace aggrik8s
