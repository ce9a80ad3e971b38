// Address text forms: one address, however it is spelled (site addresses against serve's logged clients).
#include "core/identifiers.hpp"

#include <catch2/catch.hpp>

using aggrik8s::canonical_ip_address;

TEST_CASE("canonical_ip_address: one text per address, nothing for what is none", "[identifiers]") {
  CHECK(canonical_ip_address("FD00:10::11") == "fd00:10::11");
  CHECK(canonical_ip_address("fd00:10:0:0::11") == "fd00:10::11");
  CHECK(canonical_ip_address("fd00:0010:0000::0011") == "fd00:10::11");
  CHECK(canonical_ip_address("10.0.10.11") == "10.0.10.11");
  CHECK(canonical_ip_address("::ffff:10.0.0.1") == "::ffff:10.0.0.1");
  CHECK_FALSE(canonical_ip_address("10.0.10.11/24"));
  CHECK_FALSE(canonical_ip_address("fe80::1%eth0"));
  CHECK_FALSE(canonical_ip_address("cp1"));
  CHECK_FALSE(canonical_ip_address(""));
}
