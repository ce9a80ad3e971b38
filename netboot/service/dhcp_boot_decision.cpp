#include "netboot/service/dhcp_boot_decision.hpp"

#include <algorithm>
#include <array>

namespace aggrik8s::netboot {

namespace {
std::string hex(const std::uint8_t* bytes, std::size_t count) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    out.push_back(digits[bytes[i] >> 4]);
    out.push_back(digits[bytes[i] & 15]);
  }
  return out;
}
}  // namespace

std::optional<RaspberryPiClientId> parse_raspberry_pi_client_id(const std::vector<std::uint8_t>& option97) {
  std::size_t at = 0;
  if (option97.size() == 17 && option97[0] == 0) at = 1;
  if (option97.size() < at + 16) return std::nullopt;
  std::string model(option97.begin() + static_cast<std::ptrdiff_t>(at), option97.begin() + static_cast<std::ptrdiff_t>(at + 4));
  if (model != "RPi4" && model != "RPi5") return std::nullopt;
  return RaspberryPiClientId{model, hex(option97.data() + at + 12, 4)};
}

bool is_raspberry_pi_mac(const std::string& mac) {
  static constexpr std::array<const char*, 6> ouis = {"b8:27:eb", "dc:a6:32", "e4:5f:01", "28:cd:c1", "d8:3a:dd", "2c:cf:67"};
  return std::any_of(ouis.begin(), ouis.end(), [&](const char* oui) { return mac.starts_with(oui); });
}

NodeFacts dhcp_node_facts(const DhcpPacket& request) {
  NodeFacts facts;
  if (request.htype == 1 && request.hlen == 6) facts.mac = request.hardware_address();
  if (auto uuid = request.client_uuid()) {
    if (auto pi = parse_raspberry_pi_client_id(*uuid)) {
      facts.serial = pi->serial;
    } else if (uuid->size() == 17 && (*uuid)[0] == 0) {
      std::string text = hex(uuid->data() + 1, 16);
      for (std::size_t dash : {20u, 16u, 12u, 8u}) text.insert(dash, "-");
      facts.uuid = text;
    }
  }
  return facts;
}

DhcpClientKind classify_dhcp_client(const DhcpPacket& request) {
  std::string vendor = request.vendor_class().value_or("");
  auto arches = request.client_architectures();
  bool pxe = vendor.starts_with("PXEClient");
  bool http = vendor.starts_with("HTTPClient");
  if (request.is_ipxe()) return DhcpClientKind::ipxe;
  // The Pi sends arch 0 like a BIOS PC: its option 97 (or vendor class + OUI) tells them apart.
  if (auto uuid = request.client_uuid(); uuid && parse_raspberry_pi_client_id(*uuid)) return DhcpClientKind::raspberry_pi;
  if (vendor == "PXEClient:Arch:00000:UNDI:002001" && is_raspberry_pi_mac(request.hardware_address())) {
    return DhcpClientKind::raspberry_pi;
  }
  if (!pxe && !http && arches.empty()) return DhcpClientKind::not_booting;
  if (arches.empty()) return DhcpClientKind::unsupported;
  switch (arches.front()) {
    case 0: return DhcpClientKind::bios;
    case 7:
    case 9: return DhcpClientKind::uefi_x64;
    case 11: return DhcpClientKind::uefi_arm64;
    case 15:
    case 16:
    case 19: return http ? DhcpClientKind::uefi_http : DhcpClientKind::unsupported;
    case 21:
    case 22: return DhcpClientKind::uboot;
    default: return DhcpClientKind::unsupported;
  }
}

DhcpBootAnswer decide_dhcp_boot(const DhcpPacket& request, const NodeInventory& inventory,
                                const DhcpBootSettings& settings) {
  DhcpBootAnswer answer;
  answer.kind = classify_dhcp_client(request);
  if (answer.kind == DhcpClientKind::not_booting) {
    answer.reason = "not a boot client";
    return answer;
  }
  if (answer.kind == DhcpClientKind::unsupported) {
    auto arches = request.client_architectures();
    answer.reason = "boot client architecture " + (arches.empty() ? std::string("(none)") : std::to_string(arches.front())) +
                    " is not supported";
    return answer;
  }
  const InventoryNode* node = inventory.match(dhcp_node_facts(request));
  if (node != nullptr) {
    answer.node = node->name;
  } else if (inventory.unknown_node_profile() == nullptr) {
    answer.reason = "unknown machine and unknown_nodes: ignore";
    return answer;
  }
  answer.offer = true;
  answer.siaddr = settings.tftp_server;
  answer.client_uuid = request.client_uuid();
  // Option 60 "PXEClient" only where it is needed: a proxy offer is recognised by it, and the Pi wants
  // it with option 43. In a full-mode offer it would make EDK2 treat the offer as a BINL one and wait
  // for an answer on port 4011 instead of loading `file` (seen with OVMF).
  if (settings.proxy || answer.kind == DhcpClientKind::raspberry_pi) answer.vendor_class = "PXEClient";
  // The name goes in option 67 whole (split per RFC 3396 past 255 bytes) and in the 128-byte `file`
  // field only when it fits there: a cut URL (a long http.base_url) is a wrong file, while a client
  // finding `file` empty reads option 67 (iPXE and edk2 prefer option 67 anyway).
  auto tftp_file = [&](const std::string& name) {
    answer.file = name.size() <= dhcp_file_field_size ? name : std::string();
    answer.bootfile_option = name;
  };
  switch (answer.kind) {
    case DhcpClientKind::bios:
      tftp_file(settings.bios_file);
      if (settings.proxy) answer.vendor_options = pxe_bios_skip_discovery_option();
      break;
    case DhcpClientKind::uefi_x64: tftp_file(settings.uefi_x64_file); break;
    case DhcpClientKind::uefi_arm64: tftp_file(settings.uefi_arm64_file); break;
    case DhcpClientKind::ipxe:
      // An HTTP URL, never an iPXE binary again: that is what breaks the chainload loop.
      tftp_file(settings.http_base_url + "/boot.ipxe");
      answer.vendor_class.reset();
      break;
    case DhcpClientKind::uefi_http: {
      const std::string& binary =
          request.client_architectures().front() == 19 ? settings.uefi_arm64_file : settings.uefi_http_x64_file;
      tftp_file(settings.http_base_url + "/files/" + binary);
      answer.vendor_class = "HTTPClient";  // edk2 ignores an HTTP boot offer without it
      break;
    }
    case DhcpClientKind::raspberry_pi:
      answer.vendor_options = raspberry_pi_boot_option();
      answer.tftp_server_option = ipv4_to_string(settings.tftp_server);
      break;
    case DhcpClientKind::uboot:
      // U-Boot in proxy mode reads only the BOOTP header: both fields carry the name.
      tftp_file(request.client_architectures().front() == 21 ? settings.uboot_arm32_file : settings.uboot_arm64_file);
      answer.vendor_class.reset();
      break;
    case DhcpClientKind::not_booting:
    case DhcpClientKind::unsupported: break;
  }
  answer.reason = std::string(to_string(answer.kind)) + (node != nullptr ? " node " + node->name : " unknown machine");
  return answer;
}

}  // namespace aggrik8s::netboot
