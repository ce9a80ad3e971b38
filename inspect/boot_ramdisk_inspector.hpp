#pragma once
// `aggrik8s-image inspect boot.img`: the Pi 5 HTTP-boot ramdisk (a bare FAT filesystem holding a whole
// boot partition, no partition table) and, given boot.sig and the public key, the check the bootloader
// makes before it boots it. Read in-process with the same FAT code the builder writes with; nothing is
// changed.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aggrik8s::builder {

struct BootRamdiskFile {
  std::string path;  // "overlays/foo.dtbo", '/'-separated, as the firmware looks it up
  bool is_directory = false;
  std::uint64_t size = 0;
};

struct BootRamdiskSignature {
  std::filesystem::path boot_sig;
  std::filesystem::path public_key;
  std::string public_key_sha256;  // fingerprint of the DER public key, as keygen prints it
  std::optional<std::string> signed_sha256;    // boot.sig's first line, when it parsed
  std::optional<std::int64_t> timestamp;       // its ts:
  bool verified = false;
  std::string reason;  // why not, when !verified (a boot.sig that does not parse is a reason too)
};

struct BootRamdiskInspection {
  std::filesystem::path path;
  std::uint64_t image_bytes = 0;
  std::string sha256;
  std::string filesystem;  // "FAT12", "FAT16", "FAT32"
  std::string label;
  std::uint64_t free_bytes = 0;
  std::vector<BootRamdiskFile> files;  // depth first, in directory order
  std::optional<BootRamdiskSignature> signature;
};

// True when `image` starts with a FAT filesystem (libblkid says so at offset 0), i.e. it is a
// boot.img rather than a disk image with a partition table.
bool is_boot_ramdisk_image(const std::filesystem::path& image);

struct BootSignatureFiles {
  std::filesystem::path boot_sig;
  std::filesystem::path public_key;
};

// Lists the files and, when `signature_files` is given, verifies. Throws Error naming the file when
// boot.img is not a readable FAT image or the public key cannot be used (not RSA-2048, a private
// key...); a boot.sig that does not match is a result (signature->verified false), not an exception.
BootRamdiskInspection inspect_boot_ramdisk(const std::filesystem::path& image,
                                           const std::optional<BootSignatureFiles>& signature_files);

}  // namespace aggrik8s::builder
