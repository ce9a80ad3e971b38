// Full-mode address allocation: offers, holds, reservations, NAKs, releases, declines, the lease file.
#include "netboot/dhcp_lease_pool.hpp"

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "netboot/dhcp_packet.hpp"

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
  CHECK(pool.release("x", ip("10.98.0.12")));
  CHECK_FALSE(pool.release("x", ip("10.98.0.12")));
  pool.decline("y", ip("10.98.0.10"), 0);
  CHECK(pool.offer("y", std::nullopt, 1) == ip("10.98.0.11"));
  CHECK(pool.offer("z", ip("10.98.0.1"), 1) == ip("10.98.0.12"));  // the server's own address is never given
}

TEST_CASE("dhcp lease pool: lease file round trip and errors naming the line", "[dhcp]") {
  std::map<std::string, DhcpLease> leases = {{"52:54:00:00:00:01", {"52:54:00:00:00:01", ip("10.98.0.10"), 1700000000}}};
  auto text = format_dhcp_leases(leases);
  auto parsed = parse_dhcp_leases(text, "leases");
  REQUIRE(parsed.size() == 1);
  CHECK(parsed[0] == leases.begin()->second);
  CHECK_THROWS_WITH(parse_dhcp_leases("# c\naa 10.0.0.300 5\n", "/var/lib/x/leases"),
                    "/var/lib/x/leases:2: not a lease line (MAC ADDRESS EXPIRES): 'aa 10.0.0.300 5'");
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
