// What each kind of boot client is offered: one table row per client, from the bytes it sends.
#include "netboot/service/dhcp_boot_decision.hpp"

#include <catch2/catch.hpp>

#include "core/config_node.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;

namespace {

NodeInventory inventory(const std::string& unknown_action) {
  Diagnostics diagnostics;
  std::string yaml = R"(profiles:
  pi: {rpi_image: {image: pi.img}}
  deb: {kernel: {kernel: vmlinuz}}
nodes:
  - {name: pi5, match: {serial: "9ffefdef"}, profile: pi}
  - {name: pc1, match: {mac: "52:54:00:00:00:01"}, profile: deb}
unknown_nodes: {action: )" + unknown_action + R"(, profile: deb}
)";
  ConfigNode tree = load_yaml_string(yaml, "nodes.yaml", diagnostics);
  auto result = parse_node_inventory(tree, diagnostics, /*check_files=*/false);
  REQUIRE_FALSE(diagnostics.has_errors());
  return result;
}

DhcpPacket client(const std::string& mac, std::optional<std::uint16_t> arch, std::string vendor = "") {
  DhcpPacket packet;
  auto bytes = *normalize_mac_any(mac);
  for (std::size_t i = 0; i < 6; ++i) {
    packet.chaddr[i] = static_cast<std::uint8_t>(std::stoi(bytes.substr(i * 3, 2), nullptr, 16));
  }
  packet.set(dhcp_option::message_type, std::vector<std::uint8_t>{1});
  if (arch) packet.set(dhcp_option::client_arch, std::vector<std::uint8_t>{static_cast<std::uint8_t>(*arch >> 8), static_cast<std::uint8_t>(*arch)});
  if (!vendor.empty()) packet.set(dhcp_option::vendor_class, vendor);
  return packet;
}

std::vector<std::uint8_t> pi5_option97() {
  std::vector<std::uint8_t> data = {'R', 'P', 'i', '5', 0, 0xd0, 0x40, 0x17, 0x3a, 0xdd, 0x01, 0x02, 0x9f, 0xfe, 0xfd, 0xef};
  return data;
}

DhcpBootSettings settings() {
  DhcpBootSettings s;
  s.tftp_server = *parse_ipv4("10.98.0.1");
  s.http_base_url = "http://10.98.0.1:8080";
  return s;
}

}  // namespace

TEST_CASE("dhcp boot decision: table of client kinds", "[dhcp]") {
  auto known = inventory("default");
  struct Row {
    const char* what;
    DhcpPacket packet;
    DhcpClientKind kind;
    std::string file;
    std::optional<std::string> vendor_class;
  };
  DhcpPacket ipxe = client("52:54:00:00:00:01", 7, "PXEClient:Arch:00007:UNDI:003016");
  ipxe.set(dhcp_option::user_class, "iPXE");
  DhcpPacket ipxe175 = client("52:54:00:00:00:01", 0, "PXEClient:Arch:00000:UNDI:002001");
  ipxe175.set(dhcp_option::ipxe_encapsulated, std::vector<std::uint8_t>{1, 1, 1});
  std::vector<Row> rows = {
      {"BIOS PXE ROM", client("52:54:00:00:00:01", 0, "PXEClient:Arch:00000:UNDI:002001"), DhcpClientKind::bios,
       "undionly.kpxe", std::nullopt},
      {"x64 UEFI", client("52:54:00:00:00:01", 7, "PXEClient:Arch:00007:UNDI:003016"), DhcpClientKind::uefi_x64,
       "ipxe.efi", std::nullopt},
      {"EBC (x64 firmware)", client("52:54:00:00:00:01", 9, "PXEClient:Arch:00009:UNDI:003016"),
       DhcpClientKind::uefi_x64, "ipxe.efi", std::nullopt},
      {"arm64 UEFI", client("52:54:00:00:00:01", 11, "PXEClient:Arch:00011:UNDI:003000"), DhcpClientKind::uefi_arm64,
       "ipxe-arm64.efi", std::nullopt},
      {"iPXE by user class", ipxe, DhcpClientKind::ipxe, "http://10.98.0.1:8080/boot.ipxe", std::nullopt},
      {"iPXE by option 175", ipxe175, DhcpClientKind::ipxe, "http://10.98.0.1:8080/boot.ipxe", std::nullopt},
      {"x64 UEFI HTTP", client("52:54:00:00:00:01", 16, "HTTPClient:Arch:00016:UNDI:003000"), DhcpClientKind::uefi_http,
       "http://10.98.0.1:8080/files/snponly.efi", "HTTPClient"},
      {"x86 UEFI HTTP", client("52:54:00:00:00:01", 15, "HTTPClient:Arch:00015:UNDI:003000"), DhcpClientKind::uefi_http,
       "http://10.98.0.1:8080/files/snponly.efi", "HTTPClient"},
      {"arm64 UEFI HTTP", client("52:54:00:00:00:01", 19, "HTTPClient:Arch:00019:UNDI:003000"),
       DhcpClientKind::uefi_http, "http://10.98.0.1:8080/files/ipxe-arm64.efi", "HTTPClient"},
      {"U-Boot arm64", client("52:54:00:00:00:01", 22, "PXEClient:Arch:00022:UNDI:003000"), DhcpClientKind::uboot,
       "ipxe-arm64.efi", std::nullopt},
      {"U-Boot arm32", client("52:54:00:00:00:01", 21), DhcpClientKind::uboot, "ipxe-arm32.efi", std::nullopt},
  };
  for (const auto& row : rows) {
    INFO(row.what);
    auto answer = decide_dhcp_boot(row.packet, known, settings());
    CHECK(answer.kind == row.kind);
    CHECK(answer.offer);
    CHECK(answer.node == "pc1");
    CHECK(answer.file == row.file);
    CHECK(answer.bootfile_option == row.file);
    CHECK(answer.vendor_class == row.vendor_class);
    CHECK(answer.siaddr == *parse_ipv4("10.98.0.1"));
  }
}

TEST_CASE("dhcp boot decision: the UEFI HTTP boot file is its own setting, apart from UEFI PXE's", "[dhcp]") {
  // http.root without snponly.efi: the service hands HTTP-boot clients ipxe.efi; PXE clients keep
  // theirs whatever the HTTP one is.
  auto known = inventory("default");
  DhcpBootSettings fallback = settings();
  fallback.uefi_http_x64_file = "ipxe.efi";
  auto http = decide_dhcp_boot(client("52:54:00:00:00:01", 16, "HTTPClient:Arch:00016:UNDI:003000"), known, fallback);
  CHECK(http.file == "http://10.98.0.1:8080/files/ipxe.efi");
  DhcpBootSettings other = settings();
  other.uefi_x64_file = "custom-ipxe.efi";
  auto pxe = decide_dhcp_boot(client("52:54:00:00:00:01", 7, "PXEClient:Arch:00007:UNDI:003016"), known, other);
  CHECK(pxe.file == "custom-ipxe.efi");
  http = decide_dhcp_boot(client("52:54:00:00:00:01", 16, "HTTPClient:Arch:00016:UNDI:003000"), known, other);
  CHECK(http.file == "http://10.98.0.1:8080/files/snponly.efi");
}

TEST_CASE("dhcp boot decision: a BIOS client gets sub-option 6 = 8 only from a proxy", "[dhcp]") {
  auto s = settings();
  auto packet = client("52:54:00:00:00:01", 0, "PXEClient:Arch:00000:UNDI:002001");
  CHECK_FALSE(decide_dhcp_boot(packet, inventory("default"), s).vendor_options);
  s.proxy = true;
  CHECK(decide_dhcp_boot(packet, inventory("default"), s).vendor_options == std::vector<std::uint8_t>{6, 1, 8, 255});
}

TEST_CASE("dhcp boot decision: option 60 PXEClient only in proxy offers (EDK2 reads it as BINL otherwise)", "[dhcp]") {
  auto s = settings();
  auto uefi = client("52:54:00:00:00:01", 7, "PXEClient:Arch:00007:UNDI:003010");
  CHECK_FALSE(decide_dhcp_boot(uefi, inventory("default"), s).vendor_class);
  s.proxy = true;
  CHECK(decide_dhcp_boot(uefi, inventory("default"), s).vendor_class == "PXEClient");
}

TEST_CASE("dhcp boot decision: a Raspberry Pi 5 gets option 43, siaddr and option 66, matched by serial", "[dhcp]") {
  auto packet = client("2c:cf:67:01:02:03", 0, "PXEClient:Arch:00000:UNDI:002001");
  packet.set(dhcp_option::client_uuid, pi5_option97());
  auto answer = decide_dhcp_boot(packet, inventory("ignore"), settings());
  CHECK(answer.kind == DhcpClientKind::raspberry_pi);
  REQUIRE(answer.offer);
  CHECK(answer.node == "pi5");
  CHECK(answer.vendor_options == raspberry_pi_boot_option());
  CHECK(answer.siaddr == *parse_ipv4("10.98.0.1"));
  CHECK(answer.tftp_server_option == "10.98.0.1");
  CHECK(answer.client_uuid == pi5_option97());  // echoed
  CHECK(answer.file.empty());
  CHECK(dhcp_node_facts(packet).serial == "9ffefdef");
}

TEST_CASE("dhcp boot decision: a Pi without option 97 is told apart from a PC by vendor class + OUI", "[dhcp]") {
  auto pi = client("d8:3a:dd:01:02:03", 0, "PXEClient:Arch:00000:UNDI:002001");
  CHECK(classify_dhcp_client(pi) == DhcpClientKind::raspberry_pi);
  auto pc = client("52:54:00:01:02:03", 0, "PXEClient:Arch:00000:UNDI:002001");
  CHECK(classify_dhcp_client(pc) == DhcpClientKind::bios);
  std::vector<std::uint8_t> typed = {0};
  auto raw = pi5_option97();
  typed.insert(typed.end(), raw.begin(), raw.end());
  CHECK(parse_raspberry_pi_client_id(typed)->model == "RPi5");
}

TEST_CASE("dhcp boot decision: unknown nodes, plain clients and odd architectures get no boot offer", "[dhcp]") {
  auto ignore = inventory("ignore");
  auto stranger = decide_dhcp_boot(client("52:54:00:99:99:99", 0, "PXEClient:Arch:00000:UNDI:002001"), ignore, settings());
  CHECK_FALSE(stranger.offer);
  CHECK(stranger.reason == "unknown machine and unknown_nodes: ignore");
  CHECK(decide_dhcp_boot(client("52:54:00:99:99:99", 0, "PXEClient:Arch:00000:UNDI:002001"), inventory("default"), settings()).offer);
  auto plain = decide_dhcp_boot(client("52:54:00:00:00:01", std::nullopt, "udhcp 1.35.0"), ignore, settings());
  CHECK(plain.kind == DhcpClientKind::not_booting);
  CHECK_FALSE(plain.offer);
  auto odd = decide_dhcp_boot(client("52:54:00:00:00:01", 41, "PXEClient:Arch:00041"), ignore, settings());
  CHECK(odd.kind == DhcpClientKind::unsupported);
  CHECK_FALSE(odd.offer);
  auto http_without_class = decide_dhcp_boot(client("52:54:00:00:00:01", 16), ignore, settings());
  CHECK_FALSE(http_without_class.offer);
}

TEST_CASE("dhcp boot decision: a UUID from option 97 type 0 is a node fact", "[dhcp]") {
  auto packet = client("52:54:00:00:00:01", 7, "PXEClient");
  std::vector<std::uint8_t> uuid = {0, 0x4c, 0x4c, 0x45, 0x44, 0, 0, 0x10, 0, 0x80, 0, 0, 0, 0, 0, 0, 1};
  packet.set(dhcp_option::client_uuid, uuid);
  CHECK(dhcp_node_facts(packet).uuid == "4c4c4544-0000-1000-8000-000000000001");
}

TEST_CASE("dhcp boot decision: a boot URL longer than the 128-byte file field is in option 67 only, not cut", "[dhcp]") {
  // A long http.base_url (a path prefix behind a proxy): the `file` field cut it at 128 bytes, a name
  // that exists nowhere; left empty, the client takes option 67, which holds it whole.
  auto s = settings();
  s.http_base_url = "http://10.98.0.1:8080/" + std::string(120, 'p');
  auto ipxe = client("52:54:00:00:00:01", 7, "PXEClient:Arch:00007:UNDI:003016");
  ipxe.set(dhcp_option::user_class, "iPXE");
  auto answer = decide_dhcp_boot(ipxe, inventory("default"), s);
  REQUIRE(answer.offer);
  CHECK(answer.bootfile_option == s.http_base_url + "/boot.ipxe");
  CHECK(answer.file.empty());
  // Exactly 128 bytes still fits (the field needs no NUL when full).
  s.http_base_url = "http://10.98.0.1:8080/" + std::string(128 - 32, 'p');
  answer = decide_dhcp_boot(ipxe, inventory("default"), s);
  REQUIRE(answer.bootfile_option->size() == 128);
  CHECK(answer.file == *answer.bootfile_option);
}
