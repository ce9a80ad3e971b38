#pragma once
// The RKE2 bundle (rke2.linux-arm64.tar.gz) unpacked under /usr/local of a root filesystem, as
// RKE2's install.sh does (tar xzf -C /usr/local), in two steps:
//   - read_rke2_bundle lists the members, and for an uncompressed tar (the build keeps the bundle
//     decompressed in its cache) finds where each regular file's bytes sit in it and which of their
//     blocks are non-zero. It needs no filesystem, so a build runs it while the base is copied in.
//   - install_rke2_bundle makes the directories, symlinks and hard links, and places each such file
//     (Ext4Filesystem::place_file_from_host on its window of the tar): its blocks are allocated and
//     returned as copied ranges of the tar, which the build's writer copies into the image (past
//     the page cache) while the nodes are hashed, and which the hashing reads from the tar meanwhile.
//     Unpacked through libext2fs instead, RKE2's ~80 MiB of binaries were 0.3-0.35 s of the build's
//     critical path on this project's VMs, with the disk idle (docs/benchmarks.md).
// A member whose bytes are not a plain window of the file (a compressed tar, a sparse member) is read
// into memory and written as before.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "disk/copied_ranges.hpp"
#include "disk/ext4_filesystem.hpp"

namespace aggrik8s::builder {

struct Rke2BundleMember {
  enum class Kind { directory, regular, symlink, hard_link, other };
  Kind kind = Kind::other;
  std::string name;  // as the archive spells it (for messages)
  std::string path;  // where it goes: the prefix joined with the name, checked not to leave it
  std::uint16_t permissions = 0;
  std::int64_t mtime = 0;
  // A symlink's target; a hard link's: the path (under the prefix) of the file it is another name of.
  std::string link_target;
  std::uint64_t size = 0;
  // A regular file's bytes: its window of the tar, scanned; otherwise `content`.
  std::optional<Ext4HostFileScan> window;
  std::vector<std::uint8_t> content;
};

struct Rke2Bundle {
  std::filesystem::path tarball;
  std::vector<Rke2BundleMember> members;
  // Bytes the members take once unpacked: each rounded up to a 4 KiB block, plus one for its inode
  // and directory entry (a bound for sizing the root filesystem, not an exact count).
  std::uint64_t unpacked_bytes = 0;
};

// Throws Error naming the tarball for an archive that cannot be read, and for a member whose name
// would land outside `prefix` (absolute, or climbing with ..). `block_size`: the root filesystem's
// (a scan made with another is not used: the file is read again when placed).
Rke2Bundle read_rke2_bundle(const std::filesystem::path& tarball, const std::string& prefix, std::uint64_t block_size);

// Installs the members in archive order, owned by root (install.sh unpacks as root, whatever the
// archive says), with mtimes pinned to fixed_time when set. Files placed from the tar are appended
// to `copied` as ranges of `device_offset` + where the filesystem put them, of file `file` of the
// caller's CopiedFiles (the tarball); returns whether any were.
bool install_rke2_bundle(Ext4Filesystem& rootfs, const Rke2Bundle& bundle, std::optional<std::int64_t> fixed_time,
                         std::uint64_t device_offset, std::size_t file, std::vector<CopiedRange>& copied);

}  // namespace aggrik8s::builder
