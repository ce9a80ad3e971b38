#include "disk/filesystem_probe.hpp"

#include <blkid.h>
#include <fcntl.h>

#include <cerrno>
#include <memory>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/permission_detail.hpp"

namespace aggrik8s {
namespace fs = std::filesystem;

namespace {

struct ProbeDeleter {
  void operator()(blkid_struct_probe* probe) const { blkid_free_probe(probe); }
};
using Probe = std::unique_ptr<blkid_struct_probe, ProbeDeleter>;

std::string range_name(const fs::path& image, std::uint64_t offset, std::uint64_t length) {
  return image.string() + " (bytes " + std::to_string(offset) + "+" + (length == 0 ? "end" : std::to_string(length)) + ")";
}

// The image stays open for the probe's lifetime: libblkid reads through the descriptor it is given.
Probe open_probe(const FileDescriptor& fd, const fs::path& image, std::uint64_t offset, std::uint64_t length) {
  Probe probe(blkid_new_probe());
  if (!probe) throw Error("libblkid: cannot allocate a probe for " + image.string());
  if (blkid_probe_set_device(probe.get(), fd.get(), static_cast<blkid_loff_t>(offset), static_cast<blkid_loff_t>(length)) != 0) {
    throw Error("libblkid cannot probe " + range_name(image, offset, length) + ": the range is outside the file or unreadable");
  }
  return probe;
}

FileDescriptor open_image(const fs::path& image) {
  FileDescriptor fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_file_error("cannot open " + image.string() + " to probe it", image, errno);
  return fd;
}

std::string lookup(const Probe& probe, const char* name) {
  const char* data = nullptr;
  std::size_t length = 0;
  if (blkid_probe_lookup_value(probe.get(), name, &data, &length) != 0 || data == nullptr) return "";
  // libblkid counts the terminating NUL in length.
  std::string value(data, length);
  while (!value.empty() && value.back() == '\0') value.pop_back();
  return value;
}

}  // namespace

ProbedFilesystem probe_filesystem(const fs::path& image, std::uint64_t offset, std::uint64_t length) {
  FileDescriptor fd = open_image(image);
  Probe probe = open_probe(fd, image, offset, length);
  blkid_probe_enable_superblocks(probe.get(), 1);
  // BADCSUM: a superblock whose checksum is wrong is still reported (SBBADCSUM=1) rather than
  // silently treated as "no filesystem", so inspect can say what is wrong with it.
  blkid_probe_set_superblocks_flags(probe.get(), BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID | BLKID_SUBLKS_LABEL |
                                                     BLKID_SUBLKS_VERSION | BLKID_SUBLKS_BADCSUM);
  blkid_probe_enable_partitions(probe.get(), 0);

  ProbedFilesystem result;
  int rc = blkid_do_safeprobe(probe.get());
  if (rc == -1) throw Error("libblkid failed to read " + range_name(image, offset, length));
  if (rc == -2) {
    // Ambivalent: list every signature, as `wipefs` would, instead of guessing one.
    blkid_reset_probe(probe.get());
    while (blkid_do_probe(probe.get()) == 0) {
      std::string type = lookup(probe, "TYPE");
      if (!type.empty()) result.ambiguous_types += (result.ambiguous_types.empty() ? "" : ", ") + type;
    }
    if (result.ambiguous_types.empty()) result.ambiguous_types = "(unnamed)";
    return result;
  }
  if (rc == 1) return result;
  result.type = lookup(probe, "TYPE");
  result.version = lookup(probe, "VERSION");
  result.uuid = lookup(probe, "UUID");
  result.label = lookup(probe, "LABEL");
  result.bad_checksum = lookup(probe, "SBBADCSUM") == "1";
  return result;
}

std::vector<ProbedPartition> probe_partitions(const fs::path& image) {
  FileDescriptor fd = open_image(image);
  Probe probe = open_probe(fd, image, 0, 0);
  blkid_probe_enable_superblocks(probe.get(), 0);
  blkid_probe_enable_partitions(probe.get(), 1);
  std::vector<ProbedPartition> found;
  blkid_partlist list = blkid_probe_get_partitions(probe.get());
  if (list == nullptr) return found;  // no partition table (or one libblkid does not know)
  // libblkid counts in 512-byte sectors for image files (they have no logical sector size of their own).
  constexpr std::uint64_t sector = 512;
  int count = blkid_partlist_numof_partitions(list);
  for (int i = 0; i < count; ++i) {
    blkid_partition partition = blkid_partlist_get_partition(list, i);
    if (partition == nullptr) continue;
    ProbedPartition p;
    p.number = static_cast<std::uint32_t>(blkid_partition_get_partno(partition));
    p.start_bytes = static_cast<std::uint64_t>(blkid_partition_get_start(partition)) * sector;
    p.size_bytes = static_cast<std::uint64_t>(blkid_partition_get_size(partition)) * sector;
    const char* uuid = blkid_partition_get_uuid(partition);
    if (uuid != nullptr) p.partuuid = uuid;
    found.push_back(p);
  }
  return found;
}

}  // namespace aggrik8s
