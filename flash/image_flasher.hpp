#pragma once
// Writes a disk image onto a target (an SD card, an NVMe or USB drive, a loop device, or a regular
// file) and proves it got there. The order of operations is the safety design:
//
//  1. Zero the target's first MiB (so the card stops looking bootable at once) and, on a block
//     device, its last MiB (a stale GPT backup header there makes firmware and parted believe an old
//     partition table). Flush.
//  2. Stream the image through threads joined by bounded queues of aligned buffers, so decoding,
//     checking and device I/O overlap: a reader (decompression, zero-block detection), with a bmap
//     a checksum stage (each range's sha256; the last buffer of a range that does not match is
//     never passed on), and several writers (an XXH3-64 digest of every piece, then the write), each
//     writing whole buffers to disjoint ranges, so that several requests are in flight (a virtual
//     disk, NVMe or a loop device over a file writes far faster so than one request at a time).
//     Writes use O_DIRECT where the target allows it: the data goes to the device instead of
//     filling the page cache (which on a 16 GiB card would evict everything else and make the
//     final flush take as long as the whole write); a drive that caches direct writes is asked to
//     flush every 64 MiB in the background, so the final flush has little left. The image's first
//     MiB (MBR or protective MBR + GPT header, the boot sector) is held in memory, not written.
//  3. Verify, overlapped with step 2: after every 8 MiB written, a hand-over stage (with no O_DIRECT:
//     after a flush) passes what was written to one of two verifier threads,
//     which reads it back while writing goes on, bypassing the page cache (O_DIRECT, or
//     POSIX_FADV_DONTNEED after fdatasync), and compares it with the digests the writers took.
//     A read served from the page cache would only prove that memory holds what we wrote; the
//     device (a fake-capacity card, a failing flash chip) is what is tested.
//  4. Per-node edits of the boot partition (hostname, SSH keys, files), still before step 5.
//  5. Write the held first MiB LAST, after the flush, then flush and verify it too. Until this
//     moment the target has no partition table, so a flash interrupted at any earlier point (cable
//     pulled, process killed, verify mismatch) never leaves a card that boots half an image.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "disk/block_device.hpp"
#include "disk/bmap.hpp"
#include "disk/image_stream.hpp"

namespace aggrik8s {

// The part of the image held back and written last (see above). 1 MiB covers the MBR, a GPT's
// primary header and entries, and the alignment gap before the first partition of every Pi image.
inline constexpr std::uint64_t flash_first_block_size = 1 << 20;

struct FlashOptions {
  bool verify = true;
  // Written only where the bmap maps blocks (bmap given) or where the image holds non-zero 4 KiB
  // blocks (no bmap): old data stays in the rest, exactly as bmaptool leaves it.
  // 4 MiB requests are large for every device (the kernel splits them to the device's own limit);
  // the buffers' memory is what costs: a page's first touch is slow on a VM (see
  // disk/aligned_buffer.hpp), so 8 x 4 MiB (32 MiB to touch) rather than 10 x 8 MiB. Buffers of 2,
  // 4 and 8 MiB gave the same times within noise on this VM's loop device (5 rounds each).
  std::size_t buffer_size = 4 << 20;
  // Buffers between reader and writers (raised to write_requests + 2 if lower, so the reader is
  // never starved while every writer holds one).
  unsigned buffer_count = 8;
  // Writes in flight at once (one buffer each, disjoint ranges): a virtual disk, an NVMe drive or a
  // loop device over a file writes several requests in parallel far faster than one after another.
  // 1 restores strictly sequential writes.
  unsigned write_requests = 4;
  // Threads checking the bmap's range sha256s (each takes whole ranges, in turn). sha256 is the
  // costliest work per byte (~1.7 GB/s per core here, where the writes run at ~1 GB/s); with two,
  // it no longer holds up the writers on two cores.
  unsigned check_threads = 2;
  // Verification works in batches: the writers' output is handed to the read-back every this many
  // bytes (flushed first only without O_DIRECT) and read back while writing goes on (see step 3
  // above), by this many requests in flight at once (each reads whole batches). Smaller batches
  // shorten what is left to read after the last write: with O_DIRECT a batch costs nothing but a
  // queue entry, so it is two buffers (was 32 MiB, when every batch was flushed first). Two readers
  // keep the read-back from falling behind while the writers and checkers share the cores (on this
  // VM's loop device, 1 GiB: 1.10-1.20 s against 1.13-1.43 s with one reader and 128 MiB).
  std::uint64_t verify_batch_bytes = 8 << 20;
  unsigned verify_requests = 2;
  // With O_DIRECT: a flush is started in the background every this many bytes written, so a drive
  // with a write cache (NVMe, a virtual disk, a loop device over a file) writes out while writing
  // goes on instead of all at the final flush (which took 0.2-0.25 s after 377 MiB to this VM's loop
  // device, and ~0.01 s with this). It adds flushes; none is removed.
  std::uint64_t flush_ahead_bytes = 64 << 20;
  // Test-only: called when a batch is handed to the read-back and before it is read, once for every stretch
  // of the target written in it, so a test can change a byte there as a failing card would. (Not the
  // batch's overall span: writers and checkers finish out of order, so a batch may have gaps that
  // are written later.)
  std::function<void(std::uint64_t from, std::uint64_t to)> before_read_back;
  // Test-only: the writers sleep this long after each buffer (one writer at a time, so the pace
  // does not depend on write_requests), so a test can kill a flash mid-way.
  // The CLI sets it from AGGRIK8S_FLASH_TEST_DELAY_MS.
  std::chrono::milliseconds test_delay_per_buffer{0};
  // Step 4 above: edits the image through a view of the target in which the not-yet-written first
  // MiB is served from memory. Whatever it writes is on the target (or in the held first MiB)
  // before the commit.
  std::function<void(BlockDevice& staged_target)> customize;
  // After the commit: called with a read-only view of the target whose page cache was dropped, to
  // read back what `customize` wrote. Throws Error on a mismatch.
  std::function<void(BlockDevice& written_target)> check_customization;
};

struct FlashResult {
  std::uint64_t image_size = 0;
  std::uint64_t bytes_written = 0;   // image bytes sent to the target (mapped data + first MiB)
  std::uint64_t bytes_verified = 0;  // bytes read back and compared
  std::uint64_t target_size = 0;
  bool target_is_block_device = false;
  bool direct_io = false;  // O_DIRECT was used for the bulk of the writes
  bool used_bmap = false;
  double write_seconds = 0;   // steps 1-2 and the flush
  unsigned flushes_ahead = 0;  // background flushes while writing (FlashOptions::flush_ahead_bytes)
  // What verification added after the last write: step 3 overlaps the write (verifier threads read
  // each batch back while writing goes on), so this is the read-back of the last batch, the final
  // flush and steps 4-5.
  double verify_seconds = 0;
  double total_seconds = 0;
};

// Writes `source` to `target`. `bmap`, when given, must describe this image (its size is checked
// against a raw source; range checksums are checked as the source is read). A regular-file target is
// created if missing and becomes a sparse copy of the image (truncated to the image's size, as
// bmaptool does). Throws Error with a message that names the failure: short write, device vanished,
// permission denied, verify mismatch (with the offset), source checksum mismatch (with the range),
// image larger than the target.
FlashResult flash_image(ImageStream& source, const Bmap* bmap, const std::filesystem::path& target,
                        const FlashOptions& options = {});

// For messages after a failed write: what errno means for someone holding an SD card.
// `target_still_present` is whether the device node still exists.
std::string describe_target_io_error(const std::string& target, const std::string& operation, std::uint64_t offset,
                                     int error_number, bool target_still_present);

}  // namespace aggrik8s
