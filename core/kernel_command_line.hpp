#pragma once
// Kernel command lines as boot loaders hand them on: splitting and joining arguments, what each
// loader adds in front of them, and whether a line fits what the kernel keeps. Pure code, shared by
// the Talos builder (GRUB and UKI lines in ISOs) and the netboot server (iPXE lines).
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s {

std::string join_kernel_args(const std::vector<std::string>& args);
std::vector<std::string> split_kernel_args(std::string_view command_line);

// How many bytes of command line a kernel keeps, without the terminating NUL, and why that many.
struct KernelCommandLineLimit {
  std::size_t max_bytes = 0;
  std::string basis;  // "setup header cmdline_size at 0x238, boot protocol 2.15"
};

// A kernel a command line is meant for: where it is (for messages) and what it keeps.
struct KernelFile {
  std::string where;  // "/cache/metal-amd64.iso:/boot/vmlinuz"
  KernelCommandLineLimit limit;
};
// COMMAND_LINE_SIZE 2048 of x86-64 and arm64 kernels, when the kernel itself cannot be read.
KernelFile assumed_kernel(const std::string& where, std::string basis);

// What a boot loader puts on the kernel's command line besides the arguments, and how it writes them.
// The kernel keeps KernelCommandLineLimit::max_bytes of it (disk/linux_kernel_image.hpp); the rest
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

}  // namespace aggrik8s
