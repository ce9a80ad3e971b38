#include "inspect/talos_iso_inspector.hpp"

#include <algorithm>
#include <system_error>

#include "builder/talos/iso_variant.hpp"
#include "builder/talos/read_only_file_mapping.hpp"
#include "builder/talos/talos_boot_files.hpp"
#include "builder/talos/talos_build_checks.hpp"
#include "builder/talos/talos_extension_image.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "builder/talos_kernel_args.hpp"
#include "builder/talos/uki_boot_files.hpp"
#include "core/error.hpp"
#include "core/kernel_command_line.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

bool has(const std::vector<std::string>& files, const std::string& path) {
  return std::find(files.begin(), files.end(), path) != files.end();
}

// A file's size from where the ISO's directory records put it; never its bytes (config.yaml holds the
// cluster's PKI).
std::optional<std::uint64_t> iso_file_size(const ReadOnlyFileMapping& image, const std::string& path) {
  try {
    return iso_file_bytes(image.bytes(), locate_iso_files(image.bytes(), {path}).front()).size();
  } catch (const Error&) {
    return std::nullopt;
  }
}

}  // namespace

bool is_talos_iso_image(const fs::path& image) {
  try {
    std::error_code ec;
    if (!fs::is_regular_file(image, ec)) return false;
    IsoVolumeInfo volume = read_iso_volume_info(image);  // throws unless there is an ISO 9660 volume
    std::vector<std::string> files = list_iso_files(image);
    return (has(files, "boot/vmlinuz") && has(files, "boot/grub/grub.cfg")) ||
           (volume.volume_id == "metal-iso" && has(files, "config.yaml"));
  } catch (const Error&) {
    return false;
  }
}

TalosIsoInspection inspect_talos_iso(const fs::path& image) {
  TalosIsoInspection report;
  report.path = image;
  report.image_bytes = fs::file_size(image);
  report.volume_id = read_iso_volume_info(image).volume_id;
  if (auto version = TalosVersion::from_volume_id(report.volume_id)) report.talos_version = version->str();
  std::vector<std::string> files = list_iso_files(image);
  // A node's ISO is the metal-iso volume: its version is in the UKI's name, as Talos' imager writes it
  // (EFI/Linux/Talos-v1.12.0.efi).
  for (const auto& file : files) {
    if (report.talos_version || !file.starts_with("EFI/Linux/Talos-") || !file.ends_with(".efi")) continue;
    std::string name = file.substr(16, file.size() - 16 - 4);
    if (auto version = TalosVersion::parse(name)) report.talos_version = version->str() + " (from /" + file + ")";
  }

  ReadOnlyFileMapping mapped(image, ReadOnlyFileMapping::Populate::on_demand);
  if (has(files, "config.yaml")) report.config_yaml_bytes = iso_file_size(mapped, "config.yaml").value_or(0);
  std::string archive = std::string(talos_extension_initrd_iso_path).substr(1);
  if (has(files, archive)) report.embedded_config_bytes = iso_file_size(mapped, archive).value_or(0);

  report.config_only = !has(files, "boot/vmlinuz");
  if (report.config_only) return report;

  // Every boot entry with the kernel it starts, checked as `build` checks what it writes.
  std::vector<std::string> all_lines;
  try {
    std::string grub_cfg = read_iso_text_file(image, "boot/grub/grub.cfg");
    KernelFile grub_kernel = read_talos_iso_kernel(image, "/boot/vmlinuz");
    EditedGrubConfig grub = edit_grub_config(grub_cfg, {});
    for (std::size_t i = 0; i < grub.command_lines.size(); ++i) {
      std::string where = "GRUB menu entry " + std::to_string(i + 1);
      report.entries.push_back({where, grub.command_lines[i], static_cast<std::uint32_t>(grub_kernel.limit.max_bytes),
                                "/boot/vmlinuz"});
      if (auto problem = check_kernel_command_line(where, split_kernel_args(grub.command_lines[i]), grub_loader("/boot/vmlinuz"),
                                                   grub_kernel.limit, "/boot/vmlinuz", "the kernel would not see them")) {
        report.warnings.push_back(*problem);
      }
      all_lines.push_back(grub.command_lines[i]);
    }
  } catch (const Error& e) {
    report.warnings.push_back(std::string("GRUB (/boot/grub/grub.cfg, /boot/vmlinuz): ") + e.what());
  }
  try {
    TalosIsoUkis ukis = TalosIsoUkis::read(image, files);
    for (const auto& line : ukis.command_lines_and_limits_with({})) {
      const std::string& where = line.uki;
      report.entries.push_back({where, line.text, static_cast<std::uint32_t>(line.limit.max_bytes), "the UKI's .linux"});
      if (auto problem = check_kernel_command_line(where + " (UKI .cmdline)", split_kernel_args(line.text), uki_loader(),
                                                   line.limit, where + " (.linux)", "the kernel would not see them")) {
        report.warnings.push_back(*problem);
      }
      all_lines.push_back(line.text);
    }
  } catch (const Error& e) {
    report.warnings.push_back(std::string("UKI: ") + e.what());
  }

  // talos.config=metal-iso makes Talos look for config.yaml on a volume labelled metal-iso: this one
  // (a node's ISO) or a config ISO attached beside it (the shared boot ISO).
  bool metal_iso = std::any_of(all_lines.begin(), all_lines.end(), [](const std::string& line) {
    auto args = split_kernel_args(line);
    return std::find(args.begin(), args.end(), "talos.config=metal-iso") != args.end();
  });
  if (metal_iso && !report.config_yaml_bytes) {
    report.warnings.push_back("the command line has talos.config=metal-iso but this ISO has no /config.yaml: the node needs a "
                              "config ISO (volume label metal-iso) attached beside it");
  }
  return report;
}

}  // namespace aggrik8s::builder
