#include "core/sha256_lane.hpp"

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

std::span<const std::uint8_t> piece_of(const std::vector<std::uint8_t>& bytes, std::size_t at, std::size_t n) {
  return std::span(bytes.data() + at, n);
}

}  // namespace

// Every length around the padding's edges (55/56/63/64 bytes into a block) and larger ones, fed in
// pieces of every awkward size, alone and in pairs, gives OpenSSL's digest of each message, with the
// SHA extensions where this CPU has them and without.
TEST_CASE("sha256 lane: messages hashed alone or two together give each one's own sha256") {
  // automatic is the portable code again where the CPU lacks the extensions: say so in the output.
  if (!Sha256Lane::accelerated()) WARN("no SHA extensions on this CPU: the interleaved code is not tested here");
  for (auto implementation : {Sha256Lane::Implementation::automatic, Sha256Lane::Implementation::portable}) {
    for (std::size_t size : std::initializer_list<std::size_t>{0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 100003}) {
      const auto first = random_bytes(size, size);
      const auto second = random_bytes(size, size + 7777);
      for (std::size_t piece : std::initializer_list<std::size_t>{1, 3, 64, 65, 4096, 1 << 20}) {
        INFO("size " << size << ", pieces of " << piece);
        Sha256Lane a(implementation);
        Sha256Lane b(implementation);
        Sha256Lane alone(implementation);
        for (std::size_t at = 0; at < size; at += piece) {
          const std::size_t n = std::min(piece, size - at);
          Sha256Lane::update_pair(a, piece_of(first, at, n), b, piece_of(second, at, n));
          alone.update(piece_of(first, at, n));
        }
        CHECK(a.finish() == Sha256::of(std::span<const std::uint8_t>(first)));
        CHECK(b.finish() == Sha256::of(std::span<const std::uint8_t>(second)));
        CHECK(alone.finish() == Sha256::of(std::span<const std::uint8_t>(first)));
      }
    }
  }
}

// How several images are hashed on fewer cores: a lane goes on alone for a while, then pairs with
// another lane that is elsewhere in its message (even mid-block), and the pairs change.
TEST_CASE("sha256 lane: lanes at different points of their messages pair up and part again") {
  const auto first = random_bytes(50000, 1);
  const auto second = random_bytes(50000, 2);
  const auto third = random_bytes(50000, 3);
  for (auto implementation : {Sha256Lane::Implementation::automatic, Sha256Lane::Implementation::portable}) {
    std::array<Sha256Lane, 3> lanes{Sha256Lane(implementation), Sha256Lane(implementation), Sha256Lane(implementation)};
    const std::array<const std::vector<std::uint8_t>*, 3> messages{&first, &second, &third};
    std::array<std::size_t, 3> at{};
    auto alone = [&](std::size_t lane, std::size_t n) {
      lanes[lane].update(piece_of(*messages[lane], at[lane], n));
      at[lane] += n;
    };
    auto together = [&](std::size_t x, std::size_t y, std::size_t n) {
      Sha256Lane::update_pair(lanes[x], piece_of(*messages[x], at[x], n), lanes[y], piece_of(*messages[y], at[y], n));
      at[x] += n;
      at[y] += n;
    };
    alone(2, 100);         // lane 2 ahead, mid-block
    together(0, 1, 4096);  // 0 and 1 level, on block boundaries
    together(1, 2, 777);   // 1 on a boundary, 2 mid-block
    alone(0, 13);
    together(2, 0, 6400);  // both mid-block, at different points
    together(0, 1, 3);     // too few bytes to complete either's block
    for (std::size_t lane = 0; lane < 3; ++lane) alone(lane, messages[lane]->size() - at[lane]);
    for (std::size_t lane = 0; lane < 3; ++lane) {
      INFO("lane " << lane);
      CHECK(lanes[lane].finish() == Sha256::of(std::span<const std::uint8_t>(*messages[lane])));
    }
  }
  Sha256Lane a;
  Sha256Lane b;
  // A finished lane starts again.
  a.update(piece_of(first, 0, 300));
  (void)a.finish();
  a.update(piece_of(first, 0, 300));
  CHECK(a.finish() == Sha256::of(piece_of(first, 0, 300)));
  CHECK_THROWS_AS(Sha256Lane::update_pair(a, piece_of(first, 0, 3), b, piece_of(first, 0, 4)), std::invalid_argument);
}
