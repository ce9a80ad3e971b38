#pragma once
// The UKIs a Talos ISO boots UEFI with (systemd-boot, Talos >= 1.10): EFI/Linux/*.efi in the ISO's own
// tree and in the EFI system partition appended to it (the FAT image the El Torito UEFI entry boots,
// which is where systemd-boot finds them). Read once per build; edited per output ISO, the edited
// copies written back to both places (pkg/imager/iso/uefi.go puts the same files in each).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "disk/linux_kernel_image.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "builder/talos/uki_image.hpp"

namespace aggrik8s::builder {

class TalosIsoUkis {
 public:
  // `iso_files`: list_iso_files(iso). Throws Error when a UKI is not a PE file with a .cmdline.
  static TalosIsoUkis read(const std::filesystem::path& iso, const std::vector<std::string>& iso_files);

  bool empty() const { return in_tree_.empty() && in_partition_.empty(); }
  bool any_signed() const { return any_signed_; }
  // "/EFI/Linux/Talos-v1.12.0.efi", "EFI partition 2:/EFI/Linux/Talos-v1.12.0.efi"
  std::vector<std::string> locations() const;
  // Every .cmdline of every UKI as `add_args` would make it (for length checks before any work).
  std::vector<std::string> command_lines_with(const std::vector<std::string>& add_args) const;
  struct CommandLine {
    std::string location;          // the ISO and the UKI in it: "<iso>:/EFI/Linux/x.efi", "<iso> EFI partition 2:/..."
    std::string uki;               // the UKI alone, as locations() names it: "/EFI/Linux/x.efi", "EFI partition 2:/..."
    std::string text;
    KernelCommandLineLimit limit;  // of the kernel in the UKI's .linux section
  };
  std::vector<CommandLine> command_lines_and_limits_with(const std::vector<std::string>& add_args) const;

  struct Applied {
    std::vector<std::string> command_lines;  // of the first UKI, for the manifest
    bool signature_removed = false;
  };
  struct EditedInMemory {
    std::vector<EditedUki> images;                            // each distinct edited UKI once
    std::vector<std::pair<std::string, std::size_t>> in_tree;  // "EFI/Linux/x.efi" -> index in images
    Applied applied;
  };
  // What edit() with `add_args` reports, without editing: for a node ISO written from a template whose
  // UKIs were edited with them (a cached template, builder/talos/iso_template_cache.hpp).
  Applied applied_with(const std::vector<std::string>& add_args) const;
  // The UKIs in the ISO's own tree, as paths in it without the leading '/' ("EFI/Linux/x.efi").
  std::vector<std::string> tree_paths() const;
  // The input's EFI partition as bytes, when UKIs sit in it (empty otherwise): what edit() writes into.
  std::vector<std::uint8_t> read_partition() const;
  const std::optional<IsoEfiPartition>& partition() const { return partition_; }
  bool ukis_in_partition() const { return !in_partition_.empty(); }
  // Edits every UKI in memory; when UKIs sit in the EFI partition, `partition` must hold the input's
  // partition (read_partition()) and gets the edited UKIs written into it by our FAT writer, its files
  // stamped `timestamp`.
  EditedInMemory edit(const UkiEdit& edit, std::int64_t timestamp, std::vector<std::uint8_t>& partition) const;
  // Where an archive of `append_size` bytes lands in each UKI edited with `add_args` (uki_append_slot
  // of its command-line edit), tree UKIs first, then the partition's, in locations() order: a node
  // whose archive has every UKI's slot of the first node's ISO is written as that ISO with the slots
  // rewritten (uki_slot_bytes), not by editing whole UKIs and the FAT (talos_image_builder.cpp).
  // Does the command-line edit for `add_args` now (it is kept for every later edit with them): the
  // build does the first node's while the ISO's extension list is still being read.
  void prepare_command_line_edits(const std::vector<std::string>& add_args) const;
  struct AppendSlotAt {
    std::string path;  // without leading '/'
    bool in_partition = false;
    std::optional<UkiAppendSlot> slot;
  };
  std::vector<AppendSlotAt> append_slots(const std::vector<std::string>& add_args, std::size_t append_size) const;
  // Hands back the buffers of an edit whose images are no longer needed: the next edit() writes into
  // them instead of faulting in a fresh 50 MiB per UKI (docs/benchmarks.md, Talos section).
  void recycle(EditedInMemory&& done) const;
  // Edits every UKI, writes the results under `work_dir` and adds them to `request` (files in the tree,
  // and the EFI partition as a new FAT image with the edited UKIs, stamped `timestamp`).
  Applied apply(const UkiEdit& edit, const std::filesystem::path& work_dir, std::int64_t timestamp,
                IsoRemaster& request) const;

 private:
  struct Uki {
    std::string path;  // without leading '/'
    std::vector<std::uint8_t> bytes;
    std::vector<std::string> command_lines;
    KernelCommandLineLimit limit;
    // The first UKI (tree ones first, then the partition's) with these same bytes, perhaps this one:
    // the tree and the partition normally hold one UKI twice, and edit() works on each distinct one
    // once. Found once in read(), not per node (comparing two ~40 MiB UKIs costs ~4 ms).
    std::size_t first_same = 0;
  };
  // The UKI with its command lines edited (cached: see command_line_edits_).
  const EditedUki& command_line_edit(const Uki& uki, const std::vector<std::string>& add_args) const;
  // The first UKI with `uki`'s bytes (tree ones first), the one edit() and the cache work on.
  const Uki& first_of_same(const Uki& uki) const;

  std::filesystem::path iso_;
  std::vector<Uki> in_tree_;
  std::optional<IsoEfiPartition> partition_;
  std::vector<Uki> in_partition_;
  bool any_signed_ = false;
  // The last command-line edit, per distinct input UKI: nodes with the same arguments (the usual
  // case) then only append their own archive to the .initrd. One set kept, so nodes with arguments of
  // their own do not pile up a 50 MiB UKI each.
  mutable std::vector<std::string> command_line_edit_args_;
  mutable std::vector<std::pair<const std::vector<std::uint8_t>*, EditedUki>> command_line_edits_;
  // Buffers recycle() handed back, and the scratch the .initrd append builds the new section in.
  mutable std::vector<std::vector<std::uint8_t>> spare_images_;
  mutable std::vector<std::uint8_t> initrd_scratch_;
};

}  // namespace aggrik8s::builder
