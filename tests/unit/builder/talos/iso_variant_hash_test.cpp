#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

#include "builder/talos/iso_variant.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes pattern(std::size_t size) {
  Bytes b(size);
  std::uint32_t x = 12345;
  for (auto& byte : b) {
    x = x * 1103515245 + 12345;
    byte = static_cast<std::uint8_t>(x >> 16);
  }
  return b;
}

// The variant's bytes, written out, for the reference hash.
Bytes applied(const Bytes& base, const std::vector<IsoBytePatch>& patches) {
  Bytes out = base;
  for (const auto& p : patches) std::copy(p.bytes().begin(), p.bytes().end(), out.begin() + static_cast<std::ptrdiff_t>(p.offset));
  return out;
}

IsoBytePatch owned(std::uint64_t offset, Bytes bytes) {
  IsoBytePatch p;
  p.offset = offset;
  p.owned = std::move(bytes);
  return p;
}

}  // namespace

TEST_CASE("iso variant hash: from checkpoints it equals the hash of the whole variant", "[talos][iso][variant]") {
  const Bytes base = pattern(10 * 4096 + 77);  // not a whole number of checkpoints
  IsoHashCheckpoints checkpoints;
  CHECK(hash_iso_template(base, checkpoints, 4096) == Sha256::of(std::span<const std::uint8_t>(base)));
  REQUIRE(checkpoints.size() == 11);
  CHECK(checkpoints[3].offset == 3 * 4096);

  // A patch equal to the template up to a byte deep inside it, one starting exactly on a checkpoint,
  // one before the first checkpoint after 0, one at the last byte, several, none.
  Bytes same_then_other(9000);
  std::copy_n(base.begin() + 5000, 9000, same_then_other.begin());
  same_then_other[8500] ^= 0x5a;
  const std::vector<std::vector<IsoBytePatch>> cases = [&] {
    std::vector<std::vector<IsoBytePatch>> c;
    c.push_back({owned(5000, same_then_other)});
    c.push_back({owned(2 * 4096, Bytes{1, 2, 3})});
    c.push_back({owned(10, Bytes{9}), owned(30000, Bytes(3000, 0))});
    c.push_back({owned(base.size() - 1, Bytes{static_cast<std::uint8_t>(base.back() ^ 1)})});
    c.push_back({owned(100, Bytes(base.begin() + 100, base.begin() + 200)), owned(20000, Bytes{0, 0, 0, 0})});
    c.push_back({});
    return c;
  }();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i);
    Bytes variant = applied(base, cases[i]);
    Sha256Digest expected = Sha256::of(std::span<const std::uint8_t>(variant));
    CHECK(hash_iso_variant(base, cases[i]) == expected);
    CHECK(hash_iso_variant(base, cases[i], checkpoints) == expected);
    auto mismatch = std::mismatch(base.begin(), base.end(), variant.begin());
    CHECK(first_patched_difference(base, cases[i]) == static_cast<std::uint64_t>(mismatch.first - base.begin()));
  }
  // Without checkpoints (a template not hashed yet): from byte 0.
  CHECK(hash_iso_variant(base, cases[0], IsoHashCheckpoints{}) == Sha256::of(std::span<const std::uint8_t>(applied(base, cases[0]))));
}

TEST_CASE("iso variant hash: checkpoints are whole SHA-256 blocks apart, patches in order", "[talos][iso][variant]") {
  const Bytes base = pattern(1000);
  IsoHashCheckpoints checkpoints;
  CHECK_THROWS_WITH(hash_iso_template(base, checkpoints, 100), Catch::Contains("multiple of 64 bytes"));
  CHECK_THROWS_WITH(hash_iso_template(base, checkpoints, 0), Catch::Contains("multiple of 64 bytes"));
  hash_iso_template(base, checkpoints, 128);
  std::vector<IsoBytePatch> backwards{owned(500, Bytes{1}), owned(100, Bytes{2})};
  CHECK_THROWS_WITH(hash_iso_variant(base, backwards, checkpoints), Catch::Contains("out of order or past the image"));
  CHECK_THROWS_WITH(first_patched_difference(base, {owned(999, Bytes{1, 2})}), Catch::Contains("out of order or past the image"));
}
