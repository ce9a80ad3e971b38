#include "core/program_build_id.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/test_support.hpp"

TEST_CASE("program build id: the test binary's GNU build ID, as readelf reports it", "[build-id]") {
  std::optional<std::string> id = aggrik8s::program_build_id();
  REQUIRE(id);
  CHECK(id->size() >= 16);
  CHECK(id->find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(aggrik8s::program_build_id() == id);
  // The same note, read from the file by binutils.
  auto r = aggrik8s::test::run("readelf -n /proc/" + std::to_string(::getpid()) + "/exe | sed -n 's/.*Build ID: *//p'");
  CHECK(r.output.substr(0, r.output.find_last_not_of("\n") + 1) == *id);
}
