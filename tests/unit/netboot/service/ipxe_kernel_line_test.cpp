// The kernel line of a node's iPXE script (netboot/service/ipxe_kernel_line.hpp): what serve renders for one
// request, and the nodes-file check that the longest line serve can send each node fits its kernel,
// counting iPXE's image name and initrd= under UEFI and its one byte fewer under BIOS.
#include <catch2/catch.hpp>

#include "core/config_node.hpp"
#include "netboot/service/ipxe_kernel_line.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;

namespace {

NodeInventory parse(const std::string& yaml) {
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string(yaml, "/etc/aggrik8s/nodes.yaml", diagnostics);
  NodeInventory inventory = parse_node_inventory(tree, diagnostics, /*check_files=*/false);
  std::string errors;
  for (const auto& d : diagnostics.all()) errors += d.str() + "\n";
  INFO(errors);
  REQUIRE_FALSE(diagnostics.has_errors());
  return inventory;
}

const std::string base_url = "http://10.0.0.1:8080";

std::string nodes_file(const std::string& talos_args) {
  return R"(profiles:
  talos:
    talos: {kernel: assets/vmlinuz-amd64, initramfs: assets/initramfs-amd64.xz, args: ")" + talos_args + R"("}
  debian:
    kernel: {kernel: debian/vmlinuz, initrd: [debian/initrd.gz], args: "boot=live host={node} m={mac}"}
  disk:
    kernel: {kernel: debian/vmlinuz}
    mode: local
  pi: {rpi_image: {image: pi.img}}
nodes:
  - {name: cp1, match: {mac: "52:54:00:12:34:56"}, profile: talos, talos_config: {file: cp1.yaml}}
  - {name: w1, match: {uuid: 4c4c4544-0000-1000-8000-000000000001}, profile: talos, talos_config: {file: w1.yaml}}
  - {name: d1, match: {mac: "52:54:00:00:00:01"}, profile: debian, user_data: {file: d1-user-data}}
  - {name: local1, match: {mac: "52:54:00:00:00:02"}, profile: disk}
  - {name: pi1, match: {serial: 9ffefdef}, profile: pi}
)";
}

std::map<std::filesystem::path, KernelFile> kernels_of(const NodeInventory& inventory, std::size_t max_bytes) {
  std::map<std::filesystem::path, KernelFile> kernels;
  for (const auto& [name, profile] : inventory.profiles) {
    if (const auto* file = profile_kernel_file(profile)) {
      kernels[*file] = {file->string(), {max_bytes, "setup header cmdline_size at 0x238, boot protocol 2.15"}};
    }
  }
  return kernels;
}

std::vector<std::string> errors_of(const NodeInventory& inventory, std::size_t max_bytes) {
  Diagnostics diagnostics;
  check_ipxe_kernel_lines(inventory, base_url, kernels_of(inventory, max_bytes), diagnostics);
  std::vector<std::string> out;
  for (const auto& d : diagnostics.all()) out.push_back(d.str());
  return out;
}

}  // namespace

TEST_CASE("ipxe kernel line: what a request gets, by profile and node", "[netboot][ipxe]") {
  NodeInventory inventory = parse(nodes_file("console=ttyS0 at={base_url} u={uuid}"));
  const auto& talos = inventory.profiles.at("talos");
  NodeFacts cp1_request{"52:54:00:12:34:56", "0a0b0c0d-0000-1000-8000-000000000009", std::nullopt};
  auto cp1 = ipxe_kernel_boot(talos, inventory.find("cp1"), cp1_request, base_url);
  REQUIRE(cp1);
  CHECK(cp1->kernel_url == "http://10.0.0.1:8080/assets/talos/vmlinuz-amd64");
  REQUIRE(cp1->initrds.size() == 1);
  CHECK(cp1->initrds[0].name == "initramfs-amd64.xz");
  CHECK(cp1->arguments == "talos.platform=metal slab_nomerge pti=on console=ttyS0 at=http://10.0.0.1:8080 "
                          "u=0a0b0c0d-0000-1000-8000-000000000009 "
                          "talos.config=http://10.0.0.1:8080/talos/52-54-00-12-34-56/config.yaml");
  CHECK(ipxe_kernel_arguments(*cp1, IpxePlatform::efi) == "initrd=initramfs-amd64.xz " + cp1->arguments);
  CHECK(ipxe_kernel_arguments(*cp1, IpxePlatform::pcbios) == cp1->arguments);

  // Without a MAC the node's URLs carry its UUID; an unknown machine gets no config.
  NodeFacts w1_request{std::nullopt, "4c4c4544-0000-1000-8000-000000000001", std::nullopt};
  auto w1 = ipxe_kernel_boot(talos, inventory.find("w1"), w1_request, base_url);
  CHECK_THAT(w1->arguments, Catch::EndsWith(" talos.config=http://10.0.0.1:8080/talos/4c4c4544-0000-1000-8000-000000000001/config.yaml"));
  auto unknown = ipxe_kernel_boot(talos, nullptr, cp1_request, base_url);
  CHECK(unknown->arguments.find("talos.config") == std::string::npos);

  auto d1 = ipxe_kernel_boot(inventory.profiles.at("debian"), inventory.find("d1"),
                             NodeFacts{"52:54:00:00:00:01", std::nullopt, std::nullopt}, base_url);
  CHECK(d1->arguments == "boot=live host=d1 m=52:54:00:00:00:01 ds=nocloud;s=http://10.0.0.1:8080/cloud-init/52-54-00-00-00-01/");
  CHECK_FALSE(ipxe_kernel_boot(inventory.profiles.at("pi"), inventory.find("pi1"), NodeFacts{}, base_url));
}

TEST_CASE("ipxe kernel line: a node's line exactly at the kernel's limit passes, one byte more is refused",
          "[netboot][ipxe]") {
  // No {uuid} and no UUID-only node here: cp1's line is the one below, whatever a request carries.
  std::string yaml = nodes_file("console=ttyS0");
  yaml.erase(yaml.find("  - {name: w1"), yaml.find("  - {name: d1") - yaml.find("  - {name: w1"));
  NodeInventory inventory = parse(yaml);
  // What ipxe.efi hands the kernel: its image name, then the script's arguments.
  std::string efi_line = "vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal slab_nomerge pti=on console=ttyS0 "
                         "talos.config=http://10.0.0.1:8080/talos/52-54-00-12-34-56/config.yaml";
  REQUIRE(efi_line.size() == 164);
  CHECK(errors_of(inventory, 164).empty());
  auto refused = errors_of(inventory, 163);
  REQUIRE(refused.size() == 1);
  CHECK_THAT(refused[0], Catch::StartsWith("/etc/aggrik8s/nodes.yaml:11:5: node 'cp1': the kernel command line of its iPXE "
                                           "script is 164 bytes with iPXE (UEFI)'s prefix 'vmlinuz-amd64 '; the kernel in "
                                           "/etc/aggrik8s/assets/vmlinuz-amd64 keeps at most 163 (setup header "
                                           "cmdline_size at 0x238, boot protocol 2.15): 1 bytes too many, "
                                           "'talos.config=http://10.0.0.1:8080/talos/52-54-00-12-34-56...' would be "
                                           "lost (shorten profiles.talos.talos.args or http.base_url)"));
}

TEST_CASE("ipxe kernel line: the longest request counts (a UUID instead of a MAC, the longest {mac} and {uuid})",
          "[netboot][ipxe]") {
  NodeInventory inventory = parse(nodes_file("console=ttyS0"));
  // w1 has no match.mac: a request without a MAC names it by its UUID, 19 bytes longer than cp1's MAC.
  std::size_t w1_line = std::string("vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal slab_nomerge pti=on "
                                    "console=ttyS0 talos.config=http://10.0.0.1:8080/talos/"
                                    "4c4c4544-0000-1000-8000-000000000001/config.yaml")
                            .size();
  REQUIRE(w1_line == 183);
  CHECK(errors_of(inventory, 183).empty());
  auto refused = errors_of(inventory, 182);
  REQUIRE(refused.size() == 1);
  CHECK_THAT(refused[0], Catch::Contains("node 'w1': the kernel command line of its iPXE script is 183 bytes"));

  // {uuid} in the args: any request's UUID (36 characters, shown as x's) for cp1, matched by MAC; w1's
  // own UUID, and its URL with the UUID too.
  NodeInventory with_uuid = parse(nodes_file("u={uuid}"));
  std::string cp1_line = "vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal slab_nomerge pti=on "
                         "u=xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx "
                         "talos.config=http://10.0.0.1:8080/talos/52-54-00-12-34-56/config.yaml";
  std::string w1_uuid_line = "vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal slab_nomerge pti=on "
                             "u=4c4c4544-0000-1000-8000-000000000001 talos.config=http://10.0.0.1:8080/talos/"
                             "4c4c4544-0000-1000-8000-000000000001/config.yaml";
  auto uuid_refused = errors_of(with_uuid, cp1_line.size() - 1);
  REQUIRE(uuid_refused.size() == 2);
  CHECK_THAT(uuid_refused[0], Catch::Contains("node 'cp1': the kernel command line of its iPXE script is " +
                                              std::to_string(cp1_line.size()) + " bytes"));
  CHECK_THAT(uuid_refused[1], Catch::Contains("node 'w1': the kernel command line of its iPXE script is " +
                                              std::to_string(w1_uuid_line.size()) + " bytes"));
  CHECK(errors_of(with_uuid, w1_uuid_line.size()).empty());
}

TEST_CASE("ipxe kernel line: unknown machines, plain kernels and local boots", "[netboot][ipxe]") {
  std::string yaml = nodes_file("console=ttyS0") + "unknown_nodes: {action: maintenance, profile: talos}\n";
  NodeInventory inventory = parse(yaml);
  // The unknown machines' line has no talos.config: the shortest of the Talos profile's.
  std::string unknown_line = "vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal slab_nomerge pti=on console=ttyS0";
  auto at_limit = errors_of(inventory, unknown_line.size());
  for (const auto& e : at_limit) CHECK(e.find("unknown machines") == std::string::npos);
  auto over = errors_of(inventory, unknown_line.size() - 1);
  REQUIRE_FALSE(over.empty());
  CHECK_THAT(over.back(), Catch::Contains("unknown machines (unknown_nodes.profile 'talos'): the kernel command line of "
                                          "their iPXE script is " + std::to_string(unknown_line.size()) + " bytes"));
  // d1: a kernel profile with an initrd and user-data; local1 (mode local) and pi1 get no kernel line.
  for (const auto& e : over) {
    CHECK(e.find("'local1'") == std::string::npos);
    CHECK(e.find("'pi1'") == std::string::npos);
  }
  std::string d1_line = "vmlinuz initrd=initrd.gz boot=live host=d1 m=52:54:00:00:00:01 "
                        "ds=nocloud;s=http://10.0.0.1:8080/cloud-init/52-54-00-00-00-01/";
  auto d1 = errors_of(inventory, d1_line.size() - 1);
  bool found = false;
  for (const auto& e : d1) {
    if (e.find("node 'd1'") == std::string::npos) continue;
    found = true;
    CHECK_THAT(e, Catch::Contains("is " + std::to_string(d1_line.size()) + " bytes with iPXE (UEFI)'s prefix 'vmlinuz '"));
    CHECK_THAT(e, Catch::Contains("(shorten profiles.debian.kernel.args or http.base_url)"));
  }
  CHECK(found);
  CHECK(errors_of(inventory, d1_line.size()).size() == 2);  // cp1 and w1, whose lines are longer
}
