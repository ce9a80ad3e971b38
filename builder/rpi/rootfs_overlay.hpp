#pragma once
// Overlays: directory trees on the build host, copied into a node's ext4 root filesystem as trees.
//
// A tree is read with lstat/readlink only, never following a symlink, so what lands in the image is
// the overlay and nothing else of the build host: a symlink stays a symlink with its target text as
// written (absolute, relative, dangling, or leading outside the overlay — it is resolved on the node,
// not here); names of one host file become names of one image inode; empty directories are kept; the
// low 12 mode bits (setuid, setgid, sticky included) are kept; owner and group are root (0:0). Regular
// files whose name ends in ".tmpl" are templated and written without the suffix (see docs/profiles.md,
// "Overlays"). Reading a tree checks it first, so a tree the image cannot hold is refused before
// anything is written: FIFOs, sockets and device nodes, a file named just ".tmpl", a template whose
// name without the suffix is also another entry of the same directory, and anything below the
// mount point of the FAT boot partition (it would be hidden by the mount, and FAT has no symlinks,
// hard links or modes).
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s {
class Ext4Filesystem;
}

namespace aggrik8s::builder {

struct OverlayEntry {
  enum class Kind { directory, regular_file, symlink, hard_link };
  Kind kind = Kind::regular_file;
  std::filesystem::path source;  // on the build host
  std::string target;            // absolute path in the root filesystem
  std::uint16_t permissions = 0;  // low 12 mode bits; directories and regular files
  // symlink: the link's text, byte for byte; hard_link: the target of the entry written first for
  // the same host file (an earlier regular_file entry of the same tree).
  std::string link;
  bool templated = false;      // regular_file from "NAME.tmpl"
  std::uint64_t size = 0;      // regular_file: bytes on the host (before templating)
  std::uint64_t data_bytes = 0;  // regular_file: bytes outside holes (SEEK_DATA): holes stay holes in the image
  bool has_children = false;   // directory: the overlay puts something in it
};

// The entries of the overlay tree at dir in the order they are written: depth first, the names of a
// directory in byte order, a directory before what it holds. Throws an Error naming the overlay and
// the entry for what an image cannot hold (see above; boot mount: require_outside_boot_mount).
std::vector<OverlayEntry> read_overlay_tree(const std::filesystem::path& dir);

// Refuses entries at or below boot_mount (where the node mounts its FAT boot partition), except the
// mount point itself as a directory.
void require_outside_boot_mount(const std::vector<OverlayEntry>& entries, const std::filesystem::path& dir,
                                const std::string& boot_mount);
// The same for where each entry lands in `rootfs` once the symbolic links already in the image (the
// base's, or an earlier overlay's) are followed: /opt/esc -> /boot/firmware makes opt/esc/x such an entry.
void require_outside_boot_mount(const Ext4Filesystem& rootfs, const std::vector<OverlayEntry>& entries,
                                const std::filesystem::path& dir, const std::string& boot_mount);

// Bytes the overlays may take in the root filesystem: data rounded to 4 KiB blocks plus a block per
// entry (inode, directory entry, long symlink target), plus a margin for templated files to grow.
std::uint64_t overlay_space_needed(const std::vector<std::filesystem::path>& overlays);

// Renders a template: every `{{NAME}}` or `{{ NAME }}` (exactly one space on each side) whose NAME is
// a key of values becomes its value, in one pass (inserted values are not scanned again). Anything
// else stays as it is; names that look like variables but are unknown are added to *unknown.
std::string render_overlay_template(std::string_view text, const std::map<std::string, std::string>& values,
                                    std::vector<std::string>* unknown = nullptr);

// Copies the overlays, in order (a later overlay replaces what an earlier one wrote at the same
// path), into rootfs. Directories that already exist in the image keep their mode and owner; a
// file or symlink replaces a non-directory at its path. Every timestamp is fixed_time when given.
// Returns one line per entry written, for the build's list of changes.
std::vector<std::string> install_overlays(Ext4Filesystem& rootfs, const std::vector<std::filesystem::path>& overlays,
                                          const std::map<std::string, std::string>& values,
                                          std::optional<std::int64_t> fixed_time, const std::string& boot_mount);

}  // namespace aggrik8s::builder
