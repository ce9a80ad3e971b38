#include "netboot/dhcp/dhcp_boot_policy.hpp"

namespace aggrik8s::netboot {

const char* to_string(DhcpClientKind kind) {
  switch (kind) {
    case DhcpClientKind::not_booting: return "not-booting";
    case DhcpClientKind::bios: return "bios";
    case DhcpClientKind::uefi_x64: return "uefi-x64";
    case DhcpClientKind::uefi_arm64: return "uefi-arm64";
    case DhcpClientKind::ipxe: return "ipxe";
    case DhcpClientKind::uefi_http: return "uefi-http";
    case DhcpClientKind::raspberry_pi: return "raspberry-pi";
    case DhcpClientKind::uboot: return "u-boot";
    case DhcpClientKind::unsupported: return "unsupported";
  }
  return "unknown";
}

}  // namespace aggrik8s::netboot
