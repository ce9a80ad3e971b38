// Full-mode address allocation: offers, holds, reservations, NAKs, releases, declines, the lease file.
#include "netboot/dhcp/dhcp_lease_pool.hpp"

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "netboot/dhcp/dhcp_packet.hpp"

using namespace aggrik8s::netboot;

namespace {
std::uint32_t ip(const char* text) { return *parse_ipv4(text); }
DhcpLeasePool small_pool() {
  DhcpPoolRange range;
  range.first = ip("10.98.0.10");
  range.last = ip("10.98.0.12");
  range.server = ip("10.98.0.1");
  range.lease_time = 600;
  return DhcpLeasePool(range);
}
}  // namespace

TEST_CASE("dhcp lease pool: concurrent DISCOVERs get distinct addresses, a REQUEST commits", "[dhcp]") {
  auto pool = small_pool();
  auto a = pool.offer("aa", std::nullopt, 1000);
  auto b = pool.offer("bb", std::nullopt, 1000);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a != *b);
  CHECK(pool.offer("aa", std::nullopt, 1001) == a);  // the same client is offered the same address
  auto lease = pool.prepare("aa", *a, 1002);
  REQUIRE(lease);
  CHECK(lease->expires == 1602);
  pool.commit(*lease);
  CHECK_FALSE(pool.prepare("bb", *a, 1003));  // NAK: taken
  CHECK_FALSE(pool.prepare("cc", ip("10.98.0.99"), 1003));  // NAK: out of range
}

TEST_CASE("dhcp lease pool: the pool runs dry, then an expired lease is reclaimed", "[dhcp]") {
  auto pool = small_pool();
  for (const char* mac : {"m1", "m2", "m3"}) {
    auto address = pool.offer(mac, std::nullopt, 0);
    REQUIRE(address);
    pool.commit(*pool.prepare(mac, *address, 0));
  }
  CHECK_FALSE(pool.offer("m4", std::nullopt, 100));
  CHECK(pool.offer("m4", std::nullopt, 700));  // all leases expired at 600
}

TEST_CASE("dhcp lease pool: a returning client keeps its expired address if nobody took it", "[dhcp]") {
  auto pool = small_pool();
  pool.load({{"aa", ip("10.98.0.11"), 50}});
  CHECK(pool.offer("bb", std::nullopt, 100) == ip("10.98.0.10"));
  CHECK(pool.offer("aa", std::nullopt, 100) == ip("10.98.0.11"));
}

TEST_CASE("dhcp lease pool: reservations, requested addresses, release and decline", "[dhcp]") {
  auto pool = small_pool();
  pool.set_reservations({{"pinned", ip("10.98.0.50")}});
  CHECK(pool.offer("pinned", std::nullopt, 0) == ip("10.98.0.50"));
  CHECK_FALSE(pool.prepare("pinned", ip("10.98.0.10"), 0));
  CHECK(pool.prepare("pinned", ip("10.98.0.50"), 0));
  CHECK_FALSE(pool.prepare("other", ip("10.98.0.50"), 0));
  CHECK(pool.offer("x", ip("10.98.0.12"), 0) == ip("10.98.0.12"));
  pool.commit(*pool.prepare("x", ip("10.98.0.12"), 0));
  CHECK(pool.release("x", ip("10.98.0.12"), 0));
  CHECK_FALSE(pool.release("x", ip("10.98.0.12"), 0));  // already released: nothing more to record
  CHECK_FALSE(pool.decline("y", ip("10.98.0.10"), 0));  // not y's: ignored
  pool.commit(*pool.prepare("y", ip("10.98.0.10"), 0));
  CHECK(pool.decline("y", ip("10.98.0.10"), 0) == DhcpLease{"declined:10.98.0.10", ip("10.98.0.10"), 600});
  CHECK(pool.offer("y", std::nullopt, 1) == ip("10.98.0.11"));  // .10 is quarantined
  CHECK(pool.offer("z", ip("10.98.0.1"), 1) == ip("10.98.0.12"));  // the server's own address is never given
}

TEST_CASE("dhcp lease pool: lease file round trip and errors naming the line", "[dhcp]") {
  std::map<std::string, DhcpLease> leases = {{"52:54:00:00:00:01", {"52:54:00:00:00:01", ip("10.98.0.10"), 1700000000}}};
  auto text = format_dhcp_leases(leases);
  auto parsed = parse_dhcp_leases(text, "leases");
  REQUIRE(parsed.size() == 1);
  CHECK(parsed[0] == leases.begin()->second);
  CHECK_THROWS_WITH(parse_dhcp_leases("# c\naa 10.0.0.300 5\n", "/var/lib/x/leases"),
                    "/var/lib/x/leases:2: not a lease line (CLIENT ADDRESS EXPIRES): 'aa 10.0.0.300 5'");
}

TEST_CASE("dhcp lease pool: the journal's last line per MAC wins and 0.0.0.0 removes a lease", "[dhcp]") {
  auto leases = parse_dhcp_leases("aa 10.98.0.10 5\nbb 10.98.0.11 5\naa 10.98.0.12 9\nbb 0.0.0.0 0\n", "leases");
  REQUIRE(leases.size() == 1);
  CHECK(leases[0] == DhcpLease{"aa", ip("10.98.0.12"), 9});
  auto pool = small_pool();
  pool.load(leases);
  CHECK(pool.offer("cc", ip("10.98.0.12"), 0) == ip("10.98.0.10"));  // .12 is aa's
}

TEST_CASE("dhcp lease pool: read back in journal order, a later lease of an address supersedes the expired one", "[dhcp]") {
  // "zz" held .10 until 100; it expired and "aa" was granted .10 until 900. Sorted by MAC, "zz" would
  // be committed last and push out the lease the server acknowledged to "aa".
  auto leases = parse_dhcp_leases("zz 10.98.0.10 100\nbb 10.98.0.11 50\naa 10.98.0.10 900\nbb 10.98.0.11 800\n", "leases");
  REQUIRE(leases.size() == 3);
  CHECK(leases[0] == DhcpLease{"zz", ip("10.98.0.10"), 100});
  CHECK(leases[1] == DhcpLease{"aa", ip("10.98.0.10"), 900});
  CHECK(leases[2] == DhcpLease{"bb", ip("10.98.0.11"), 800});
  auto pool = small_pool();
  pool.load(leases);
  CHECK(pool.leases().count("zz") == 0);
  CHECK(pool.leases().at("aa").address == ip("10.98.0.10"));
  CHECK(pool.offer("cc", std::nullopt, 500) == ip("10.98.0.12"));  // .10 is aa's until 900, .11 bb's
  CHECK_FALSE(pool.prepare("cc", ip("10.98.0.10"), 500));
}

TEST_CASE("dhcp lease pool: a released client gets its address back while it is free (RFC 2131 4.3.1)", "[dhcp]") {
  auto pool = small_pool();
  pool.commit(*pool.prepare("x", *pool.offer("x", std::nullopt, 0), 0));
  REQUIRE(pool.leases().at("x").address == ip("10.98.0.10"));
  auto released = pool.release("x", ip("10.98.0.10"), 100);
  REQUIRE(released);
  CHECK(*released == DhcpLease{"x", ip("10.98.0.10"), 100});  // the journal line: expired now
  // Another client is given a never-used address before the released one ...
  CHECK(pool.offer("y", std::nullopt, 101) == ip("10.98.0.11"));
  // ... and the released client's next DISCOVER gets its previous binding, not a fresh address.
  CHECK(pool.offer("x", std::nullopt, 102) == ip("10.98.0.10"));
  // Through the journal (a restart) too: the release line keeps the binding.
  auto text = format_dhcp_lease_line({"x", ip("10.98.0.10"), 600}) + format_dhcp_lease_line(*released);
  auto restarted = small_pool();
  restarted.load(parse_dhcp_leases(text, "leases"));
  CHECK(restarted.offer("y", std::nullopt, 200) == ip("10.98.0.11"));
  CHECK(restarted.offer("x", std::nullopt, 200) == ip("10.98.0.10"));
  // Once the pool has nothing never-used left, the released address goes to others.
  auto full = small_pool();
  full.load(parse_dhcp_leases(text, "leases"));
  full.commit({"m1", ip("10.98.0.11"), 1000});
  full.commit({"m2", ip("10.98.0.12"), 1000});
  CHECK(full.offer("z", std::nullopt, 200) == ip("10.98.0.10"));
}

TEST_CASE("dhcp lease pool: a decline of an address the client does not hold is ignored, its lease kept", "[dhcp]") {
  // RFC 2131 4.3.3, as Kea and dnsmasq: one client declining addresses it was never given took the
  // whole pool out of use for a lease time each.
  auto pool = small_pool();
  pool.commit({"x", ip("10.98.0.10"), 600});
  CHECK_FALSE(pool.decline("x", ip("10.98.0.11"), 0));
  CHECK_FALSE(pool.decline("stranger", ip("10.98.0.12"), 0));
  CHECK(pool.leases().at("x").address == ip("10.98.0.10"));
  CHECK(pool.offer("y", std::nullopt, 1) == ip("10.98.0.11"));  // .10 is x's; .11 was not quarantined
  CHECK(pool.decline("x", ip("10.98.0.10"), 1));
  CHECK(pool.leases().count("x") == 0);
  // Another client's unexpired lease is not taken by a DECLINE naming its address.
  pool.commit({"z", ip("10.98.0.12"), 600});
  CHECK_FALSE(pool.decline("x", ip("10.98.0.12"), 2));
  CHECK(pool.leases().at("z").address == ip("10.98.0.12"));
  // Nor is an address the pool does not hand out quarantined.
  CHECK_FALSE(pool.decline("x", ip("10.98.0.99"), 2));
  CHECK_FALSE(pool.decline("x", 0, 2));
}

TEST_CASE("dhcp lease pool: a declined address stays quarantined across a restart, then returns", "[dhcp]") {
  // RFC 2131 4.3.3: the server MUST mark a declined address not available. The quarantine is a
  // journal line like a lease, so a restart (which reads the journal back and compacts it) keeps it.
  auto pool = small_pool();
  std::string journal = format_dhcp_lease_line(*pool.prepare("x", *pool.offer("x", std::nullopt, 0), 0));
  REQUIRE(pool.leases().empty());  // prepared, not committed: commit as the server does
  pool.commit(*parse_dhcp_leases(journal, "leases").begin());
  auto quarantine = pool.decline("x", ip("10.98.0.10"), 100);
  REQUIRE(quarantine);
  CHECK(*quarantine == DhcpLease{"declined:10.98.0.10", ip("10.98.0.10"), 700});
  CHECK(pool.leases().count("x") == 0);  // x's lease on it ended
  journal += format_dhcp_lease_line(*quarantine);

  auto restarted = small_pool();
  restarted.load(parse_dhcp_leases(journal, "leases"));
  CHECK(restarted.leases().count("x") == 0);
  // The start-up compaction writes the quarantine back.
  auto compacted = small_pool();
  compacted.load(parse_dhcp_leases(format_dhcp_leases(restarted.leases()), "leases"));
  for (auto* p : {&restarted, &compacted}) {
    for (const char* client : {"x", "y", "z"}) {
      auto offered = p->offer(client, ip("10.98.0.10"), 200);
      CHECK(offered != ip("10.98.0.10"));
    }
    CHECK_FALSE(p->offer("w", std::nullopt, 200));  // .11 and .12 are held by offers, .10 quarantined
    CHECK_FALSE(p->prepare("w", ip("10.98.0.10"), 200));
  }
  // After a lease time the address is handed out again, after the never-used ones.
  CHECK(compacted.prepare("w", ip("10.98.0.10"), 701));
}

TEST_CASE("dhcp lease pool: a node whose reserved address another client holds gets a pool address meanwhile", "[dhcp]") {
  auto pool = small_pool();
  pool.commit({"holder", ip("10.98.0.10"), 600});  // leased before the reservation was made
  pool.set_reservations({{"node", ip("10.98.0.10")}});
  auto offered = pool.offer("node", std::nullopt, 100);
  REQUIRE(offered);
  CHECK(*offered == ip("10.98.0.11"));
  auto lease = pool.prepare("node", *offered, 100);
  REQUIRE(lease);
  pool.commit(*lease);
  // The holder cannot renew a reserved address; the node keeps its pool address while the holder's
  // lease lasts ...
  CHECK_FALSE(pool.prepare("holder", ip("10.98.0.10"), 200));
  CHECK(pool.prepare("node", ip("10.98.0.11"), 300));
  // ... and once the reserved address is free, a NAK sends the node back to DISCOVER, which offers it.
  CHECK_FALSE(pool.prepare("node", ip("10.98.0.11"), 601));
  CHECK(pool.offer("node", std::nullopt, 601) == ip("10.98.0.10"));
  CHECK(pool.prepare("node", ip("10.98.0.10"), 601));
  // Never an address outside the pool but its reservation.
  CHECK_FALSE(pool.prepare("node", ip("10.98.0.99"), 100));
}

TEST_CASE("dhcp lease pool: the subnet's network and broadcast addresses are never leased", "[dhcp]") {
  DhcpPoolRange range;
  range.first = ip("10.98.0.254");
  range.last = ip("10.98.1.1");
  range.netmask = ip("255.255.255.0");
  DhcpLeasePool pool(range);
  CHECK(pool.offer("a", std::nullopt, 0) == ip("10.98.0.254"));
  CHECK(pool.offer("b", std::nullopt, 0) == ip("10.98.1.1"));  // .0.255 and .1.0 skipped
  CHECK_FALSE(pool.offer("c", std::nullopt, 0));
  CHECK_FALSE(pool.prepare("c", ip("10.98.1.0"), 0));
  CHECK_FALSE(pool.prepare("c", ip("10.98.0.255"), 0));
  // In a /23 10.98.1.0 is an ordinary host address.
  range.netmask = ip("255.255.254.0");
  DhcpLeasePool wide(range);
  CHECK(wide.prepare("c", ip("10.98.1.0"), 0));
  CHECK(wide.prepare("c", ip("10.98.0.255"), 0));
  range.first = ip("10.98.0.0");
  range.last = ip("10.98.0.1");
  range.netmask = ip("255.255.255.254");  // a /31: both are hosts (RFC 3021)
  DhcpLeasePool point_to_point(range);
  CHECK(point_to_point.prepare("c", ip("10.98.0.0"), 0));
}

TEST_CASE("dhcp lease pool: leases by client identifier, reservations still by MAC", "[dhcp]") {
  auto pool = small_pool();
  pool.set_reservations({{"52:54:00:00:00:07", ip("10.98.0.50")}});
  DhcpClientId reserved("id:ff0001", "52:54:00:00:00:07");
  CHECK(pool.offer(reserved, std::nullopt, 0) == ip("10.98.0.50"));
  auto lease = pool.prepare(reserved, ip("10.98.0.50"), 0);
  REQUIRE(lease);
  CHECK(lease->client == "id:ff0001");
  // Two clients behind one chaddr but with their own option 61 get a lease each.
  DhcpClientId one("id:0161", "52:54:00:00:00:08"), two("id:0162", "52:54:00:00:00:08");
  auto a = pool.offer(one, std::nullopt, 0);
  auto b = pool.offer(two, std::nullopt, 0);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a != *b);
  pool.commit(*pool.prepare(one, *a, 0));
  pool.commit(*pool.prepare(two, *b, 0));
  auto text = format_dhcp_leases(pool.leases());
  CHECK(text.find("id:0161 " + ipv4_to_string(*a) + " 600\n") != std::string::npos);
  auto back = parse_dhcp_leases(text, "leases");
  CHECK(back.size() == 2);
}

TEST_CASE("dhcp lease pool: a torn last record (no newline) is left out, old MAC-keyed files load as before", "[dhcp]") {
  std::string torn;
  auto leases = parse_dhcp_leases("aa 10.98.0.10 5\nbb 10.98.0.11 17000", "leases", &torn);
  REQUIRE(leases.size() == 1);
  CHECK(leases[0] == DhcpLease{"aa", ip("10.98.0.10"), 5});
  CHECK(torn == "bb 10.98.0.11 17000");  // it parses, but its expiry may be cut short: not a record
  CHECK(parse_dhcp_leases("aa 10.98.0.10 5\ncc 10.9", "leases").size() == 1);  // would not parse: no throw
  parse_dhcp_leases("aa 10.98.0.10 5\n", "leases", &torn);
  CHECK(torn.empty());
  auto old = parse_dhcp_leases("# aggrik8s-image DHCP leases: MAC ADDRESS EXPIRES(unix seconds)\n"
                               "52:54:00:98:00:01 10.98.0.100 1700000000\n",
                               "leases");
  REQUIRE(old.size() == 1);
  CHECK(old[0].client == "52:54:00:98:00:01");
}

TEST_CASE("dhcp lease pool: a lease line is CLIENT ADDRESS EXPIRES and a newline, byte for byte", "[dhcp]") {
  CHECK(format_dhcp_lease_line({"52:54:00:01:02:03", ip("10.98.0.10"), 1764892800}) ==
        "52:54:00:01:02:03 10.98.0.10 1764892800\n");
  CHECK(format_dhcp_lease_line({"id:0161626364", ip("255.255.255.254"), 0}) == "id:0161626364 255.255.255.254 0\n");
  CHECK(format_dhcp_lease_line({"x", 0, -1}) == "x 0.0.0.0 -1\n");  // a tombstone; negative never written, still exact
}
