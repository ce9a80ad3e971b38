#include "core/sha256_pair.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <stdexcept>
#include <vector>

using namespace aggrik8s;

namespace {

std::vector<std::uint8_t> random_bytes(std::size_t size, std::uint64_t seed) {
  std::vector<std::uint8_t> bytes(size);
  std::mt19937_64 random(seed);
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(random());
  return bytes;
}

}  // namespace

// Every length around the padding's edges (55/56/63/64 bytes into a block) and larger ones, fed in
// pieces of every awkward size, gives OpenSSL's digest of each message, with the SHA extensions where
// this CPU has them and without.
TEST_CASE("sha256 pair: two messages hashed together give each one's own sha256") {
  // automatic is the portable code again where the CPU lacks the extensions: say so in the output.
  if (!Sha256Pair::accelerated()) WARN("no SHA extensions on this CPU: the interleaved code is not tested here");
  for (auto implementation : {Sha256Pair::Implementation::automatic, Sha256Pair::Implementation::portable}) {
    for (std::size_t size : std::initializer_list<std::size_t>{0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 100003}) {
      const auto first = random_bytes(size, size);
      const auto second = random_bytes(size, size + 7777);
      for (std::size_t piece : std::initializer_list<std::size_t>{1, 3, 64, 65, 4096, 1 << 20}) {
        Sha256Pair pair(implementation);
        for (std::size_t at = 0; at < size; at += piece) {
          const std::size_t n = std::min(piece, size - at);
          pair.update(std::span(first.data() + at, n), std::span(second.data() + at, n));
        }
        const auto digests = pair.finish();
        INFO("size " << size << ", pieces of " << piece);
        CHECK(digests[0] == Sha256::of(std::span<const std::uint8_t>(first)));
        CHECK(digests[1] == Sha256::of(std::span<const std::uint8_t>(second)));
      }
    }
  }
  // A finished pair starts again; the same message in both lanes gives the same digest twice.
  Sha256Pair pair;
  const auto bytes = random_bytes(300, 1);
  pair.update(bytes, bytes);
  (void)pair.finish();
  pair.update(bytes, bytes);
  const auto again = pair.finish();
  CHECK(again[0] == Sha256::of(std::span<const std::uint8_t>(bytes)));
  CHECK(again[1] == again[0]);
  CHECK_THROWS_AS(pair.update(std::span(bytes.data(), 3), std::span(bytes.data(), 4)), std::invalid_argument);
}
