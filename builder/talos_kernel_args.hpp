#pragma once
// Talos kernel command lines: the version-dependent defaults Talos' imager writes, how a node's own
// arguments are added, and whether a line fits what the kernel keeps once the boot loader has added
// its own bytes. Pure code (see ../shared/reference/talos.md).
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "builder/linux_kernel_image.hpp"

namespace aggrik8s::builder {

struct TalosVersion {
  int major = 0;
  int minor = 0;
  int patch = 0;
  // "v1.12.0", "1.12.0", "v1.12.0-beta.1" (the pre-release part is ignored); nullopt otherwise.
  static std::optional<TalosVersion> parse(std::string_view text);
  // From a Talos ISO's volume id, "TALOS_V1_12_0"; nullopt when it does not have that form.
  static std::optional<TalosVersion> from_volume_id(std::string_view volume_id);
  bool at_least(int want_major, int want_minor) const {
    return major > want_major || (major == want_major && minor >= want_minor);
  }
  std::string str() const;  // "v1.12.0"
};

// What Talos' imager puts on a metal image's command line for `version` on `arch` (amd64 | arm64).
std::vector<std::string> talos_default_kernel_args(const TalosVersion& version, std::string_view arch = "amd64");

// `base` followed by each of `extra` that is not already in it, in order.
std::vector<std::string> append_kernel_args(std::vector<std::string> base, const std::vector<std::string>& extra);
std::string join_kernel_args(const std::vector<std::string>& args);
std::vector<std::string> split_kernel_args(std::string_view command_line);

// What a boot loader puts on the kernel's command line besides the arguments, and how it writes them.
// The kernel keeps KernelCommandLineLimit::max_bytes of it (builder/linux_kernel_image.hpp); the rest
// is lost without a word: a line's last arguments (talos.config=...) disappear.
struct KernelCommandLineLoader {
  std::string name;    // for messages: "GRUB", "systemd-stub (UKI)", "iPXE (UEFI)", "iPXE (BIOS)"
  std::string prefix;  // bytes in front of the arguments
  // GRUB (2.06) writes \ ' " with a backslash and an argument with a blank inside "..." (lib/cmdline.c).
  bool grub_escapes = false;
  // Bytes the loader keeps below the kernel's limit (iPXE's BIOS bzImage loader copies at most
  // cmdline_size bytes *including* the NUL: one fewer than the kernel would keep).
  std::size_t reserve = 0;
};

// GRUB's `linux KERNEL ARGS` passes "BOOT_IMAGE=KERNEL ARGS" (on x86 and on arm64) and drops, whole,
// each argument from the first that does not fit.
KernelCommandLineLoader grub_loader(std::string_view kernel_path);
// A UKI's .cmdline, handed on by systemd-stub as it is; the x86 and arm64 EFI stubs of the kernel
// cut it at COMMAND_LINE_SIZE (as cmdline_size says on x86).
KernelCommandLineLoader uki_loader();
// ipxe.efi starts the kernel as an EFI image with load options "<image name> <args>"
// (src/image/efi_image.c, efi_image_cmdline): the name (the file name: "vmlinuz") comes first.
KernelCommandLineLoader ipxe_efi_loader(std::string_view image_name);
// undionly.kpxe/ipxe.pxe load a bzImage themselves: the arguments alone, cut at cmdline_size - 1.
KernelCommandLineLoader ipxe_bios_loader();

// The bytes the kernel is handed for `args` through `loader`, without the NUL.
std::size_t kernel_command_line_bytes(const std::vector<std::string>& args, const KernelCommandLineLoader& loader);

// nullopt if the line fits; otherwise "<subject> is N bytes with <loader>'s prefix '...'; the kernel in
// <kernel_where> keeps at most M (<basis>): K bytes too many, '<arg>' and what follows would be lost
// (<remedy>)".
std::optional<std::string> check_kernel_command_line(std::string_view subject, const std::vector<std::string>& args,
                                                     const KernelCommandLineLoader& loader,
                                                     const KernelCommandLineLimit& limit, std::string_view kernel_where,
                                                     std::string_view remedy = "shorten kernel_args");

}  // namespace aggrik8s::builder
