#pragma once
// iPXE scripts, rendered from the inventory (text in, text out). The difference between firmware
// types that matters: under UEFI the kernel is started through its EFI stub, which finds the initrd
// only when the kernel command line names it (`initrd=<name>`); without it the kernel boots with no
// initramfs and panics. BIOS ignores the argument, but it is left out there to keep the command line
// exactly what the profile says.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::netboot {

enum class IpxePlatform { pcbios, efi };
// iPXE's ${platform}: "pcbios" or "efi"; nullopt for anything else.
std::optional<IpxePlatform> parse_ipxe_platform(std::string_view text);

struct IpxeInitrd {
  std::string name;  // as the kernel sees it (initrd=<name>); a plain file name
  std::string url;
};

struct IpxeKernelBoot {
  std::string kernel_url;
  std::vector<IpxeInitrd> initrds;
  std::string arguments;
};

// What follows the kernel's URL on the script's `kernel` line: initrd=<name> for each initrd under UEFI,
// then the arguments. iPXE joins these words with single blanks into the kernel's command line.
std::string ipxe_kernel_arguments(const IpxeKernelBoot& boot, IpxePlatform platform);
std::string render_ipxe_boot_script(const IpxeKernelBoot& boot, IpxePlatform platform);
// Hands control back to the firmware, which tries its next boot device (the local disk). Under BIOS,
// `exit` can leave some ROMs stuck, so the first disk is booted explicitly.
std::string render_ipxe_local_disk_script(IpxePlatform platform);
// The one script every iPXE client is given first (DHCP boot file / embedded script): it asks again
// with what identifies this machine, so the next answer can be per node.
std::string render_ipxe_chain_script(std::string_view base_url);

}  // namespace aggrik8s::netboot
