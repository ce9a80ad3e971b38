#pragma once
// Buffers for O_DIRECT I/O: the kernel wants the memory, the offset and the length aligned to the
// device's logical block size (512 or 4096); 4096 satisfies both.
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "core/error.hpp"

namespace aggrik8s {

constexpr std::size_t io_alignment = 4096;

struct AlignedBufferDeleter {
  void operator()(std::uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::uint8_t[], AlignedBufferDeleter>;

// Buffers of a MiB or more are aligned to, and rounded up to, this and asked to be backed by
// transparent huge pages (MADV_HUGEPAGE: Debian's default THP mode "madvise" gives huge pages only to
// memory that asks). The first touch of memory is what such a buffer costs: on this paravirtualised
// VM each 4 KiB page faults in at 10-30 us, so the first pass over 80 MiB of flash buffers took
// 0.3-0.8 s (memset: 770 ms) against 20-30 ms in 2 MiB pages; later passes cost the same either way.
constexpr std::size_t huge_page_size = 2 << 20;

// Zeroed unless `zeroed` is false: a buffer every used byte of which is read into first need not be
// (untouched, it faults in as the reader fills it, on the reader's thread).
inline AlignedBuffer allocate_aligned(std::size_t size, bool zeroed = true) {
  size = std::max<std::size_t>(size, 1);
  const bool large = size >= huge_page_size / 2;
  const std::size_t alignment = large ? huge_page_size : io_alignment;
  std::size_t rounded = (size + alignment - 1) / alignment * alignment;
  void* memory = std::aligned_alloc(alignment, rounded);
  if (memory == nullptr) throw Error("out of memory for " + std::to_string(size) + " bytes of I/O buffer");
  // Advice only: without THP (or with it "never") the buffer is in 4 KiB pages, as before.
  if (large) ::madvise(memory, rounded, MADV_HUGEPAGE);
  if (zeroed) std::memset(memory, 0, size);
  return AlignedBuffer(static_cast<std::uint8_t*>(memory));
}

}  // namespace aggrik8s
