// netboot/node_secret_access: which requesting address gets a node's secrets, with a fake neighbour
// table in /proc/net/arp's format.
#include "netboot/service/node_secret_access.hpp"

#include <catch2/catch.hpp>

using namespace aggrik8s::netboot;

namespace {

// As the kernel prints it: a resolved peer, a STALE one (still complete), an incomplete one, a
// published proxy-ARP entry and a non-Ethernet one.
const char* arp_table =
    "IP address       HW type     Flags       HW address            Mask     Device\n"
    "10.0.0.21        0x1         0x2         52:54:00:12:34:56     *        eth1\n"
    "10.0.0.22        0x1         0x2         52:54:00:aa:bb:cc     *        eth1\n"
    "10.0.0.23        0x1         0x0         00:00:00:00:00:00     *        eth1\n"
    "10.0.0.24        0x1         0xc         52:54:00:12:34:56     *        eth1\n"
    "10.0.0.25        0x20        0x2         52:54:00:12:34:56     *        ib0\n"
    "garbage\n";

NodeAddress bound(const std::string& address, NodeAddressSource source) { return {address, source, {}, std::nullopt, {}}; }

struct Asked {
  NodeSecretDecision decision;
  int table_reads = 0;
};

Asked ask(NodeSecretRequest request, const std::string& table = arp_table) {
  Asked out;
  out.decision = decide_node_secret_access(request, [&] {
    ++out.table_reads;
    return parse_proc_net_arp(table);
  });
  return out;
}

NodeSecretRequest request_from(const std::string& client, NodeSecretProof proof = NodeSecretProof::neighbour) {
  NodeSecretRequest request;
  request.node = "cp1";
  request.node_mac = "52:54:00:12:34:56";
  request.client = client;
  request.proof = proof;
  return request;
}

}  // namespace

TEST_CASE("neighbour table: /proc/net/arp keeps complete Ethernet entries only", "[secrets]") {
  auto entries = parse_proc_net_arp(arp_table);
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].address == "10.0.0.21");
  CHECK(entries[0].mac == "52:54:00:12:34:56");
  CHECK(entries[0].device == "eth1");
  CHECK(entries[1].address == "10.0.0.22");
  CHECK(parse_proc_net_arp("").empty());
  CHECK(parse_proc_net_arp("IP address HW type Flags HW address Mask Device\n").empty());
  CHECK(parse_proc_net_arp("10.0.0.1 0x1 0x6 AA-BB-CC-DD-EE-FF * eth0")[0].mac == "aa:bb:cc:dd:ee:ff");  // permanent
}

TEST_CASE("node secrets: a pinned or leased address decides alone", "[secrets]") {
  auto request = request_from("10.0.0.21");
  request.expected = bound("10.0.0.11", NodeAddressSource::pinned);
  auto pinned_elsewhere = ask(request);
  CHECK_FALSE(pinned_elsewhere.decision.allowed);
  CHECK(pinned_elsewhere.decision.why == "the node is at 10.0.0.11 (pinned address)");
  CHECK(pinned_elsewhere.table_reads == 0);  // the node's MAC at 10.0.0.21 does not override the pin

  request.client = "10.0.0.11";
  CHECK(ask(request).decision.allowed);
  request.expected = bound("10.0.0.50", NodeAddressSource::lease);
  CHECK(ask(request).decision.why == "the node is at 10.0.0.50 (DHCP lease)");
  request.client = "10.0.0.50";
  auto leased = ask(request, "");
  CHECK(leased.decision.allowed);
  CHECK(leased.decision.why == "DHCP lease");
}

TEST_CASE("node secrets: without a binding, the neighbour table must show the node's MAC", "[secrets]") {
  auto proven = ask(request_from("10.0.0.21"));
  CHECK(proven.decision.allowed);
  CHECK(proven.decision.why == "neighbour table: 10.0.0.21 is at the node's MAC 52:54:00:12:34:56 on eth1");
  CHECK(proven.table_reads == 1);

  auto other_mac = ask(request_from("10.0.0.22")).decision;
  CHECK_FALSE(other_mac.allowed);
  CHECK_THAT(other_mac.why, Catch::Contains("has 10.0.0.22 at 52:54:00:aa:bb:cc on eth1, not the node's MAC"));
  // Behind a router: no entry for the address at all.
  auto routed = ask(request_from("192.168.7.9")).decision;
  CHECK_FALSE(routed.allowed);
  CHECK_THAT(routed.why, Catch::Contains("no entry for 192.168.7.9"));
  // Incomplete, published and non-Ethernet entries prove nothing.
  for (const char* client : {"10.0.0.23", "10.0.0.24", "10.0.0.25"}) {
    INFO(client);
    CHECK_FALSE(ask(request_from(client)).decision.allowed);
  }
  // The same address at the node's MAC on one interface and another MAC on a second: refused.
  std::string two = std::string(arp_table) + "10.0.0.21        0x1         0x2         02:00:00:00:00:01     *        eth2\n";
  auto ambiguous = ask(request_from("10.0.0.21"), two).decision;
  CHECK_FALSE(ambiguous.allowed);
  CHECK_THAT(ambiguous.why, Catch::Contains("02:00:00:00:00:01 on eth2"));
  // A node matched by UUID or serial alone has no MAC to compare.
  auto no_mac_request = request_from("10.0.0.21");
  no_mac_request.node_mac.reset();
  auto no_mac = ask(no_mac_request);
  CHECK_FALSE(no_mac.decision.allowed);
  CHECK_THAT(no_mac.decision.why, Catch::Contains("no match.mac"));
  CHECK(no_mac.table_reads == 0);
}

TEST_CASE("node secrets: the last asker is no proof unless opted in", "[secrets]") {
  auto request = request_from("10.0.0.30");
  request.expected = bound("10.0.0.30", NodeAddressSource::seen);
  auto refused = ask(request);
  CHECK_FALSE(refused.decision.allowed);
  CHECK_THAT(refused.decision.why, Catch::StartsWith("no pinned address or DHCP lease for node cp1"));

  request.proof = NodeSecretProof::bound;
  auto bound_only = ask(request);
  CHECK_FALSE(bound_only.decision.allowed);
  CHECK(bound_only.table_reads == 0);
  request.client = "10.0.0.21";  // the neighbour proof would hold, but bound does not look
  CHECK_FALSE(ask(request).decision.allowed);

  request.proof = NodeSecretProof::last_asker;
  request.client = "10.0.0.30";
  auto last = ask(request);
  CHECK(last.decision.allowed);
  CHECK_THAT(last.decision.why, Catch::Contains("last-asker"));
  request.client = "10.0.0.31";
  auto not_last = ask(request).decision;
  CHECK_FALSE(not_last.allowed);
  CHECK_THAT(not_last.why, Catch::EndsWith("the last asker was 10.0.0.30"));
  request.client = "10.0.0.21";  // the neighbour proof still counts in last-asker mode
  CHECK(ask(request).decision.allowed);
}

TEST_CASE("node secrets: proof names parse", "[secrets]") {
  CHECK(parse_node_secret_proof("bound") == NodeSecretProof::bound);
  CHECK(parse_node_secret_proof("neighbour") == NodeSecretProof::neighbour);
  CHECK(parse_node_secret_proof("last-asker") == NodeSecretProof::last_asker);
  CHECK_FALSE(parse_node_secret_proof("neighbor"));
  CHECK(std::string(to_string(NodeSecretProof::last_asker)) == "last-asker");
}

TEST_CASE("Pi boot partition: the files that carry secrets, under any name FAT would find them by", "[secrets]") {
  for (const char* name : {"firstrun.sh", "FIRSTRUN.SH", "/firstrun.sh", "./firstrun.sh", "user-data", "USER-DATA",
                           "network-config", "FIRSTR~1.SH", "USER-D~1", "NETWOR~1", "a//user-data", "../user-data"}) {
    INFO(name);
    CHECK(is_secret_boot_partition_file(name));
  }
  for (const char* name : {"config.txt", "cmdline.txt", "kernel_2712.img", "meta-data", "overlays/vc4-kms-v3d.dtbo",
                           "bcm2712-rpi-5-b.dtb", "firstrun.sh.bak"}) {
    INFO(name);
    CHECK_FALSE(is_secret_boot_partition_file(name));
  }
}
