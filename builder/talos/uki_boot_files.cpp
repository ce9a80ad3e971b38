#include "builder/talos/uki_boot_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "builder/talos/iso_variant.hpp"
#include "builder/talos/pe_image.hpp"
#include "builder/talos/read_only_file_mapping.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/huge_pages.hpp"
#include "core/permission_detail.hpp"
#include "core/positional_io.hpp"
#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

bool is_uki_path(const std::string& path) {
  if (path.size() < 14) return false;
  std::string lower = path;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.starts_with("efi/linux/") && lower.ends_with(".efi") && lower.find('/', 10) == std::string::npos;
}

void write_bytes(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  // 0600: with an embedded config the UKI holds the machine config.
  FileDescriptor out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) throw_system_error("cannot create " + path.string(), errno);
  write_all(out.get(), bytes.data(), bytes.size(), path.string());
}

// The kernel in the UKI states its own command line limit (x86: the setup header at the start of
// .linux); parse_pe has checked that the raw data lies within the file.
KernelCommandLineLimit linux_section_limit(const std::vector<std::uint8_t>& uki, const PeLayout& layout) {
  for (const auto& section : layout.sections) {
    if (section.name != ".linux") continue;
    std::uint32_t size = section.virtual_size != 0 ? std::min(section.raw_size, section.virtual_size) : section.raw_size;
    std::span<const std::uint8_t> raw(uki.data() + section.raw_offset, size);
    try {
      return kernel_command_line_limit(raw);
    } catch (const Error& e) {
      throw Error(std::string(".linux: ") + e.what());
    }
  }
  throw Error("no .linux section: not a unified kernel image");
}

}  // namespace

TalosIsoUkis TalosIsoUkis::read(const fs::path& iso, const std::vector<std::string>& iso_files) {
  TalosIsoUkis ukis;
  ukis.iso_ = iso;
  auto add = [&](std::vector<Uki>& to, std::string path, std::vector<std::uint8_t> bytes, const std::string& where) {
    Uki uki{std::move(path), std::move(bytes), {}, {}};
    try {
      uki.command_lines = uki_command_lines(uki.bytes);
      PeLayout layout = parse_pe(uki.bytes);
      ukis.any_signed_ = ukis.any_signed_ || layout.signed_image();
      uki.limit = linux_section_limit(uki.bytes, layout);
    } catch (const Error& e) {
      throw Error(iso.string() + ": " + where + "/" + uki.path + ": " + e.what());
    }
    to.push_back(std::move(uki));
  };
  std::vector<std::string> tree_paths;
  for (const auto& file : iso_files) {
    if (is_uki_path(file)) tree_paths.push_back(file);
  }
  if (!tree_paths.empty()) {
    // Read from the mapped image where its directory records say the files are: streaming a ~50 MiB
    // UKI through libarchive into a growing string cost more than the rest of the build's start
    // (docs/benchmarks.md, Talos section). libarchive stays the fallback for an image our ISO 9660
    // reader does not take (a multi-extent file, say).
    std::vector<std::vector<std::uint8_t>> contents;
    try {
      ReadOnlyFileMapping image(iso);
      for (const auto& placement : locate_iso_files(image.bytes(), tree_paths)) {
        auto bytes = iso_file_bytes(image.bytes(), placement);
        reserve_on_huge_pages(contents.emplace_back(), bytes.size());
        contents.back().assign(bytes.begin(), bytes.end());
      }
    } catch (const Error&) {
      contents.clear();
      for (const auto& path : tree_paths) contents.push_back(read_iso_file(iso, path));
    }
    for (std::size_t i = 0; i < tree_paths.size(); ++i) add(ukis.in_tree_, tree_paths[i], std::move(contents[i]), "");
  }
  ukis.partition_ = find_iso_efi_partition(iso);
  if (ukis.partition_) {
    FileBlockDevice device(iso, FileBlockDevice::Access::read_only);
    SubrangeBlockDevice esp(device, ukis.partition_->offset, ukis.partition_->size,
                            iso.string() + " EFI partition " + std::to_string(ukis.partition_->number));
    FatFilesystem fat(esp);
    if (fat.stat("EFI/Linux") && fat.stat("EFI/Linux")->is_directory) {
      for (const auto& entry : fat.list_directory("EFI/Linux")) {
        std::string path = "EFI/Linux/" + entry.name;
        if (entry.is_directory || !is_uki_path(path)) continue;
        add(ukis.in_partition_, path, fat.read_file(path), "EFI partition " + std::to_string(ukis.partition_->number) + ":");
      }
    }
  }
  std::vector<Uki*> all;
  for (auto* set : {&ukis.in_tree_, &ukis.in_partition_}) {
    for (auto& uki : *set) all.push_back(&uki);
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    all[i]->first_same = i;
    for (std::size_t j = 0; j < i; ++j) {
      if (all[j]->bytes == all[i]->bytes) {
        all[i]->first_same = j;
        break;
      }
    }
  }
  return ukis;
}

std::vector<std::string> TalosIsoUkis::locations() const {
  std::vector<std::string> out;
  for (const auto& u : in_tree_) out.push_back("/" + u.path);
  for (const auto& u : in_partition_) out.push_back("EFI partition " + std::to_string(partition_->number) + ":/" + u.path);
  return out;
}

std::vector<std::string> TalosIsoUkis::command_lines_with(const std::vector<std::string>& add_args) const {
  std::vector<std::string> out;
  for (const auto* set : {&in_tree_, &in_partition_}) {
    for (const auto& u : *set) {
      for (const auto& line : u.command_lines) out.push_back(uki_command_line_with(line, add_args));
    }
  }
  return out;
}

std::vector<TalosIsoUkis::CommandLine> TalosIsoUkis::command_lines_and_limits_with(
    const std::vector<std::string>& add_args) const {
  std::vector<CommandLine> out;
  std::vector<std::string> where = locations();
  std::size_t index = 0;
  for (const auto* set : {&in_tree_, &in_partition_}) {
    for (const auto& u : *set) {
      // The kernel's place for messages: "<iso>:/EFI/Linux/x.efi", "<iso> EFI partition 2:/EFI/Linux/x.efi".
      std::string kernel = iso_.string() + (set == &in_tree_ ? ":" : " ") + where[index];
      for (const auto& line : u.command_lines) out.push_back({kernel, where[index], uki_command_line_with(line, add_args), u.limit});
      ++index;
    }
  }
  return out;
}

std::vector<std::uint8_t> TalosIsoUkis::read_partition() const {
  if (in_partition_.empty()) return {};
  FileDescriptor in(::open(iso_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw_file_error("cannot open " + iso_.string(), iso_, errno);
  std::vector<std::uint8_t> bytes;
  reserve_on_huge_pages(bytes, partition_->size);
  bytes.resize(partition_->size);
  pread_exactly(in.get(), partition_->offset, bytes.data(), bytes.size(), iso_.string());
  return bytes;
}

const TalosIsoUkis::Uki& TalosIsoUkis::first_of_same(const Uki& uki) const {
  // The cache is keyed by the input UKI's bytes: a partition's copy of a tree UKI is edited as the tree's.
  return uki.first_same < in_tree_.size() ? in_tree_[uki.first_same] : in_partition_.at(uki.first_same - in_tree_.size());
}

const EditedUki& TalosIsoUkis::command_line_edit(const Uki& uki, const std::vector<std::string>& add_args) const {
  if (command_line_edit_args_ != add_args) {
    command_line_edits_.clear();
    command_line_edit_args_ = add_args;
  }
  for (const auto& [input, done] : command_line_edits_) {
    if (input == &uki.bytes) return done;
  }
  command_line_edits_.emplace_back(&uki.bytes, edit_uki(uki.bytes, {add_args, {}}));
  return command_line_edits_.back().second;
}

void TalosIsoUkis::prepare_command_line_edits(const std::vector<std::string>& add_args) const {
  for (const auto* set : {&in_tree_, &in_partition_}) {
    for (const auto& uki : *set) {
      if (&uki == &first_of_same(uki)) command_line_edit(uki, add_args);
    }
  }
}

std::vector<TalosIsoUkis::AppendSlotAt> TalosIsoUkis::append_slots(const std::vector<std::string>& add_args,
                                                                   std::size_t append_size) const {
  std::vector<AppendSlotAt> out;
  for (const auto* set : {&in_tree_, &in_partition_}) {
    for (const auto& uki : *set) {
      out.push_back({uki.path, set == &in_partition_, uki_append_slot(command_line_edit(first_of_same(uki), add_args).image, append_size)});
    }
  }
  return out;
}

TalosIsoUkis::EditedInMemory TalosIsoUkis::edit(const UkiEdit& edit, std::int64_t timestamp,
                                                std::vector<std::uint8_t>& partition) const {
  EditedInMemory result;
  // The tree and the partition normally hold the same UKI: edit each distinct one once.
  std::vector<std::optional<std::size_t>> image_of(in_tree_.size() + in_partition_.size());
  auto edited = [&](const Uki& uki) -> std::size_t {
    std::optional<std::size_t>& image = image_of.at(uki.first_same);
    if (image) return *image;
    // edit_uki(bytes, edit), in two steps (uki_image.hpp): the shared command-line edit, then the append.
    const EditedUki& base = command_line_edit(uki, edit.add_args);
    EditedUki full{{}, base.command_lines, base.signature_removed};
    if (!spare_images_.empty()) {
      full.image = std::move(spare_images_.back());
      spare_images_.pop_back();
    }
    if (edit.append_to_initrd.empty()) {
      full.image.assign(base.image.begin(), base.image.end());
    } else {
      append_to_uki_initrd(base.image, edit.append_to_initrd, full.image, initrd_scratch_);
    }
    result.images.push_back(std::move(full));
    result.applied.signature_removed = result.applied.signature_removed || result.images.back().signature_removed;
    if (result.applied.command_lines.empty()) result.applied.command_lines = result.images.back().command_lines;
    image = result.images.size() - 1;
    return *image;
  };
  for (const auto& uki : in_tree_) result.in_tree.emplace_back(uki.path, edited(uki));
  if (!in_partition_.empty()) {
    if (partition.size() != partition_->size) throw Error("the EFI partition to edit is not the input's (size differs)");
    MemoryBlockDevice device(std::move(partition), iso_.string() + " EFI partition " + std::to_string(partition_->number));
    FatFilesystem fat(device);
    fat.set_timestamp(timestamp);
    for (const auto& uki : in_partition_) {
      try {
        fat.write_file(uki.path, std::span<const std::uint8_t>(result.images[edited(uki)].image));
      } catch (const Error& e) {
        throw Error("cannot write the edited /" + uki.path + " into the ISO's EFI partition: " + e.what());
      }
    }
    partition = std::move(device.bytes());
  }
  return result;
}

TalosIsoUkis::Applied TalosIsoUkis::applied_with(const std::vector<std::string>& add_args) const {
  // As edit() gathers it: the first UKI's command lines, a signature removed from any of them (the
  // appended archive changes neither).
  Applied applied;
  for (const auto* set : {&in_tree_, &in_partition_}) {
    for (const auto& uki : *set) {
      const EditedUki& edited = command_line_edit(first_of_same(uki), add_args);
      applied.signature_removed = applied.signature_removed || edited.signature_removed;
      if (applied.command_lines.empty()) applied.command_lines = edited.command_lines;
    }
  }
  return applied;
}

std::vector<std::string> TalosIsoUkis::tree_paths() const {
  std::vector<std::string> paths;
  for (const auto& uki : in_tree_) paths.push_back(uki.path);
  return paths;
}

void TalosIsoUkis::recycle(EditedInMemory&& done) const {
  // As many as one edit uses (one per distinct UKI), so nothing piles up.
  std::size_t keep = in_tree_.size() + in_partition_.size();
  for (auto& image : done.images) {
    if (spare_images_.size() < keep) spare_images_.push_back(std::move(image.image));
  }
}

TalosIsoUkis::Applied TalosIsoUkis::apply(const UkiEdit& edit, const fs::path& work_dir, std::int64_t timestamp,
                                          IsoRemaster& request) const {
  std::vector<std::uint8_t> partition = read_partition();
  EditedInMemory edited = this->edit(edit, timestamp, partition);
  for (std::size_t i = 0; i < edited.in_tree.size(); ++i) {
    fs::path file = work_dir / ("uki-" + std::to_string(i) + ".efi");
    write_bytes(file, edited.images[edited.in_tree[i].second].image);
    // After the input's files, before a node's small files (write_node_iso): its appended archive is
    // the first byte that differs between nodes' ISOs.
    request.files.push_back({file, "/" + edited.in_tree[i].first, 0444, -1});
  }
  if (!in_partition_.empty()) {
    fs::path image = work_dir / "efiboot.img";
    write_bytes(image, partition);
    request.efi_partition = partition_;
    request.efi_partition_image = image;
  }
  return edited.applied;
}

}  // namespace aggrik8s::builder
