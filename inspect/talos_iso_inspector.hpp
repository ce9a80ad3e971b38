#pragma once
// `aggrik8s-image inspect node.iso`: a Talos ISO (the input Talos' imager writes, or one `build`
// remastered for a node) as a Talos user checks it: its version, the kernel command line of every
// boot entry (GRUB's menu entries and the UKIs systemd-boot starts, in the ISO tree and in its EFI
// partition) against the limit of the kernel that receives it, and whether a machine config travels
// with it (config.yaml on the metal-iso volume, the embedded-config archive). The config's bytes are
// never read into the report: it carries the cluster's PKI. Read with the same code `build` edits
// the ISO with; nothing is changed.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aggrik8s::builder {

struct TalosIsoBootEntry {
  std::string where;                       // "GRUB menu entry 1", "/EFI/Linux/x.efi", "EFI partition 2:/EFI/Linux/x.efi"
  std::string command_line;                // the arguments, as the entry gives them to the kernel
  std::uint32_t kernel_limit = 0;          // bytes the receiving kernel keeps (its cmdline_size)
  std::string kernel;                      // which kernel: "/boot/vmlinuz", "/EFI/Linux/x.efi (.linux)"
};

struct TalosIsoInspection {
  std::filesystem::path path;
  bool config_only = false;  // a <node>-config.iso: the metal-iso volume with config.yaml and no boot files
  std::uint64_t image_bytes = 0;
  std::string volume_id;
  std::optional<std::string> talos_version;  // from the volume id ("TALOS_V1_12_0" -> v1.12.0)
  std::vector<TalosIsoBootEntry> entries;
  std::optional<std::uint64_t> config_yaml_bytes;     // /config.yaml (talos.config=metal-iso reads it)
  std::optional<std::uint64_t> embedded_config_bytes;  // /boot/embedded-config.cpio.zst (Talos >= 1.12)
  std::vector<std::string> warnings;  // a command line the kernel would cut, metal-iso without a config
};

// True when `image` holds an ISO 9660 volume with /boot/vmlinuz and /boot/grub/grub.cfg, the files
// every Talos ISO boots from, or is a config ISO (volume metal-iso with /config.yaml). False (never an
// error) for anything else.
bool is_talos_iso_image(const std::filesystem::path& image);

// Throws Error naming the file when the ISO cannot be read; what is wrong inside it is a warning.
TalosIsoInspection inspect_talos_iso(const std::filesystem::path& image);

}  // namespace aggrik8s::builder
