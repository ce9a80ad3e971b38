#include "builder/rpi/rke2_bundle.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <vector>

#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/huge_pages.hpp"
#include "core/log.hpp"
#include "core/positional_io.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t accounting_block = 4096;

struct ArchiveReader {
  archive* handle = archive_read_new();
  ArchiveReader() = default;
  ArchiveReader(const ArchiveReader&) = delete;
  ArchiveReader& operator=(const ArchiveReader&) = delete;
  ~ArchiveReader() { archive_read_free(handle); }
};

std::string entry_path(const fs::path& tarball, const std::string& prefix, std::string name) {
  while (name.starts_with("./")) name.erase(0, 2);
  while (!name.empty() && name.back() == '/') name.pop_back();
  if (name.empty()) return prefix;
  if (name.starts_with("/") || name == ".." || name.starts_with("../") || name.find("/../") != std::string::npos) {
    throw Error(tarball.string() + ": refusing archive entry '" + name + "': it would land outside " + prefix);
  }
  return prefix + "/" + name;
}

}  // namespace

Rke2Bundle read_rke2_bundle(const fs::path& tarball, const std::string& prefix, std::uint64_t block_size) {
  ArchiveReader reader;
  archive* a = reader.handle;
  archive_read_support_filter_all(a);
  archive_read_support_format_all(a);
  auto fail = [&]() -> Error { return Error(tarball.string() + ": " + archive_error_string(a)); };
  if (archive_read_open_filename(a, tarball.c_str(), 1 << 20) != ARCHIVE_OK) throw fail();
  FileDescriptor fd(::open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_system_error("cannot open " + tarball.string(), errno);

  Rke2Bundle bundle;
  bundle.tarball = tarball;
  archive_entry* entry = nullptr;
  std::vector<std::uint8_t> check;
  while (true) {
    int r = archive_read_next_header(a, &entry);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) throw fail();
    Rke2BundleMember member;
    member.name = archive_entry_pathname(entry) != nullptr ? archive_entry_pathname(entry) : "";
    member.path = entry_path(tarball, prefix, member.name);
    member.permissions = static_cast<std::uint16_t>(archive_entry_perm(entry) & 07777);
    member.mtime = archive_entry_mtime(entry);
    member.size = static_cast<std::uint64_t>(std::max<la_int64_t>(0, archive_entry_size(entry)));
    bundle.unpacked_bytes += round_up(member.size, accounting_block) + accounting_block;
    if (const char* target = archive_entry_hardlink(entry); target != nullptr) {
      // Another name of an earlier member (tar stores the file once); its data, if any, is that file's.
      member.kind = Rke2BundleMember::Kind::hard_link;
      member.link_target = entry_path(tarball, prefix, target);
      bundle.members.push_back(std::move(member));
      continue;
    }
    switch (archive_entry_filetype(entry)) {
      case AE_IFDIR:
        member.kind = Rke2BundleMember::Kind::directory;
        break;
      case AE_IFLNK:
        member.kind = Rke2BundleMember::Kind::symlink;
        member.link_target = archive_entry_symlink(entry) != nullptr ? archive_entry_symlink(entry) : "";
        break;
      case AE_IFREG: {
        member.kind = Rke2BundleMember::Kind::regular;
        // The member's bytes follow its header(s) in an uncompressed tar: where the format reader
        // stands now (archive_filter_bytes of the only filter). A GNU or pax sparse member's are not
        // one window of the file.
        const bool window = member.size > 0 && archive_filter_count(a) == 1 &&
                            (archive_format(a) & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_TAR &&
                            archive_entry_sparse_count(entry) == 0;
        const la_int64_t at = archive_filter_bytes(a, 0);
        const void* block = nullptr;
        size_t size = 0;
        la_int64_t offset = 0;
        std::vector<std::uint8_t>& content = member.content;
        bool first = true;
        while ((r = archive_read_data_block(a, &block, &size, &offset)) == ARCHIVE_OK) {
          if (first && window && at >= 0 && offset == 0 && size > 0) {
            // Checked against the file rather than trusted: the first block libarchive hands out
            // must be the file's bytes where the window starts.
            check.resize(size);
            if (pread_up_to(fd.get(), static_cast<std::uint64_t>(at), check.data(), size, tarball.string()) == size &&
                std::memcmp(check.data(), block, size) == 0) {
              member.window = scan_host_file(tarball, block_size, static_cast<std::uint64_t>(at), member.size);
              break;  // the rest is skipped by the next header
            }
            log::debug(tarball.string(), ": ", member.name, " is not where its header ends; reading it");
          }
          if (first) {
            // Room for the whole file at once, on huge pages: RKE2's binary is ~80 MiB, and grown as
            // it is read, the buffer cost 0.5-1 s of page faults on the project's VMs (huge_pages.hpp).
            reserve_on_huge_pages(content, static_cast<std::size_t>(member.size));
            first = false;
          }
          if (static_cast<std::size_t>(offset) > content.size()) content.resize(static_cast<std::size_t>(offset));
          const auto* bytes = static_cast<const std::uint8_t*>(block);
          content.insert(content.end(), bytes, bytes + size);
        }
        if (!member.window) {
          if (r != ARCHIVE_EOF) throw fail();
          content.resize(static_cast<std::size_t>(member.size));  // a sparse member's trailing hole
        }
        break;
      }
      default:
        member.kind = Rke2BundleMember::Kind::other;
    }
    bundle.members.push_back(std::move(member));
  }
  return bundle;
}

bool install_rke2_bundle(Ext4Filesystem& rootfs, const Rke2Bundle& bundle, std::optional<std::int64_t> fixed_time,
                         std::uint64_t device_offset, std::size_t file, std::vector<CopiedRange>& copied) {
  bool placed = false;
  for (const Rke2BundleMember& member : bundle.members) {
    const Ext4Timestamp mtime{fixed_time.value_or(member.mtime), 0};
    const Ext4FileAttributes attributes{member.permissions, 0, 0, mtime};
    rootfs.create_directories(fs::path(member.path).parent_path().string(), {0755, 0, 0, mtime});
    switch (member.kind) {
      case Rke2BundleMember::Kind::directory:
        rootfs.create_directories(member.path, attributes);
        break;
      case Rke2BundleMember::Kind::symlink:
        rootfs.create_symlink(member.path, member.link_target, {0777, 0, 0, mtime});
        break;
      case Rke2BundleMember::Kind::hard_link:
        rootfs.create_hard_link(member.path, member.link_target);
        break;
      case Rke2BundleMember::Kind::regular:
        if (member.window) {
          for (const Ext4PlacedRun& run : rootfs.place_file_from_host(*member.window, member.path, attributes)) {
            copied.push_back({device_offset + run.device_offset, run.length, file, member.window->offset + run.file_offset,
                              member.size - run.file_offset});
            placed = true;
          }
        } else {
          rootfs.write_file(member.path, std::as_bytes(std::span(member.content)), attributes);
        }
        break;
      case Rke2BundleMember::Kind::other:
        log::warning(bundle.tarball.string(), ": skipping ", member.name, " (not a file, directory, symlink or hard link)");
        break;
    }
  }
  return placed;
}

}  // namespace aggrik8s::builder
