#pragma once
// Buffers for O_DIRECT I/O: the kernel wants the memory, the offset and the length aligned to the
// device's logical block size (512 or 4096); 4096 satisfies both.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/huge_pages.hpp"

namespace aggrik8s {

constexpr std::size_t io_alignment = 4096;

struct AlignedBufferDeleter {
  void operator()(std::uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::uint8_t[], AlignedBufferDeleter>;

// Buffers of a MiB or more start on a huge page and are backed by transparent huge pages
// (core/huge_pages.hpp): the first touch of memory is what such a buffer costs, and on this
// paravirtualised VM the first pass over 80 MiB of flash buffers took 0.3-0.8 s in 4 KiB pages
// (memset: 770 ms) against 20-30 ms in 2 MiB pages; later passes cost the same either way.
// Zeroed unless `zeroed` is false: a buffer every used byte of which is read into first need not be
// (untouched, it faults in as the reader fills it, on the reader's thread).
inline AlignedBuffer allocate_aligned(std::size_t size, bool zeroed = true) {
  void* memory = allocate_on_huge_pages(size, io_alignment);
  if (zeroed) std::memset(memory, 0, size);
  return AlignedBuffer(static_cast<std::uint8_t*>(memory));
}

}  // namespace aggrik8s
