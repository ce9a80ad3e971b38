// reserve_on_huge_pages only changes where a buffer's pages come from, never what it holds.
#include <catch2/catch.hpp>

#include "builder/talos/huge_page_buffer.hpp"

using namespace aggrik8s::builder;

TEST_CASE("huge pages: a reserved buffer holds what is put in it, small or large, fresh or reused", "[talos][huge pages]") {
  for (std::size_t size : {std::size_t{0}, std::size_t{4096}, std::size_t{9} << 20, std::size_t{33} << 20}) {
    std::vector<std::uint8_t> buffer;
    reserve_on_huge_pages(buffer, size);
    CHECK(buffer.capacity() >= size);
    CHECK(buffer.empty());
    buffer.resize(size);
    for (std::size_t i = 0; i < size; i += 4093) buffer[i] = static_cast<std::uint8_t>(i * 31);
    for (std::size_t i = 0; i < size; i += 4093) CHECK(buffer[i] == static_cast<std::uint8_t>(i * 31));
  }
  // A buffer with room already keeps its bytes and its storage.
  std::vector<std::uint8_t> reused(10 << 20, 0xab);
  const std::uint8_t* storage = reused.data();
  reserve_on_huge_pages(reused, 9 << 20);
  CHECK(reused.data() == storage);
  CHECK(reused.size() == std::size_t{10} << 20);
  CHECK(reused[12345] == 0xab);
}
