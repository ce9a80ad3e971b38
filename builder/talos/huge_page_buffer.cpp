#include "builder/talos/huge_page_buffer.hpp"

#include <sys/mman.h>
#include <unistd.h>

namespace aggrik8s::builder {

void reserve_on_huge_pages(std::vector<std::uint8_t>& buffer, std::size_t size) {
  // Below a few huge pages the advice buys nothing (and malloc serves such sizes from its heap).
  constexpr std::size_t worth_advising = std::size_t{8} << 20;
  if (size < worth_advising) {
    buffer.reserve(size);
    return;
  }
  bool fresh = buffer.capacity() < size;
  buffer.reserve(size);
  if (!fresh) return;  // its pages are in place already
  auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto start = reinterpret_cast<std::uintptr_t>(buffer.data());
  std::uintptr_t first = (start + page - 1) / page * page;
  std::uintptr_t end = (start + buffer.capacity()) / page * page;
  // Advice only: a kernel without THP (EINVAL) leaves the buffer as it is.
  if (end > first) ::madvise(reinterpret_cast<void*>(first), end - first, MADV_HUGEPAGE);
}

}  // namespace aggrik8s::builder
