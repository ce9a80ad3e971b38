#pragma once
// Large buffers on transparent huge pages. On the paravirtualised development VMs the first touch of
// fresh memory is what a large buffer costs: each 4 KiB page faults in at 10-30 us, so 49 MiB took
// 0.33-0.36 s to touch and 0.011-0.025 s with madvise(MADV_HUGEPAGE) (2 MiB pages; docs/benchmarks.md,
// Talos and flash sections). Debian's default THP mode "madvise" gives huge pages only to memory that
// asks. The advice changes speed, never contents: where THP is off or the kernel says no, a buffer is
// an ordinary one in 4 KiB pages.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace aggrik8s {

constexpr std::size_t huge_page_size = std::size_t{2} << 20;

// Asks the kernel to back the whole pages inside [memory, memory + size) with huge pages, before they
// are first touched (pages already in place stay as they are). Advice only: never fails.
void advise_huge_pages(void* memory, std::size_t size);

// Memory for `size` bytes (at least 1), to be released with std::free. From half a huge page up it
// starts on a huge page, its length is rounded up to whole huge pages and it is advised onto them
// (below that, malloc's heap serves it and the advice would buy nothing); smaller buffers are aligned
// to `small_alignment` (a power of two, e.g. 4096 for O_DIRECT). Not zeroed. Throws Error when out of
// memory.
void* allocate_on_huge_pages(std::size_t size, std::size_t small_alignment);

// Reserves room for `size` bytes in `buffer` and, from 8 MiB up, advises the kernel to back the fresh
// storage (whole huge pages) with huge pages before its pages are first touched, its bytes included.
// Call it where a large buffer is about to be filled. The bytes are kept; a buffer that already has
// the room keeps its storage too.
void reserve_on_huge_pages(std::vector<std::uint8_t>& buffer, std::size_t size);

}  // namespace aggrik8s
