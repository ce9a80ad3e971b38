#include "core/huge_pages.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/error.hpp"

namespace aggrik8s {

void advise_huge_pages(void* memory, std::size_t size) {
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto start = reinterpret_cast<std::uintptr_t>(memory);
  std::uintptr_t first = (start + page - 1) / page * page;
  std::uintptr_t end = (start + size) / page * page;
  // Advice only: a kernel without THP (EINVAL) leaves the memory as it is.
  if (end > first) ::madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE);
}

void* allocate_on_huge_pages(std::size_t size, std::size_t small_alignment) {
  size = std::max<std::size_t>(size, 1);
  const bool large = size >= huge_page_size / 2;
  const std::size_t alignment = large ? huge_page_size : small_alignment;
  // aligned_alloc wants a multiple of the alignment; rounding a large buffer to whole huge pages also
  // keeps its last partial page from being a 4 KiB one.
  const std::size_t rounded = (size + alignment - 1) / alignment * alignment;
  void* memory = std::aligned_alloc(alignment, rounded);
  if (memory == nullptr) throw Error("out of memory for a buffer of " + std::to_string(size) + " bytes");
  if (large) advise_huge_pages(memory, rounded);
  return memory;
}

void reserve_on_huge_pages(std::vector<std::uint8_t>& buffer, std::size_t size) {
  if (buffer.capacity() >= size) return;  // its storage, bytes and pages stay as they are
  // Below a few huge pages the advice buys nothing (and malloc serves such sizes from its heap).
  constexpr std::size_t worth_advising = std::size_t{8} << 20;
  if (size < worth_advising) {
    buffer.reserve(size);
    return;
  }
  // Whole huge pages: a scratch refilled with a few bytes more each time (a UKI's .initrd and one
  // node's archive) grows again only when it crosses a page, not at every new largest size.
  const std::size_t rounded = (size + huge_page_size - 1) / huge_page_size * huge_page_size;
  // The new storage is advised before the old bytes are copied into it: std::vector::reserve copies
  // first, into 4 KiB pages, which cost a 20-node Talos build ~18k page faults (docs/benchmarks.md).
  std::vector<std::uint8_t> grown;
  grown.reserve(rounded);
  advise_huge_pages(grown.data(), grown.capacity());
  grown.insert(grown.end(), buffer.begin(), buffer.end());
  buffer.swap(grown);
}

}  // namespace aggrik8s
