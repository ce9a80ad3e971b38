// libFuzzer target for the MBR and GPT readers: the input is the start of a disk image (see
// SparseFuzzDevice; the disk's size comes from the first input byte, so the GPT backup header can sit
// inside the input). Every disk either reads or throws aggrik8s::Error. A table that reads is written
// back to a fresh disk of the same size and must read again with the same partitions, and the edits a
// build makes (resize to fill, new disk size) either work or throw Error.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "disk/partition_table.hpp"
#include "core/error.hpp"
#include "tests/fuzz/fuzz_block_device.hpp"

using namespace aggrik8s;

namespace {

bool same_partitions(const PartitionTable& a, const PartitionTable& b) {
  if (a.kind() != b.kind() || a.partitions().size() != b.partitions().size()) return false;
  for (std::size_t i = 0; i < a.partitions().size(); ++i) {
    const auto& x = a.partitions()[i];
    const auto& y = b.partitions()[i];
    if (x.index != y.index || x.first_lba != y.first_lba || x.sector_count != y.sector_count || x.mbr_type != y.mbr_type ||
        !(x.gpt_type == y.gpt_type) || !(x.gpt_unique == y.gpt_unique) || x.gpt_name != y.gpt_name) {
      return false;
    }
  }
  return a.disk_identifier() == b.disk_identifier();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  // Byte 0 picks the disk size in 512-byte sectors beyond the input (0..255 KiB more); the rest is the
  // disk's first bytes. Sizes stay small and sector-aligned so the round trip below is cheap.
  std::uint64_t disk_bytes = ((size - 1 + 511) / 512 + data[0]) * 512ull;
  fuzz::SparseFuzzDevice device(data + 1, size - 1, disk_bytes, "disk.img");
  PartitionTable table = PartitionTable::new_mbr(512 * 2, 0, "unused");
  try {
    table = read_partition_table(device);
  } catch (const Error&) {
    return 0;
  }
  for (const auto& entry : table.partitions()) {
    (void)table.partuuid(entry.index);
    if (entry.end_lba() > table.disk_sectors()) std::abort();  // validation let a partition run off the disk
  }

  fuzz::SparseFuzzDevice copy(nullptr, 0, device.size(), "copy.img");
  write_partition_table(copy, table);  // an Error here escapes: a table we accepted must be writable
  PartitionTable again = read_partition_table(copy);
  if (!same_partitions(table, again)) std::abort();

  if (!table.partitions().empty()) {
    try {
      table.grow_partition_to_fill(table.partitions().back().index);
      table.set_disk_size(device.size() + 1024 * 512);
    } catch (const Error&) {
    }
  }
  return 0;
}
