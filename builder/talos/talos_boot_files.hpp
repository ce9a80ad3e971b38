#pragma once
// The small boot files a Talos output needs, as bytes: the edited GRUB config of a remastered ISO, a
// node's iPXE script, and the newc cpio writer the embedded-config extension archive is made with.
// Pure code.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace aggrik8s::builder {

// Where the `embedded-config` extension puts the machine config in Talos' root filesystem
// (builder/talos/talos_extension_image.hpp packs it; docs/proxmox.md says what real Talos reads).
inline constexpr const char* talos_embedded_config_path = "usr/local/etc/talos/config.yaml";

struct GrubConfigEdit {
  std::vector<std::string> add_args;           // appended to every `linux` line (not already present)
  std::vector<std::string> append_initrds;     // appended to every `initrd` line
};

struct EditedGrubConfig {
  std::string text;
  std::vector<std::string> command_lines;  // each `linux` line's arguments after the edit
};

// Applies `edit` to every menu entry of a Talos grub.cfg. Throws Error when there is no
// `linux /boot/vmlinuz` line (not a Talos ISO). Arguments GRUB would expand ($) or split are quoted.
EditedGrubConfig edit_grub_config(const std::string& grub_cfg, const GrubConfigEdit& edit);

struct IpxeScriptInput {
  std::string node;
  std::vector<std::string> kernel_args;  // the whole command line except initrd=
  std::string kernel_file = "vmlinuz";
  std::string initramfs_file = "initramfs.xz";
};
// "#!ipxe" script loading kernel and initramfs relative to the script's own URL.
std::string ipxe_script(const IpxeScriptInput& input);

// Talos substitutes ${uuid}, ${mac}, ${hostname} in talos.config= URLs; iPXE would expand them first
// and has no escape for "${". Since each node has its own script, the node's values are put in here.
// Throws Error naming the variable when the node lacks it or Talos does not know it for iPXE use
// (${serial}, ...).
std::string substitute_talos_url_variables(const std::string& url, const std::string& node,
                                           const std::optional<std::string>& uuid,
                                           const std::optional<std::string>& mac, const std::string& hostname);

struct CpioFile {
  std::string path;  // without leading '/'; parent directories are added
  std::string content;
  std::uint32_t mode = 0400;
};
// A newc ("070701") archive, root-owned, mtime `mtime`, as the kernel unpacks initramfs segments.
std::string newc_cpio(const std::vector<CpioFile>& files, std::int64_t mtime);

}  // namespace aggrik8s::builder
