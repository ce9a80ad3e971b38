#include "disk/zero_detection.hpp"

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

using namespace aggrik8s;

TEST_CASE("zero detection: empty, one byte and odd lengths") {
  CHECK(is_all_zero(std::span<const std::uint8_t>()));
  std::vector<std::uint8_t> one{0};
  CHECK(is_all_zero(one));
  one[0] = 1;
  CHECK_FALSE(is_all_zero(one));
  for (std::size_t length : {3u, 7u, 63u, 4095u, 4097u, 12289u}) {
    std::vector<std::uint8_t> bytes(length, 0);
    CHECK(is_all_zero(bytes));
    bytes.back() = 0x80;
    CHECK_FALSE(is_all_zero(bytes));
  }
}

TEST_CASE("zero detection: a non-zero byte anywhere in a small buffer is found") {
  std::vector<std::uint8_t> bytes(257, 0);
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    bytes[at] = 1;
    INFO("non-zero byte at " << at);
    CHECK_FALSE(is_all_zero(bytes));
    // Only the span that holds the byte sees it.
    CHECK(is_all_zero(std::span<const std::uint8_t>(bytes).first(at)));
    CHECK(is_all_zero(std::span<const std::uint8_t>(bytes).subspan(at + 1)));
    bytes[at] = 0;
  }
  CHECK(is_all_zero(bytes));
}

TEST_CASE("zero detection: large buffers, across the 4 KiB comparison blocks") {
  std::vector<std::uint8_t> bytes((4 << 20) + 5, 0);
  CHECK(is_all_zero(bytes));
  for (std::size_t at : {std::size_t{4095}, std::size_t{4096}, std::size_t{1} << 20, bytes.size() - 1}) {
    bytes[at] = 0xff;
    INFO("non-zero byte at " << at);
    CHECK_FALSE(is_all_zero(bytes));
    bytes[at] = 0;
  }
}

TEST_CASE("zero detection: std::byte spans") {
  std::vector<std::byte> bytes(100, std::byte{0});
  CHECK(is_all_zero(std::span<const std::byte>(bytes)));
  bytes[99] = std::byte{2};
  CHECK_FALSE(is_all_zero(std::span<const std::byte>(bytes)));
}
