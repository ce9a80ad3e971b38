#include "netboot/service/ipxe_script.hpp"

namespace aggrik8s::netboot {

std::optional<IpxePlatform> parse_ipxe_platform(std::string_view text) {
  if (text == "pcbios") return IpxePlatform::pcbios;
  if (text == "efi") return IpxePlatform::efi;
  return std::nullopt;
}

std::string ipxe_kernel_arguments(const IpxeKernelBoot& boot, IpxePlatform platform) {
  std::string arguments;
  auto add = [&](const std::string& text) {
    if (text.empty()) return;
    if (!arguments.empty()) arguments += ' ';
    arguments += text;
  };
  if (platform == IpxePlatform::efi) {
    for (const auto& initrd : boot.initrds) add("initrd=" + initrd.name);
  }
  add(boot.arguments);
  return arguments;
}

std::string render_ipxe_boot_script(const IpxeKernelBoot& boot, IpxePlatform platform) {
  std::string script = "#!ipxe\n";
  std::string kernel_line = "kernel " + boot.kernel_url;
  std::string arguments = ipxe_kernel_arguments(boot, platform);
  if (!arguments.empty()) kernel_line += " " + arguments;
  script += kernel_line + " || goto failed\n";
  for (const auto& initrd : boot.initrds) {
    script += "initrd --name " + initrd.name + " " + initrd.url + " || goto failed\n";
  }
  script += "boot || goto failed\n";
  // A failed download falls back to the firmware instead of leaving the node at an iPXE prompt.
  script += ":failed\necho Boot failed; returning to the firmware in 10 s\nsleep 10\nexit 1\n";
  return script;
}

std::string render_ipxe_local_disk_script(IpxePlatform platform) {
  if (platform == IpxePlatform::pcbios) {
    return "#!ipxe\necho Booting from the local disk\nsanboot --no-describe --drive 0x80 || exit 0\n";
  }
  return "#!ipxe\necho Booting from the local disk\nexit 0\n";
}

std::string render_ipxe_chain_script(std::string_view base_url) {
  // ${net0/mac:hexhyp} and ${uuid} are expanded by iPXE on the node; ${platform} says pcbios or efi.
  return "#!ipxe\nchain " + std::string(base_url) +
         "/ipxe?mac=${net0/mac:hexhyp}&uuid=${uuid}&platform=${platform}&arch=${buildarch} || exit 1\n";
}

}  // namespace aggrik8s::netboot
