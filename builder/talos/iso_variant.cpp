#include "builder/talos/iso_variant.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <future>
#include <map>
#include <set>

#include "core/endian.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/positional_io.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t block = 2048;
constexpr std::uint64_t first_descriptor = 16 * block;
constexpr std::uint8_t directory_flag = 0x02;
constexpr std::uint8_t multi_extent_flag = 0x80;
// A guard against directory loops in a damaged image; Talos ISOs have a few hundred records.
constexpr std::size_t max_records = 1'000'000;

struct DirectoryRecord {
  std::uint64_t offset = 0;  // of the record in the image
  std::uint64_t extent = 0;  // block, from the image start
  std::uint32_t size = 0;
  std::uint8_t flags = 0;
  std::string name;  // Rock Ridge NM when present, else the ISO 9660/Joliet identifier as decoded
  bool rock_ridge_name = false;
};

std::span<const std::uint8_t> bytes_at(std::span<const std::uint8_t> image, std::uint64_t offset, std::uint64_t length,
                                       const std::string& what) {
  if (offset > image.size() || length > image.size() - offset) {
    throw Error("ISO image: " + what + " at byte " + std::to_string(offset) + " lies outside the image");
  }
  return image.subspan(offset, length);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// "CONFIG.YAML;1" -> "config.yaml"; Joliet (UCS-2 big-endian) -> ASCII where it is ASCII.
std::string plain_name(std::span<const std::uint8_t> id, bool joliet) {
  std::string name;
  if (joliet) {
    for (std::size_t i = 0; i + 1 < id.size(); i += 2) name += id[i] == 0 ? static_cast<char>(id[i + 1]) : '?';
  } else {
    name.assign(id.begin(), id.end());
  }
  if (auto semicolon = name.find(';'); semicolon != std::string::npos) name.resize(semicolon);
  if (!name.empty() && name.back() == '.') name.pop_back();
  return name;
}

// The Rock Ridge name in a record's system use area (RRIP "NM" entries, possibly continued).
std::optional<std::string> rock_ridge_name(std::span<const std::uint8_t> record, std::size_t name_length) {
  std::size_t at = 33 + name_length + (name_length % 2 == 0 ? 1 : 0);
  std::string name;
  bool found = false;
  while (at + 4 <= record.size()) {
    std::size_t length = record[at + 2];
    if (length < 4 || at + length > record.size()) break;
    if (record[at] == 'N' && record[at + 1] == 'M' && length >= 5) {
      std::uint8_t flags = record[at + 4];
      name.append(record.begin() + static_cast<std::ptrdiff_t>(at + 5), record.begin() + static_cast<std::ptrdiff_t>(at + length));
      found = true;
      if ((flags & 0x01) == 0) return name;
    }
    at += length;
  }
  if (found) return name;
  return std::nullopt;
}

// The records of one directory extent (`extent` from the image start), "." and ".." left out. `base`:
// the block the tree's own block numbers count from (non-zero for the tree of a partition offset).
std::vector<DirectoryRecord> read_directory(std::span<const std::uint8_t> image, std::uint64_t extent, std::uint32_t size,
                                            bool joliet, std::uint64_t base) {
  std::vector<DirectoryRecord> records;
  std::span<const std::uint8_t> data = bytes_at(image, extent * block, size, "a directory");
  std::uint64_t at = 0;
  while (at < data.size()) {
    std::uint8_t length = data[at];
    if (length == 0) {  // records never cross a block boundary: the rest of this block is padding
      at = (at / block + 1) * block;
      continue;
    }
    if (length < 34 || at + length > data.size()) {
      throw Error("ISO image: damaged directory record at byte " + std::to_string(extent * block + at));
    }
    std::span<const std::uint8_t> record = data.subspan(at, length);
    std::uint8_t name_length = record[32];
    if (33u + name_length > length) {
      throw Error("ISO image: damaged directory record at byte " + std::to_string(extent * block + at));
    }
    std::span<const std::uint8_t> id = record.subspan(33, name_length);
    bool self_or_parent = name_length == 1 && (id[0] == 0 || id[0] == 1);
    if (!self_or_parent) {
      DirectoryRecord r;
      r.offset = extent * block + at;
      r.extent = base + load_le32(record.data() + 2);
      r.size = load_le32(record.data() + 10);
      r.flags = record[25];
      auto nm = joliet ? std::nullopt : rock_ridge_name(record, name_length);
      r.rock_ridge_name = nm.has_value();
      r.name = nm ? *nm : plain_name(id, joliet);
      records.push_back(std::move(r));
    }
    at += length;
  }
  return records;
}

bool same_name(const DirectoryRecord& record, const std::string& wanted) {
  return record.rock_ridge_name ? record.name == wanted : lower(record.name) == lower(wanted);
}

struct Tree {
  std::uint64_t root_extent = 0;  // from the image start
  std::uint32_t root_size = 0;
  bool joliet = false;
  std::uint64_t base = 0;
};

// A directory's first record is "." pointing at the directory itself: how a tree's base is confirmed.
bool is_directory_at(std::span<const std::uint8_t> image, std::uint64_t absolute, std::uint32_t relative) {
  if ((absolute + 1) * block > image.size()) return false;
  const std::uint8_t* r = image.data() + absolute * block;
  return r[0] >= 34 && r[32] == 1 && r[33] == 0 && load_le32(r + 2) == relative && (r[25] & directory_flag) != 0;
}

// The trees of the set of volume descriptors starting at block `start`, added to `trees` unless
// already there. A set's block numbers count from the image start, or (for the set a partition
// offset adds at 16 + offset) from the offset: whichever makes its root a directory naming itself.
void add_descriptor_set(std::span<const std::uint8_t> image, std::uint64_t start, std::vector<Tree>& trees) {
  for (std::uint64_t at = start * block;; at += block) {
    std::span<const std::uint8_t> d = bytes_at(image, at, block, "a volume descriptor");
    if (d[1] != 'C' || d[2] != 'D' || d[3] != '0' || d[4] != '0' || d[5] != '1') break;
    if (d[0] == 255) break;
    if (d[0] != 1 && d[0] != 2) continue;
    if (load_le16(d.data() + 128) != block) throw Error("ISO image: logical block size is not 2048");
    std::uint32_t root = load_le32(d.data() + 156 + 2);
    bool joliet = d[0] == 2 && d[88] == '%' && d[89] == '/' && (d[90] == '@' || d[90] == 'C' || d[90] == 'E');
    for (std::uint64_t base : {std::uint64_t{0}, start - 16}) {
      if (!is_directory_at(image, base + root, root)) continue;
      bool known = std::any_of(trees.begin(), trees.end(), [&](const Tree& t) { return t.root_extent == base + root; });
      if (!known) trees.push_back({base + root, load_le32(d.data() + 156 + 10), joliet, base});
      break;
    }
  }
}

// Every directory tree the volume descriptors name, the primary one first. Besides the set at block 16,
// an image made with a partition offset (xorriso -partition_offset 16, as grub-mkrescue and Talos'
// imager use) has a second set at 16 + offset whose tree counts blocks from the offset: it names the
// same files, and its records carry their sizes too. (xorriso also keeps copies of both sets further
// on; they name the same trees.)
std::vector<Tree> volume_trees(std::span<const std::uint8_t> image) {
  std::vector<Tree> trees;
  add_descriptor_set(image, 16, trees);
  if (trees.empty() || trees.front().joliet) throw Error("ISO image: no primary volume descriptor");
  std::uint64_t first_directory = trees.front().root_extent;
  for (std::uint64_t start = 17; start < first_directory && (start + 1) * block <= image.size(); ++start) {
    std::span<const std::uint8_t> d = image.subspan(start * block, block);
    bool set_start = d[0] == 1 && d[1] == 'C' && d[2] == 'D' && d[3] == '0' && d[4] == '0' && d[5] == '1';
    if (set_start) add_descriptor_set(image, start, trees);
  }
  return trees;
}

// Every file record of a tree, by extent; directories visited once each.
void collect_file_records(std::span<const std::uint8_t> image, const Tree& tree,
                          std::multimap<std::uint64_t, DirectoryRecord>& files) {
  std::set<std::uint64_t> visited;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> pending{{tree.root_extent, tree.root_size}};
  std::size_t seen = 0;
  while (!pending.empty()) {
    auto [extent, size] = pending.back();
    pending.pop_back();
    if (!visited.insert(extent).second) continue;
    for (auto& r : read_directory(image, extent, size, tree.joliet, tree.base)) {
      if (++seen > max_records) throw Error("ISO image: more than " + std::to_string(max_records) + " directory records");
      if (r.flags & directory_flag) {
        pending.emplace_back(r.extent, r.size);
      } else {
        files.emplace(r.extent, std::move(r));
      }
    }
  }
}

std::vector<std::string> path_components(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (slash > start) parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

std::array<std::uint8_t, 8> both_endian32(std::uint32_t value) {
  std::array<std::uint8_t, 8> out{};
  store_le32(out.data(), value);
  for (int i = 0; i < 4; ++i) out[4 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(value >> (24 - 8 * i));
  return out;
}

}  // namespace

std::vector<IsoFilePlacement> locate_iso_files(std::span<const std::uint8_t> image, const std::vector<std::string>& paths) {
  std::vector<Tree> trees = volume_trees(image);
  std::multimap<std::uint64_t, DirectoryRecord> file_records;
  for (const auto& tree : trees) collect_file_records(image, tree, file_records);

  std::vector<IsoFilePlacement> placements;
  for (const auto& path : paths) {
    // Walk the primary tree by name.
    const Tree& primary = trees.front();
    std::vector<std::string> parts = path_components(path);
    if (parts.empty()) throw Error("ISO image: empty path");
    std::uint64_t extent = primary.root_extent;
    std::uint32_t size = primary.root_size;
    std::optional<DirectoryRecord> found;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      std::vector<DirectoryRecord> records = read_directory(image, extent, size, false, primary.base);
      auto it = std::find_if(records.begin(), records.end(), [&](const DirectoryRecord& r) { return same_name(r, parts[i]); });
      if (it == records.end()) throw Error("ISO image: no /" + path);
      bool last = i + 1 == parts.size();
      bool is_directory = (it->flags & directory_flag) != 0;
      if (last && is_directory) throw Error("ISO image: /" + path + " is a directory");
      if (!last && !is_directory) throw Error("ISO image: /" + path + ": " + parts[i] + " is not a directory");
      extent = it->extent;
      size = it->size;
      if (last) found = *it;
    }
    if (found->flags & multi_extent_flag) throw Error("ISO image: /" + path + " spans several extents");
    if (found->size == 0) throw Error("ISO image: /" + path + " is empty");
    IsoFilePlacement placement{path, found->extent * block, found->size, {}};
    auto [first, end] = file_records.equal_range(found->extent);
    for (auto it = first; it != end; ++it) {
      if (it->second.size != found->size || (it->second.flags & multi_extent_flag)) {
        throw Error("ISO image: the directory records of /" + path + " disagree on its size");
      }
      placement.record_offsets.push_back(it->second.offset);
    }
    std::sort(placement.record_offsets.begin(), placement.record_offsets.end());
    placements.push_back(std::move(placement));
  }
  return placements;
}

std::span<const std::uint8_t> iso_file_bytes(std::span<const std::uint8_t> image, const IsoFilePlacement& placement) {
  if (placement.data_offset > image.size() || placement.size > image.size() - placement.data_offset) {
    throw Error("ISO image: /" + placement.path + " lies past the end of the image");
  }
  return image.subspan(placement.data_offset, placement.size);
}

std::optional<std::vector<IsoBytePatch>> plan_iso_variant(std::uint64_t template_size,
                                                          const std::vector<IsoFilePlacement>& placements,
                                                          const std::vector<IsoFileReplacement>& files,
                                                          const std::vector<IsoRegionReplacement>& regions) {
  std::vector<IsoBytePatch> patches;
  for (const auto& file : files) {
    auto placement = std::find_if(placements.begin(), placements.end(), [&](const IsoFilePlacement& p) { return p.path == file.path; });
    if (placement == placements.end()) throw Error("ISO variant: /" + file.path + " was not located in the template");
    std::uint64_t blocks = (placement->size + block - 1) / block;
    if (file.content.empty() || (file.content.size() + block - 1) / block != blocks || file.content.size() > UINT32_MAX) {
      return std::nullopt;
    }
    patches.push_back({placement->data_offset, file.content, {}});
    std::uint64_t padding = blocks * block - file.content.size();
    // libisofs pads a file's last block with zeros; the template's may hold the longer old content.
    if (padding != 0) patches.push_back({placement->data_offset + file.content.size(), {}, std::vector<std::uint8_t>(padding, 0)});
    auto size_field = both_endian32(static_cast<std::uint32_t>(file.content.size()));
    for (std::uint64_t record : placement->record_offsets) {
      patches.push_back({record + 10, {}, std::vector<std::uint8_t>(size_field.begin(), size_field.end())});
    }
  }
  for (const auto& region : regions) {
    if (region.offset > template_size || region.content.size() > template_size - region.offset) {
      throw Error("ISO variant: a replaced region at byte " + std::to_string(region.offset) + " runs past the image's end");
    }
    patches.push_back({region.offset, region.content, {}});
  }
  std::sort(patches.begin(), patches.end(), [](const IsoBytePatch& a, const IsoBytePatch& b) { return a.offset < b.offset; });
  for (std::size_t i = 0; i < patches.size(); ++i) {
    std::uint64_t end = patches[i].offset + patches[i].bytes().size();
    if (end > template_size) throw Error("ISO variant: a patch at byte " + std::to_string(patches[i].offset) + " runs past the image");
    if (i + 1 < patches.size() && end > patches[i + 1].offset) {
      throw Error("ISO variant: patches at bytes " + std::to_string(patches[i].offset) + " and " +
                  std::to_string(patches[i + 1].offset) + " overlap");
    }
  }
  return patches;
}

namespace {

// [offset, offset + length) of `from` into the same place of `to`: copy_file_range, or a write from
// the bytes already in memory where the kernel cannot copy between these files.
void copy_range(int from, int to, std::span<const std::uint8_t> from_bytes, std::uint64_t offset, std::uint64_t length,
                const fs::path& output, bool& kernel_copy) {
  while (length > 0 && kernel_copy) {
    auto in = static_cast<loff_t>(offset);
    auto out = static_cast<loff_t>(offset);
    ssize_t n = ::copy_file_range(from, &in, to, &out, length, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      kernel_copy = false;
      break;
    }
    if (n < 0) throw_system_error("cannot copy into " + output.string() + " at byte " + std::to_string(offset), errno);
    if (n == 0) throw Error("cannot copy into " + output.string() + ": the template ended at byte " + std::to_string(offset));
    offset += static_cast<std::uint64_t>(n);
    length -= static_cast<std::uint64_t>(n);
  }
  if (length > 0) pwrite_all(to, offset, from_bytes.data() + offset, length, output.string());
}

}  // namespace

namespace {

void check_patch_order(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches) {
  std::uint64_t position = 0;
  for (const auto& patch : patches) {
    std::size_t size = patch.bytes().size();
    if (patch.offset < position || patch.offset + size > template_bytes.size()) {
      throw Error("ISO variant: patch at byte " + std::to_string(patch.offset) + " is out of order or past the image");
    }
    position = patch.offset + size;
  }
}

// Hashes the variant's bytes from `position` on into `sha` (which holds the state after `position`
// bytes); the patches are checked to be in order.
Sha256Digest hash_variant_from(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches,
                               Sha256 sha, std::uint64_t position) {
  for (const auto& patch : patches) {
    std::span<const std::uint8_t> bytes = patch.bytes();
    std::uint64_t end = patch.offset + bytes.size();
    if (end <= position) continue;  // wholly before the start: the template's bytes there are the variant's
    if (patch.offset > position) sha.update(template_bytes.subspan(position, patch.offset - position));
    sha.update(bytes.subspan(position > patch.offset ? position - patch.offset : 0));
    position = end;
  }
  sha.update(template_bytes.subspan(position));
  return sha.finish();
}

}  // namespace

Sha256Digest hash_iso_variant(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches) {
  check_patch_order(template_bytes, patches);
  return hash_variant_from(template_bytes, patches, Sha256(), 0);
}

Sha256Digest hash_iso_template(std::span<const std::uint8_t> template_bytes, IsoHashCheckpoints& checkpoints, std::size_t interval) {
  if (interval == 0 || interval % 64 != 0) throw Error("internal: ISO hash checkpoints must be a multiple of 64 bytes apart");
  checkpoints.clear();
  Sha256 sha;
  for (std::uint64_t offset = 0; offset < template_bytes.size(); offset += interval) {
    checkpoints.push_back({offset, sha.copy()});
    sha.update(template_bytes.subspan(offset, std::min<std::uint64_t>(interval, template_bytes.size() - offset)));
  }
  return sha.finish();
}

std::uint64_t first_patched_difference(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches) {
  check_patch_order(template_bytes, patches);
  for (const auto& patch : patches) {
    std::span<const std::uint8_t> bytes = patch.bytes();
    auto differs = std::mismatch(bytes.begin(), bytes.end(), template_bytes.begin() + static_cast<std::ptrdiff_t>(patch.offset));
    if (differs.first != bytes.end()) return patch.offset + static_cast<std::uint64_t>(differs.first - bytes.begin());
  }
  return template_bytes.size();
}

Sha256Digest hash_iso_variant(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches,
                              const IsoHashCheckpoints& checkpoints) {
  std::uint64_t differs = first_patched_difference(template_bytes, patches);
  // The last checkpoint at or before the first difference; checkpoints are in offset order.
  auto after = std::upper_bound(checkpoints.begin(), checkpoints.end(), differs,
                                [](std::uint64_t offset, const IsoHashCheckpoint& c) { return offset < c.offset; });
  if (after == checkpoints.begin()) return hash_variant_from(template_bytes, patches, Sha256(), 0);
  const IsoHashCheckpoint& start = *std::prev(after);
  return hash_variant_from(template_bytes, patches, start.state.copy(), start.offset);
}

Sha256Digest write_iso_variant(const fs::path& template_path, std::span<const std::uint8_t> template_bytes,
                               const std::vector<IsoBytePatch>& patches, const fs::path& output, mode_t mode) {
  // Started first, so the hash runs on the other core while the copy below runs on this one; on a
  // busy machine it simply takes its turn. Joined on every path out (the future's destructor waits).
  std::future<Sha256Digest> digest =
      std::async(std::launch::async, [&template_bytes, &patches] { return hash_iso_variant(template_bytes, patches); });
  copy_iso_variant(template_path, template_bytes, patches, output, mode);
  return digest.get();
}

void copy_iso_variant(const fs::path& template_path, std::span<const std::uint8_t> template_bytes,
                      const std::vector<IsoBytePatch>& patches, const fs::path& output, mode_t mode) {
  FileDescriptor from(::open(template_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!from) throw_system_error("cannot open " + template_path.string(), errno);
  copy_iso_variant(from.get(), template_bytes, patches, output, mode);
}

void copy_iso_variant(int template_fd, std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches,
                      const fs::path& output, mode_t mode) {
  std::error_code ignored;
  fs::remove(output, ignored);
  // Created with its final mode: the output holds a machine config.
  FileDescriptor to(::open(output.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!to) throw_system_error("cannot create " + output.string(), errno);
  if (::fchmod(to.get(), mode) != 0) throw_system_error("cannot set the mode of " + output.string(), errno);

  bool kernel_copy = true;
  // A large patch (a node's UKI, its EFI partition) is mostly the template's bytes: the UKI differs in
  // its headers, checksum and appended archive, the FAT image in those and its allocation. Runs equal to
  // the template are copied like the unpatched ranges; writing them from memory cost ~6x more per byte
  // (docs/benchmarks.md, Talos section). The output's bytes are the same either way.
  constexpr std::uint64_t compared_run = 64 << 10;
  auto write_patch = [&](std::uint64_t offset, std::span<const std::uint8_t> bytes) {
    std::uint64_t written = 0;  // bytes of the patch placed so far
    auto flush = [&](std::uint64_t upto, bool same) {
      if (upto == written) return;
      if (same) {
        copy_range(template_fd, to.get(), template_bytes, offset + written, upto - written, output, kernel_copy);
      } else {
        pwrite_all(to.get(), offset + written, bytes.data() + written, upto - written, output.string());
      }
      written = upto;
    };
    bool same_run = false;
    for (std::uint64_t at = 0; at < bytes.size();) {
      // Runs end on multiples of compared_run from the image start, so copies stay page-aligned.
      std::uint64_t end = std::min<std::uint64_t>(bytes.size(), (offset + at) / compared_run * compared_run + compared_run - offset);
      bool same = std::memcmp(bytes.data() + at, template_bytes.data() + offset + at, end - at) == 0;
      if (same != same_run) flush(at, same_run);
      same_run = same;
      at = end;
    }
    flush(bytes.size(), same_run);
  };
  std::uint64_t position = 0;
  for (const auto& patch : patches) {
    copy_range(template_fd, to.get(), template_bytes, position, patch.offset - position, output, kernel_copy);
    std::span<const std::uint8_t> bytes = patch.bytes();
    write_patch(patch.offset, bytes);
    position = patch.offset + bytes.size();
  }
  copy_range(template_fd, to.get(), template_bytes, position, template_bytes.size() - position, output, kernel_copy);
}

}  // namespace aggrik8s::builder
