#pragma once
// cpio archives in the "newc" (SVR4, no CRC) format, the format the Linux kernel unpacks as an
// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst). Pure code: entries in, bytes
// out.
//
// Reproducible: every entry gets the same mtime, uid/gid 0, inode numbers 1, 2, 3... in output order,
// device 0:0 for the archive itself; entries are written sorted by path, so a directory always comes
// before what it holds (a path sorts after every prefix of itself). Directories missing from the list
// are added (0755), because the kernel creates a file only in an existing directory.
#include <cstdint>
#include <string>
#include <vector>

namespace aggrik8s {

enum class CpioEntryType { regular, directory, symlink, character_device, block_device };

struct CpioEntry {
  // Relative to the archive root, without a leading "/" or "./" ("bin/busybox"); no "." or ".."
  // components, no empty components.
  std::string path;
  CpioEntryType type = CpioEntryType::regular;
  // The low 12 mode bits (setuid/setgid/sticky included); ignored for symlinks (always 0777).
  std::uint32_t permissions = 0644;
  // The file's bytes (regular) or the link target (symlink); empty otherwise.
  std::string content;
  // Devices only.
  std::uint32_t device_major = 0;
  std::uint32_t device_minor = 0;
};

// The archive, ending with the "TRAILER!!!" entry. Throws Error naming the entry for an invalid path,
// a duplicate path, a path below a non-directory, or a file larger than newc's 32-bit size field.
std::string write_newc_cpio(std::vector<CpioEntry> entries, std::int64_t mtime);

}  // namespace aggrik8s
