// The huge-page helpers only change where a buffer's pages come from, never what it holds.
#include "core/huge_pages.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <memory>

using namespace aggrik8s;

TEST_CASE("huge pages: a reserved buffer holds what is put in it, small or large, fresh or reused", "[core][huge pages]") {
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

TEST_CASE("huge pages: a large buffer that grows keeps its bytes, and gets whole huge pages so a few more bytes fit without moving again", "[core][huge pages]") {
  // The Talos build's .initrd scratch: refilled for every node with a slightly different size.
  std::vector<std::uint8_t> buffer((std::size_t{9} << 20) + 5);
  for (std::size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<std::uint8_t>(i * 13 + 1);
  const std::size_t old_size = buffer.size();
  reserve_on_huge_pages(buffer, (std::size_t{12} << 20) + 1);
  CHECK(buffer.capacity() == std::size_t{14} << 20);
  REQUIRE(buffer.size() == old_size);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < buffer.size(); ++i) wrong += buffer[i] != static_cast<std::uint8_t>(i * 13 + 1);
  CHECK(wrong == 0);
  const std::uint8_t* storage = buffer.data();
  reserve_on_huge_pages(buffer, (std::size_t{12} << 20) + 4096);
  CHECK(buffer.data() == storage);
  // Below 8 MiB a buffer grows as std::vector::reserve grows it, bytes kept as well.
  std::vector<std::uint8_t> small(1000, 0x42);
  reserve_on_huge_pages(small, 5000);
  CHECK(small.capacity() >= 5000);
  CHECK(std::count(small.begin(), small.end(), 0x42) == 1000);
}

TEST_CASE("huge pages: allocations from half a huge page up start on one and are usable to the end, smaller ones keep their alignment", "[core][huge pages]") {
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{65537}, std::size_t{1} << 20,
                           (std::size_t{8} << 20) + 8192}) {
    INFO("size " << size);
    std::unique_ptr<std::uint8_t, decltype(&std::free)> memory(static_cast<std::uint8_t*>(allocate_on_huge_pages(size, 4096)), &std::free);
    REQUIRE(memory != nullptr);
    const std::size_t alignment = size >= huge_page_size / 2 ? huge_page_size : 4096;
    CHECK(reinterpret_cast<std::uintptr_t>(memory.get()) % alignment == 0);
    for (std::size_t i = 0; i < size; ++i) memory.get()[i] = static_cast<std::uint8_t>(i * 7);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < size; ++i) wrong += memory.get()[i] != static_cast<std::uint8_t>(i * 7);
    CHECK(wrong == 0);
  }
}

TEST_CASE("huge pages: advice on any range, aligned or not, leaves the bytes alone", "[core][huge pages]") {
  std::vector<std::uint8_t> bytes((std::size_t{5} << 20) + 123, 0x5a);
  advise_huge_pages(bytes.data() + 17, bytes.size() - 17);
  advise_huge_pages(bytes.data(), 100);  // less than a page: nothing to advise
  advise_huge_pages(nullptr, 0);
  CHECK(std::count(bytes.begin(), bytes.end(), 0x5a) == static_cast<std::ptrdiff_t>(bytes.size()));
}
