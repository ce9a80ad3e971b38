#include "builder/rpi/pi_boot_image.hpp"

#include <algorithm>

#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"
#include "disk/block_device.hpp"
#include "disk/fat_format.hpp"
#include "disk/fat_tree.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::span<const std::uint8_t> bytes_of(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// One entry of boot.img in write order: from the source partition, or a replacement's content.
struct PlannedEntry {
  FatContentItem item;
  const std::string* replacement = nullptr;
};

std::vector<PlannedEntry> plan_entries(FatFilesystem& source, const PiBootImageSpec& spec) {
  std::map<std::string, const std::pair<const std::string, std::string>*> replacements;
  for (const auto& replaced : spec.replaced_files) replacements[lowercase(replaced.first)] = &replaced;
  std::vector<PlannedEntry> entries;
  for (const FatTreeEntry& entry : list_fat_tree(source)) {
    const std::string key = lowercase(entry.path);
    if (entry.path.find('/') == std::string::npos && spec.omitted_root_files.contains(key)) continue;
    PlannedEntry planned{{entry.path, entry.entry.is_directory, entry.entry.size}, nullptr};
    if (auto it = replacements.find(key); it != replacements.end() && !entry.entry.is_directory) {
      planned.replacement = &it->second->second;
      planned.item.size = planned.replacement->size();
      replacements.erase(it);
    }
    entries.push_back(planned);
  }
  // Added files, in name order (std::map), after the partition's.
  for (const auto& replaced : spec.replaced_files) {
    if (!replacements.contains(lowercase(replaced.first))) continue;
    entries.push_back({{replaced.first, false, replaced.second.size()}, &replaced.second});
  }
  return entries;
}

// Distinct per node and fixed: the volume serial must not come from the clock.
std::uint32_t volume_id_for(const std::string& node) {
  const Sha256Digest digest = Sha256::of("aggrik8s boot.img " + node);
  return static_cast<std::uint32_t>(digest.bytes()[0]) | static_cast<std::uint32_t>(digest.bytes()[1]) << 8 |
         static_cast<std::uint32_t>(digest.bytes()[2]) << 16 | static_cast<std::uint32_t>(digest.bytes()[3]) << 24;
}

}  // namespace

std::vector<std::uint8_t> pi_boot_image_bytes(FatFilesystem& source, const PiBootImageSpec& spec) {
  const std::vector<PlannedEntry> entries = plan_entries(source, spec);
  std::vector<FatContentItem> items;
  items.reserve(entries.size());
  for (const auto& e : entries) items.push_back(e.item);

  FatFormatOptions format;
  format.label = "bootfs";  // Raspberry Pi OS's boot partition label
  format.volume_id = volume_id_for(spec.node);
  FatLayout layout;
  if (spec.image_size) {
    layout = plan_fat_layout(*spec.image_size, format);
    const std::optional<std::uint64_t> needed = fat_bytes_needed(items, layout);
    if (!needed || *needed > layout.data_bytes()) {
      const FatLayout fitting = plan_fat_layout_to_fit(items, 0, format);
      throw Error("node " + spec.node + ": output.http_boot.image_size is " + format_byte_size(*spec.image_size) +
                  " but the boot partition's files need a boot.img of " + format_byte_size(fitting.total_sectors * 512) +
                  " (" + std::to_string(items.size()) + " files and directories)");
    }
  } else {
    layout = plan_fat_layout_to_fit(items, pi_boot_image_margin, format);
  }

  MemoryBlockDevice device(layout.total_sectors * 512, "boot.img of node " + spec.node);
  format.type = layout.type;
  format_fat(device, format);
  FatFilesystem image(device);
  image.set_timestamp(spec.timestamp);
  for (const PlannedEntry& entry : entries) {
    if (entry.item.is_directory) {
      image.make_directories(entry.item.path);
    } else if (entry.replacement) {
      image.write_file(entry.item.path, bytes_of(*entry.replacement));
    } else {
      image.write_file(entry.item.path, source.read_file(entry.item.path));
    }
  }
  return std::move(device.bytes());
}

BuiltPiBoot write_pi_boot_files(const std::vector<std::uint8_t>& image, const RsaPrivateKey& key, std::int64_t timestamp,
                                const fs::path& image_path, const fs::path& signature_path, PartialOutputs& partial) {
  const std::string signature = boot_signature_text(image, key, timestamp);
  const fs::path image_partial = partial.track(fs::path(image_path.string() + ".partial"));
  const fs::path signature_partial = partial.track(fs::path(signature_path.string() + ".partial"));
  write_file_with_mode(image_partial, image, FileMode::exactly(0600));
  write_file_with_mode(signature_partial, signature, FileMode::less_umask(0644));
  // boot.img first: a reader that finds boot.sig finds the boot.img it signs.
  partial.publish(image_partial, image_path);
  partial.publish(signature_partial, signature_path);
  BuiltPiBoot built;
  built.image = BuiltFile{image_path, image.size(), Sha256::of(std::span<const std::uint8_t>(image))};
  built.signature = BuiltFile{signature_path, signature.size(), Sha256::of(signature)};
  return built;
}

}  // namespace aggrik8s::builder
