#pragma once
// What a booting machine is told in a DHCP offer (the DhcpBootAnswer of netboot/dhcp/dhcp_boot_policy):
// a pure function of its request and the inventory, shared by proxy and full mode. No sockets;
// table-tested in tests/unit/netboot/service/dhcp_boot_decision_test.cpp.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "netboot/dhcp/dhcp_boot_policy.hpp"
#include "netboot/dhcp/dhcp_packet.hpp"
#include "netboot/service/node_inventory.hpp"

namespace aggrik8s::netboot {

struct DhcpBootSettings {
  std::uint32_t tftp_server = 0;  // siaddr, and option 66 for the Pi
  std::string http_base_url;      // "http://10.0.0.1:8080", no trailing slash
  std::string bios_file = "undionly.kpxe";
  std::string uefi_x64_file = "ipxe.efi";
  // What an x64 UEFI HTTP boot client gets under <http_base_url>/files/. snponly.efi drives the NIC
  // through the firmware's own network driver (SNP), which HTTP boot has just used; ipxe.efi brings
  // its own drivers and must first take the NIC from the firmware's network stack (docs/netboot.md,
  // "UEFI HTTP boot: snponly.efi"). The service falls back to ipxe.efi when http.root lacks it.
  std::string uefi_http_x64_file = "snponly.efi";
  std::string uefi_arm64_file = "ipxe-arm64.efi";   // arm64 iPXE build, not in Debian's ipxe package
  std::string uboot_arm32_file = "ipxe-arm32.efi";  // U-Boot boots EFI binaries with bootefi
  std::string uboot_arm64_file = "ipxe-arm64.efi";
  bool proxy = false;  // proxyDHCP offer: adds option 43 sub-option 6 = 8 for BIOS clients
};

// The Pi's option 97: "RPi4"/"RPi5", board revision (4 bytes), low 4 bytes of the MAC, serial (4
// bytes, read big-endian as the 8 hex digits of its TFTP directory). A leading 0 type byte is skipped.
struct RaspberryPiClientId {
  std::string model;   // "RPi4" / "RPi5"
  std::string serial;  // 8 lowercase hex digits
};
std::optional<RaspberryPiClientId> parse_raspberry_pi_client_id(const std::vector<std::uint8_t>& option97);
bool is_raspberry_pi_mac(const std::string& mac);  // by the OUIs the Pi Foundation uses

// MAC from chaddr, UUID from option 97 (type 0 + 16 bytes), serial from a Pi's option 97.
NodeFacts dhcp_node_facts(const DhcpPacket& request);
DhcpClientKind classify_dhcp_client(const DhcpPacket& request);

DhcpBootAnswer decide_dhcp_boot(const DhcpPacket& request, const NodeInventory& inventory,
                                const DhcpBootSettings& settings);

}  // namespace aggrik8s::netboot
