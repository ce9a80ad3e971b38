#include "disk/aligned_buffer.hpp"

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>

using namespace aggrik8s;

namespace {

std::size_t count_non_zero(const AlignedBuffer& buffer, std::size_t size) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < size; ++i) count += buffer[i] != 0;
  return count;
}

bool aligned_to(const AlignedBuffer& buffer, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(buffer.get()) % alignment == 0;
}

}  // namespace

TEST_CASE("aligned buffer: small buffers are aligned for O_DIRECT and zeroed when asked") {
  for (std::size_t size : {1u, 512u, 4095u, 4096u, 65537u}) {
    INFO("size " << size);
    AlignedBuffer buffer = allocate_aligned(size);
    CHECK(aligned_to(buffer, io_alignment));
    CHECK(count_non_zero(buffer, size) == 0);
  }
}

TEST_CASE("aligned buffer: buffers of a MiB and more start on a huge page, zeroed when asked, usable to the end") {
  for (std::size_t size : {std::size_t{1} << 20, std::size_t{4} << 20, (std::size_t{8} << 20) + 2 * io_alignment}) {
    INFO("size " << size);
    AlignedBuffer zeroed = allocate_aligned(size);
    CHECK(aligned_to(zeroed, huge_page_size));
    CHECK(count_non_zero(zeroed, size) == 0);
    // Not zeroed: every byte can still be written and read back (the rounding never cuts the end).
    AlignedBuffer raw = allocate_aligned(size, false);
    CHECK(aligned_to(raw, huge_page_size));
    for (std::size_t i = 0; i < size; ++i) raw[i] = static_cast<std::uint8_t>(i * 7);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < size; ++i) wrong += raw[i] != static_cast<std::uint8_t>(i * 7);
    CHECK(wrong == 0);
  }
}
