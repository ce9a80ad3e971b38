#pragma once
// Large byte buffers (a ~50 MiB UKI, the EFI partition's FAT image) on transparent huge pages.
// Faulting in fresh memory 4 KiB at a time is what the Talos build's UKI and partition steps cost on
// the development VMs: 49 MiB took 0.33-0.36 s to touch with 4 KiB pages and 0.011-0.025 s with
// madvise(MADV_HUGEPAGE) (docs/benchmarks.md, Talos section). Where THP is off or the kernel says no,
// the buffer is an ordinary one: the advice changes speed, never contents.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace aggrik8s::builder {

// Reserves room for `size` bytes in `buffer` and, before those pages are first touched, advises the
// kernel to back them with huge pages. Call it where a large buffer is about to be filled.
void reserve_on_huge_pages(std::vector<std::uint8_t>& buffer, std::size_t size);

}  // namespace aggrik8s::builder
