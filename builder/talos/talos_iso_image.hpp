#pragma once
// ISO 9660 images for Talos outputs, all in-process:
//   - reading: volume descriptors parsed here (volume id, dates, Joliet), files through libarchive's
//     iso9660 reader (Rock Ridge names);
//   - the config ISO (label `metal-iso`, /config.yaml): libisofs, no boot record, reproducible;
//   - remastering a bootable ISO: libisoburn's xorriso API with `-boot_image any replay`, which
//     re-creates the input's El Torito catalog, MBR/GPT (hybrid) system area and EFI partition.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::builder {

struct IsoVolumeInfo {
  std::string volume_id;          // trailing blanks removed
  std::string modification_date;  // "YYYYMMDDhhmmsscc" as recorded (GRUB's fs-uuid of the volume)
  bool joliet = false;            // a supplementary descriptor with a UCS-2 escape sequence
};

// `descriptors`: the image from byte 32768 (sector 16) on, at least up to the terminator.
// Throws Error when there is no primary volume descriptor ("CD001").
IsoVolumeInfo parse_iso_volume_descriptors(std::string_view descriptors);
IsoVolumeInfo read_iso_volume_info(const std::filesystem::path& iso);

// Every regular file's path in the image, without leading '/' ("boot/grub/grub.cfg").
std::vector<std::string> list_iso_files(const std::filesystem::path& iso);
// Copies files out of the image: {path in the image, destination}. Throws Error naming any path that
// is missing.
void extract_iso_files(const std::filesystem::path& iso,
                       const std::vector<std::pair<std::string, std::filesystem::path>>& wanted);
std::string read_iso_text_file(const std::filesystem::path& iso, const std::string& path_in_image);
// The same as bytes.
std::vector<std::uint8_t> read_iso_file(const std::filesystem::path& iso, const std::string& path_in_image);

struct ConfigIsoOptions {
  std::string volume_id = "metal-iso";
  std::optional<std::int64_t> source_date_epoch;  // every timestamp; default: now
};
// An ISO 9660 image with Joliet and Rock Ridge holding /config.yaml (mode 0400, root-owned).
void write_config_iso(const std::filesystem::path& output, const std::string& config_yaml,
                      const ConfigIsoOptions& options = {});

struct IsoFileToAdd {
  std::filesystem::path source;  // a file on disk
  std::string path_in_image;     // "/config.yaml"
  std::uint32_t mode = 0444;
  // libisofs lays out files with higher weights first (xorriso's `-exec sort_weight`): the input's
  // files have 1 and more (their old order), added ones 0. Per-node files get negative weights so that
  // what differs between nodes comes last, in an order of the caller's choosing.
  std::int32_t sort_weight = 0;
};

// The EFI system partition appended to a hybrid ISO (Talos' efiboot.img, grub-mkrescue's efi.img): the
// GPT entry of type EFI System, else an MBR entry of type 0xef. Offsets in bytes from the image start.
struct IsoEfiPartition {
  std::uint32_t number = 0;  // the partition table slot, as xorriso's -append_partition counts
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::string type;  // for -append_partition: the GPT type GUID as 32 hex digits (on-disk byte order), or "0xef"
};
std::optional<IsoEfiPartition> find_iso_efi_partition(const std::filesystem::path& iso);
// Copies [offset, offset + size) of the ISO into `output` (a FAT image to edit).
void extract_iso_efi_partition(const std::filesystem::path& iso, const IsoEfiPartition& partition,
                               const std::filesystem::path& output);

struct IsoRemaster {
  std::filesystem::path input;
  std::filesystem::path output;
  std::vector<IsoFileToAdd> files;             // added or replaced
  std::optional<std::string> volume_id;        // keep the input's when unset
  std::optional<std::int64_t> source_date_epoch;
  std::uint32_t output_mode = 0644;  // set before the first byte is written (0600 when it holds a config)
  // Replaces the appended EFI system partition (same slot and type) with this FAT image; the El Torito
  // UEFI entry, which points at the partition, follows it.
  std::optional<IsoEfiPartition> efi_partition{};
  std::filesystem::path efi_partition_image{};
};
// Writes a modified copy of a bootable ISO. Throws Error with xorriso's messages on failure.
void remaster_iso(const IsoRemaster& request);
// The library remaster_iso lays images out with, as "libisoburn 1.5.4": part of what an ISO derived from
// a remaster (a cached template, builder/talos/iso_template_cache.hpp) depends on.
std::string iso_writer_version();

}  // namespace aggrik8s::builder
