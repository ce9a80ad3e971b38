#include "inspect/boot_ramdisk_inspector.hpp"

#include <fstream>
#include <iterator>

#include "builder/rpi/pi_boot_signature.hpp"
#include "core/error.hpp"
#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/filesystem_probe.hpp"

namespace aggrik8s::builder {

namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> read_whole_file(const fs::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open the " + what);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void list_files(FatFilesystem& fat, const std::string& dir, std::vector<BootRamdiskFile>& out) {
  for (const FatDirectoryEntry& entry : fat.list_directory(dir)) {
    if (entry.name == "." || entry.name == "..") continue;
    std::string path = dir.empty() ? entry.name : dir + "/" + entry.name;
    out.push_back({path, entry.is_directory, entry.size});
    if (entry.is_directory) list_files(fat, path, out);
  }
}

const char* fat_type_name(FatType type) {
  switch (type) {
    case FatType::fat12: return "FAT12";
    case FatType::fat16: return "FAT16";
    case FatType::fat32: return "FAT32";
  }
  return "FAT";
}

BootRamdiskSignature check_signature(std::span<const std::uint8_t> image, const BootSignatureFiles& files) {
  BootRamdiskSignature result;
  result.boot_sig = files.boot_sig;
  result.public_key = files.public_key;
  // An unusable key is the user's mistake, not a verdict on the image: an error, not "not verified".
  RsaPublicKey key = load_rsa_public_key_file(files.public_key);
  result.public_key_sha256 = key.fingerprint().hex();
  auto text = read_whole_file(files.boot_sig, "boot.sig");
  try {
    BootSignature parsed = parse_boot_signature(std::string(text.begin(), text.end()), files.boot_sig.string());
    result.signed_sha256 = parsed.sha256.hex();
    result.timestamp = parsed.timestamp;
    BootSignatureCheck check = verify_boot_signature(image, parsed, key);
    result.verified = check.ok;
    result.reason = check.reason;
  } catch (const Error& e) {
    // The bootloader would refuse a boot.sig it cannot parse just the same.
    result.reason = e.what();
  }
  return result;
}

}  // namespace

bool is_boot_ramdisk_image(const fs::path& image) { return probe_filesystem(image, 0, 0).type == "vfat"; }

BootRamdiskInspection inspect_boot_ramdisk(const fs::path& image, const std::optional<BootSignatureFiles>& signature_files) {
  if (!fs::is_regular_file(image)) throw Error(image.string() + ": no such file (expected a boot.img)");
  BootRamdiskInspection report;
  report.path = image;
  {
    FileBlockDevice device(image, FileBlockDevice::Access::read_only);
    report.image_bytes = device.size();
    FatFilesystem fat(device);
    report.filesystem = fat_type_name(fat.type());
    report.label = fat.volume_label();
    report.free_bytes = fat.free_bytes();
    list_files(fat, "", report.files);
  }
  // The bootloader hashes and verifies the whole file, as downloaded: so do we.
  std::vector<std::uint8_t> bytes = read_whole_file(image, "boot.img");
  report.sha256 = Sha256::of(std::span<const std::uint8_t>(bytes)).hex();
  if (signature_files) report.signature = check_signature(bytes, *signature_files);
  return report;
}

}  // namespace aggrik8s::builder
