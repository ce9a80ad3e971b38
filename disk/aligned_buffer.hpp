#pragma once
// Buffers for O_DIRECT I/O: the kernel wants the memory, the offset and the length aligned to the
// device's logical block size (512 or 4096); 4096 satisfies both.
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

// Zeroed unless `zeroed` is false: a buffer every used byte of which is read into first need not be
// (zeroing 80 MiB of flash buffers up front cost ~0.13 s of page faults on this VM before the first
// write; untouched, they fault in as the reader fills them, on its thread).
inline AlignedBuffer allocate_aligned(std::size_t size, bool zeroed = true) {
  std::size_t rounded = (std::max<std::size_t>(size, 1) + io_alignment - 1) / io_alignment * io_alignment;
  void* memory = std::aligned_alloc(io_alignment, rounded);
  if (memory == nullptr) throw Error("out of memory for " + std::to_string(size) + " bytes of I/O buffer");
  if (zeroed) std::memset(memory, 0, size);
  return AlignedBuffer(static_cast<std::uint8_t*>(memory));
}

}  // namespace aggrik8s
