// iPXE scripts (BIOS vs UEFI), access rules for per-node files, and the metrics/status renderers.
#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "netboot/service/boot_event_log.hpp"
#include "netboot/service/dhcp_node_clients.hpp"
#include "netboot/service/ipxe_script.hpp"
#include "netboot/service/netboot_metrics.hpp"
#include "netboot/service/node_address_book.hpp"

using namespace aggrik8s::netboot;

TEST_CASE("ipxe: UEFI names the initrd on the kernel line, BIOS does not", "[netboot][ipxe]") {
  IpxeKernelBoot boot{"http://10.0.0.1:8080/assets/talos/vmlinuz-amd64",
                      {{"initramfs-amd64.xz", "http://10.0.0.1:8080/assets/talos/initramfs-amd64.xz"}},
                      "talos.platform=metal slab_nomerge pti=on"};
  std::string efi = render_ipxe_boot_script(boot, IpxePlatform::efi);
  CHECK(efi ==
        "#!ipxe\n"
        "kernel http://10.0.0.1:8080/assets/talos/vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal "
        "slab_nomerge pti=on || goto failed\n"
        "initrd --name initramfs-amd64.xz http://10.0.0.1:8080/assets/talos/initramfs-amd64.xz || goto failed\n"
        "boot || goto failed\n"
        ":failed\necho Boot failed; returning to the firmware in 10 s\nsleep 10\nexit 1\n");
  std::string bios = render_ipxe_boot_script(boot, IpxePlatform::pcbios);
  CHECK_THAT(bios, Catch::StartsWith("#!ipxe\nkernel http://10.0.0.1:8080/assets/talos/vmlinuz-amd64 "
                                     "talos.platform=metal slab_nomerge pti=on || goto failed\n"));
  CHECK(bios.find("initrd=") == std::string::npos);
  CHECK_THAT(bios, Catch::Contains("initrd --name initramfs-amd64.xz "));

  IpxeKernelBoot two{"http://s/k", {{"a.gz", "http://s/a.gz"}, {"b.cpio", "http://s/b.cpio"}}, ""};
  CHECK_THAT(render_ipxe_boot_script(two, IpxePlatform::efi), Catch::StartsWith("#!ipxe\nkernel http://s/k initrd=a.gz initrd=b.cpio || goto failed\n"));
  CHECK(parse_ipxe_platform("efi") == IpxePlatform::efi);
  CHECK(parse_ipxe_platform("pcbios") == IpxePlatform::pcbios);
  CHECK_FALSE(parse_ipxe_platform("EFI"));
  CHECK_THAT(render_ipxe_local_disk_script(IpxePlatform::pcbios), Catch::Contains("sanboot --no-describe --drive 0x80"));
  CHECK_THAT(render_ipxe_local_disk_script(IpxePlatform::efi), Catch::Contains("exit 0"));
  CHECK(render_ipxe_chain_script("http://10.0.0.1:8080") ==
        "#!ipxe\nchain http://10.0.0.1:8080/ipxe?mac=${net0/mac:hexhyp}&uuid=${uuid}&platform=${platform}"
        "&arch=${buildarch} || exit 1\n");
}

TEST_CASE("access: secrets need the node's known address, boot scripts only a pinned one", "[netboot][access]") {
  NodeAddressBook book;
  CHECK(check_node_access(book.address_of("cp1"), "10.0.0.11") == NodeAccess::address_unknown);
  CHECK(check_boot_script_access(book.address_of("cp1"), "10.0.0.11") == NodeAccess::allowed);

  book.record_seen("cp1", "10.0.0.50");
  CHECK(check_node_access(book.address_of("cp1"), "10.0.0.50") == NodeAccess::allowed);
  CHECK(check_node_access(book.address_of("cp1"), "10.0.0.51") == NodeAccess::wrong_address);
  CHECK(check_boot_script_access(book.address_of("cp1"), "10.0.0.51") == NodeAccess::allowed);  // a reboot
  CHECK(book.node_at("10.0.0.50") == "cp1");

  book.record_lease("cp1", "10.0.0.60");  // the DHCP hook outranks a sighting
  CHECK(book.address_of("cp1")->source == NodeAddressSource::lease);
  CHECK(check_node_access(book.address_of("cp1"), "10.0.0.50") == NodeAccess::wrong_address);
  CHECK(check_boot_script_access(book.address_of("cp1"), "10.0.0.50") == NodeAccess::wrong_address);
  CHECK_FALSE(book.node_at("10.0.0.50"));  // the lease says it is elsewhere now

  book.set_pinned({{"cp1", "10.0.0.11"}});
  CHECK(book.address_of("cp1")->address == "10.0.0.11");
  CHECK(check_node_access(book.address_of("cp1"), "10.0.0.60") == NodeAccess::wrong_address);
  CHECK(check_node_access(book.address_of("cp1"), "10.0.0.11") == NodeAccess::allowed);
  CHECK(book.node_at("10.0.0.11") == "cp1");
  book.set_pinned({});
  CHECK(book.address_of("cp1")->source == NodeAddressSource::lease);
}

TEST_CASE("access: a lease ties a node to its address only while it lasts", "[netboot][access]") {
  // A node's lease that ended (RELEASE, DECLINE, expiry, its address leased to another client) handed
  // the next holder of the address the node's secrets (its boot.img, its identity).
  using namespace std::chrono_literals;
  const auto now = std::chrono::system_clock::now();
  NodeAddressBook book;
  book.record_seen("w1", "10.0.0.70");
  book.record_lease("w1", "10.0.0.70", now + 1h);
  CHECK(book.node_at("10.0.0.70") == "w1");
  book.address_ended("10.0.0.70");  // released: neither the lease nor the sighting ties it now
  CHECK_FALSE(book.node_at("10.0.0.70"));
  CHECK(check_node_access(book.address_of("w1"), "10.0.0.70") == NodeAccess::address_unknown);

  book.record_lease("w1", "10.0.0.71", now + 1h, "2c:cf:67:00:00:01");
  book.record_seen("w1", "10.0.0.71");
  book.record_lease("w2", "10.0.0.71", now + 1h);  // w1's address went to w2 (w1's lease had ended)
  CHECK(book.node_at("10.0.0.71") == "w2");
  CHECK_FALSE(book.address_of("w1"));

  // The same DHCP client renewing without what showed it to be the node (a Pi's initramfs has no
  // serial): the tie goes on, to the new expiry. Another client at the address ends it.
  book.record_lease("w5", "10.0.0.74", now + 1s, "2c:cf:67:00:00:05");
  book.record_other_lease("10.0.0.74", "2c:cf:67:00:00:05", now + 1h);
  CHECK(book.node_at("10.0.0.74") == "w5");
  CHECK(book.address_of("w5")->expires == now + 1h);
  book.record_other_lease("10.0.0.74", "52:54:00:00:00:99", now + 1h);
  CHECK_FALSE(book.node_at("10.0.0.74"));

  book.record_lease("w3", "10.0.0.72", now - 1s);  // expired
  CHECK_FALSE(book.node_at("10.0.0.72"));
  CHECK(check_node_access(book.address_of("w3"), "10.0.0.72") == NodeAccess::address_unknown);

  book.set_pinned({{"w4", "10.0.0.73"}});
  book.address_ended("10.0.0.73");  // a pinned address is the nodes file's, not a lease's
  CHECK(book.node_at("10.0.0.73") == "w4");
}

TEST_CASE("metrics: Prometheus text format and the status page escape what they print", "[netboot]") {
  NetbootMetrics metrics;
  metrics.add("aggrik8s_http_requests_total", {{"route", "asset"}, {"status", "200"}});
  metrics.add("aggrik8s_http_requests_total", {{"route", "asset"}, {"status", "200"}});
  metrics.add("aggrik8s_http_sent_bytes_total", {}, 1234);
  metrics.set_gauge("aggrik8s_inventory_nodes", {}, 3);
  BootEvent event;
  event.node = "cp1";
  event.client = "10.0.0.11";
  event.step = "talos-config";
  event.file = "/talos/x/config.yaml";
  event.result = "refused";
  metrics.boot_step(event);
  std::string text = metrics.prometheus_text();
  CHECK_THAT(text, Catch::Contains("# TYPE aggrik8s_http_requests_total counter\n"
                                   "aggrik8s_http_requests_total{route=\"asset\",status=\"200\"} 2\n"));
  CHECK_THAT(text, Catch::Contains("aggrik8s_http_sent_bytes_total 1234\n"));
  CHECK_THAT(text, Catch::Contains("aggrik8s_boot_steps_total{node=\"cp1\",step=\"talos-config\",result=\"refused\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("# TYPE aggrik8s_inventory_nodes gauge\naggrik8s_inventory_nodes 3\n"));
  auto steps = metrics.last_steps();
  REQUIRE(steps.size() == 1);
  CHECK(steps[0].last_result == "refused");

  NodeBootStatus evil;
  evil.node = "<script>";
  std::string page = render_status_page({evil}, "a & b");
  CHECK_THAT(page, Catch::Contains("&lt;script&gt;"));
  CHECK_THAT(page, Catch::Contains("a &amp; b"));
  CHECK(page.find("<script>") == std::string::npos);

  std::string line = boot_event_json(event);
  CHECK_THAT(line, Catch::Contains("\"node\":\"cp1\""));
  CHECK_THAT(line, Catch::Contains("\"result\":\"refused\""));
  CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("dhcp-nodes.json: which lease is which node, read back as written, bad content named", "[netboot][access]") {
  aggrik8s::netboot::DhcpNodeClients clients{{"2c:cf:67:98:00:03", "pi5"}, {"id:01525400", "w1"}};
  std::string text = aggrik8s::netboot::dhcp_node_clients_json(clients);
  CHECK(aggrik8s::netboot::parse_dhcp_node_clients_json(text, "f") == clients);
  auto error_of = [](const std::string& bad) {
    try {
      aggrik8s::netboot::parse_dhcp_node_clients_json(bad, "/var/lib/aggrik8s/dhcp-nodes.json");
    } catch (const aggrik8s::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of("{"), Catch::Contains("/var/lib/aggrik8s/dhcp-nodes.json: not JSON"));
  CHECK_THAT(error_of(R"({"format": "x", "version": 1, "clients": {}})"), Catch::Contains("'format'"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-dhcp-nodes", "version": 2, "clients": {}})"), Catch::Contains("'version'"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-dhcp-nodes", "version": 1, "clients": {"aa": 5}})"),
             Catch::Contains("clients.aa: expected a node name"));
}
