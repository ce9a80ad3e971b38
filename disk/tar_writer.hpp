#pragma once
// A tar archive of an ext4 tree (or the part a selection keeps): a node's layer of files on top of the
// shared RAM root of an ephemeral node, unpacked by the node's initramfs (busybox tar) into its
// overlay. Written with libarchive in the pax-restricted format: plain ustar headers, plus a pax
// header only where ustar cannot say it (long names, large ids, extended attributes as
// SCHILY.xattr.*, which GNU tar and libarchive read; busybox tar skips them).
//
// Owners are numeric only (no user or group names: the node's /etc/passwd decides). mtimes are whole
// seconds (the squashfs root has no finer ones either, and a sub-second time would cost a pax header
// per file). Hard links become link entries to the first name written. Sparse files are written
// whole, holes as zeros: busybox tar does not know GNU's sparse pax extensions and would unpack the
// sparse map as data. Same tree and selection, same bytes.
#include <cstdint>
#include <filesystem>
#include <string>

#include "disk/ext4_filesystem.hpp"
#include "disk/filesystem_tree.hpp"

namespace aggrik8s {

struct TarWriteOptions {
  FilesystemTreeSelection selection{};
};

struct TarWriteResult {
  std::uint64_t bytes_written = 0;
  std::uint64_t entries = 0;     // headers written, hard links included
  std::uint64_t hard_links = 0;  // entries that link to an earlier name
  std::uint64_t file_data_bytes = 0;
};

// Writes output + ".partial", fdatasyncs it and renames it to output; on failure nothing is left.
TarWriteResult write_tar(const Ext4Filesystem& filesystem, const std::filesystem::path& output,
                         const TarWriteOptions& options = {});

// The same archive in memory, for small layers served straight from the build.
std::string write_tar_to_memory(const Ext4Filesystem& filesystem, const TarWriteOptions& options = {});

}  // namespace aggrik8s
