#include "core/sha256.hpp"

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using aggrik8s::Sha256;
using aggrik8s::Sha256Digest;

TEST_CASE("sha256 of known vectors", "[sha256]") {
  CHECK(Sha256::of("").hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Sha256::of("abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 incremental;
  incremental.update("a");
  incremental.update("bc");
  CHECK(incremental.finish() == Sha256::of("abc"));
}

TEST_CASE("sha256 digest parsing accepts exactly 64 hex characters", "[sha256]") {
  auto d = Sha256Digest::parse("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD");
  REQUIRE(d);
  CHECK(d->hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Sha256Digest::parse("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK(Sha256Digest::parse("SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK_FALSE(Sha256Digest::parse("ba7816bf"));
  CHECK_FALSE(Sha256Digest::parse("za7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK_FALSE(Sha256Digest::parse(""));
}

TEST_CASE("sha256 of a file matches sha256sum", "[sha256]") {
  aggrik8s::test::TempDir dir;
  std::string content(3'000'000, 'x');
  aggrik8s::test::write_file(dir / "f", content);
  CHECK(Sha256::of_file(dir / "f") == Sha256::of(content));
  CHECK_THROWS_AS(Sha256::of_file(dir / "missing"), aggrik8s::Error);
}

TEST_CASE("sha256 copy goes on from the same state, independently", "[sha256]") {
  Sha256 prefix;
  prefix.update("ab");
  Sha256 twin = prefix.copy();
  twin.update("c");
  prefix.update("d");
  CHECK(twin.finish() == Sha256::of("abc"));
  CHECK(prefix.finish() == Sha256::of("abd"));
}
