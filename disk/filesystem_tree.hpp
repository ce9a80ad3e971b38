#pragma once
// The whole tree of an ext4 filesystem, walked in a fixed order for writers that copy it into another
// format (disk/squashfs_writer: the RAM root of an ephemeral node; disk/tar_writer: a node's layer),
// with the edits a builder makes on the way out: subtrees left out, files replaced or added, without
// touching the ext4 image.
//
// The order is what makes the output reproducible: depth first, a directory before its contents,
// names in byte order (as std::string compares them: unsigned bytes), whatever order ext4's
// directory blocks (hash-ordered in htree directories) hold them in.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "disk/ext4_filesystem.hpp"

namespace aggrik8s {

struct FilesystemTreeEntry {
  // Absolute, "/" for the root directory.
  std::string path;
  Ext4FileType type = Ext4FileType::regular;
  // The low 12 mode bits: setuid, setgid and sticky included.
  std::uint16_t permissions = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  Ext4Timestamp mtime;
  // Regular files: bytes (holes included). Others: what ext4 records (a symlink's target length).
  std::uint64_t size = 0;
  std::string symlink_target;
  std::uint32_t device_major = 0;
  std::uint32_t device_minor = 0;
  // Sorted by name.
  std::vector<Ext4ExtendedAttribute> extended_attributes;
  // The ext4 inode number: names that share one are hard links of one file, and writers link them.
  // 0 for a file from FilesystemTreeSelection::replacements, which is never linked.
  std::uint32_t inode = 0;
  // Regular files: streams the data (see Ext4FileDataConsumer: gaps between pieces are holes).
  // Empty for other types.
  std::function<void(const Ext4FileDataConsumer&)> read_data;
};

// A regular file written in place of the ext4 file at its path, or added where there is none.
struct FilesystemTreeReplacement {
  std::string content{};
  std::uint16_t permissions = 0644;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  Ext4Timestamp mtime{};
};

struct FilesystemTreeSelection {
  // Absolute paths left out together with everything under them. A path that does not exist is
  // not an error (the same list serves several images).
  std::vector<std::string> exclude{};
  // Asked for every entry that is not excluded; false leaves out that entry alone: a directory's
  // contents are still walked (a tar layer can hold /etc/hostname without /etc, which the shared
  // root already has). A writer of a whole tree (squashfs) leaves out what lies under an entry it
  // did not get.
  std::function<bool(const FilesystemTreeEntry&)> include{};
  // Absolute path -> file. Replaces a file, symlink or special file (another hard link of it keeps
  // the original); adds the file when nothing is there. An error when a directory is in the way,
  // when the parent directory is not in the tree (missing, excluded, not a directory), or when the
  // path is excluded.
  std::map<std::string, FilesystemTreeReplacement> replacements{};
};

// Calls visit for each entry in the order described above. Errors name the path.
void walk_ext4_tree(const Ext4Filesystem& filesystem, const FilesystemTreeSelection& selection,
                    const std::function<void(const FilesystemTreeEntry&)>& visit);

// ---- pure path logic, unit-tested ----

// "/a/b" from "/a//b/", "/a/./b"; an Error naming `what` for a relative path, '..' or a NUL byte.
std::string normalize_tree_path(const std::string& path, const std::string& what);
// The directory holding path ("/" for "/etc"); path is normalized and not "/".
std::string parent_tree_path(const std::string& path);

}  // namespace aggrik8s
