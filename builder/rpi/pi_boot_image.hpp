#pragma once
// boot.img and boot.sig for Raspberry Pi 5 HTTP boot: the node's boot partition as a FAT image the
// bootloader downloads into RAM (a "superfloppy": FAT from byte 0, no partition table), and its
// signature in the bootloader's format (builder/rpi/pi_boot_signature.hpp).
//
// The image is written in-process (disk/fat_format, disk/fat_filesystem) and is exactly the files of
// the source boot partition, byte for byte, in its directory order, with the given files replaced or
// added: so a node boots the same files over HTTP as from its disk image. It is sized to fit (files
// in whole clusters, FATs, directories and a 1 MiB margin) unless the profile fixes the size. With a
// timestamp (SOURCE_DATE_EPOCH) every byte is fixed: the same inputs give the same boot.img and boot.sig.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "builder/build_output.hpp"
#include "builder/rpi/pi_boot_signature.hpp"
#include "disk/fat_filesystem.hpp"

namespace aggrik8s::builder {

// Free space left in a boot.img sized to fit: room for a config.txt edited by hand on the server.
inline constexpr std::uint64_t pi_boot_image_margin = 1ull << 20;

struct PiBootImageSpec {
  std::string node;                         // for messages and the volume id
  std::optional<std::uint64_t> image_size;  // output.http_boot.image_size; default: sized to fit
  std::int64_t timestamp = 0;               // every file's time (SOURCE_DATE_EPOCH, or the build's time)
  std::set<std::string> omitted_root_files;  // lower-case names in the root left out ("cmdline.txt")
  // path -> content: replaces the partition's file of that name (case-insensitive) in place, or is
  // added after the partition's files when it has none.
  std::map<std::string, std::string> replaced_files;
};

// The bytes of boot.img. Reads the files from `source` (the node's boot partition). Throws Error naming
// the node and both sizes when the files do not fit the fixed image_size.
std::vector<std::uint8_t> pi_boot_image_bytes(FatFilesystem& source, const PiBootImageSpec& spec);

struct BuiltPiBoot {
  BuiltFile image;
  BuiltFile signature;
};

// Writes `image` to image_path (0600: it carries the node's first-boot files with password hashes and
// keys) and its boot.sig (ts: `timestamp`) to signature_path (0644), each as <name>.partial renamed
// into place, both tracked by `partial` so a failed build removes them.
BuiltPiBoot write_pi_boot_files(const std::vector<std::uint8_t>& image, const RsaPrivateKey& key, std::int64_t timestamp,
                                const std::filesystem::path& image_path, const std::filesystem::path& signature_path,
                                PartialOutputs& partial);

}  // namespace aggrik8s::builder
