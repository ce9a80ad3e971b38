#include "disk/tar_writer.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "disk/partial_output_file.hpp"

namespace aggrik8s {

namespace {

// "./etc/hostname" for "/etc/hostname", "./" for the root: the names `tar -C DIR .` gives, which every
// tar unpacks relative to its -C directory.
std::string archive_path(const std::string& path) { return path == "/" ? "./" : "." + path; }

struct ArchiveFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

class TarArchiveWriter {
 public:
  // open_archive opens `archive` on its destination (a file descriptor, a memory callback).
  TarArchiveWriter(std::string name, const std::function<int(archive*)>& open_archive)
      : name_(std::move(name)), archive_(archive_write_new()) {
    if (!archive_) throw Error(name_ + ": cannot create a tar writer: out of memory");
    check(archive_write_set_format_pax_restricted(archive_.get()), "choose the pax format");
    // Extended attributes once, under the SCHILY.xattr names GNU tar and libarchive both read, not
    // also as LIBARCHIVE.xattr (which GNU tar warns about and ignores).
    check(archive_write_set_format_option(archive_.get(), "pax", "xattrheader", "SCHILY"), "choose SCHILY.xattr headers");
    // No padding of the last block to 10 KiB: libarchive decides that by the kind of output
    // (padded for memory and devices, not for regular files), and both must give the same bytes.
    check(archive_write_set_bytes_in_last_block(archive_.get(), 1), "set the archive's padding");
    check(open_archive(archive_.get()), "open the archive");
  }

  void add(const FilesystemTreeEntry& entry) {
    std::unique_ptr<archive_entry, EntryFree> header(archive_entry_new());
    if (!header) throw Error(name_ + ": out of memory");
    const std::string path = archive_path(entry.path);
    archive_entry_set_pathname(header.get(), path.c_str());
    archive_entry_set_perm(header.get(), entry.permissions & 07777);
    archive_entry_set_uid(header.get(), entry.uid);
    archive_entry_set_gid(header.get(), entry.gid);
    archive_entry_set_mtime(header.get(), entry.mtime.seconds, 0);
    for (const auto& attribute : entry.extended_attributes) {
      archive_entry_xattr_add_entry(header.get(), attribute.name.c_str(), attribute.value.data(), attribute.value.size());
    }

    if (entry.type != Ext4FileType::directory && entry.inode != 0) {
      auto [first, inserted] = first_names_.emplace(entry.inode, path);
      if (!inserted) {
        // Unpacked as link(2) to the first name; carries no data of its own.
        archive_entry_set_filetype(header.get(), file_type_mode_bits(entry.type));
        archive_entry_set_hardlink(header.get(), first->second.c_str());
        archive_entry_set_size(header.get(), 0);
        write_header(header.get(), entry.path);
        result_.hard_links++;
        return;
      }
    }

    archive_entry_set_filetype(header.get(), file_type_mode_bits(entry.type));
    archive_entry_set_size(header.get(), entry.type == Ext4FileType::regular ? static_cast<la_int64_t>(entry.size) : 0);
    if (entry.type == Ext4FileType::symlink) archive_entry_set_symlink(header.get(), entry.symlink_target.c_str());
    if (entry.type == Ext4FileType::character_device || entry.type == Ext4FileType::block_device) {
      archive_entry_set_rdevmajor(header.get(), entry.device_major);
      archive_entry_set_rdevminor(header.get(), entry.device_minor);
    }
    write_header(header.get(), entry.path);
    if (entry.type == Ext4FileType::regular) write_data(entry);
  }

  TarWriteResult finish() {
    check(archive_write_close(archive_.get()), "finish the archive");
    return result_;
  }

 private:
  void check(int status, const std::string& what) const {
    if (status < ARCHIVE_WARN) {
      const char* message = archive_error_string(archive_.get());
      throw Error(name_ + ": cannot " + what + ": " + (message != nullptr ? message : "libarchive error"));
    }
  }

  void write_header(archive_entry* header, const std::string& path) {
    check(archive_write_header(archive_.get(), header), "write the header of " + path);
    result_.entries++;
  }

  void write_bytes(const void* data, std::size_t size, const std::string& path) {
    la_ssize_t written = archive_write_data(archive_.get(), data, size);
    if (written < 0 || static_cast<std::size_t>(written) != size) {
      const char* message = archive_error_string(archive_.get());
      throw Error(name_ + ": cannot write the data of " + path + ": " + (message != nullptr ? message : "short write"));
    }
  }

  void write_zeros(std::uint64_t count, const std::string& path) {
    static const std::vector<std::byte> zeros(std::size_t{1} << 20);
    while (count > 0) {
      auto n = static_cast<std::size_t>(std::min<std::uint64_t>(count, zeros.size()));
      write_bytes(zeros.data(), n, path);
      count -= n;
    }
  }

  void write_data(const FilesystemTreeEntry& entry) {
    std::uint64_t position = 0;
    entry.read_data([&](std::uint64_t offset, std::span<const std::byte> data) {
      if (offset < position || offset + data.size() > entry.size) {
        throw Error(entry.path + ": data piece at byte " + std::to_string(offset) + " out of order or past the end");
      }
      write_zeros(offset - position, entry.path);
      write_bytes(data.data(), data.size(), entry.path);
      position = offset + data.size();
    });
    write_zeros(entry.size - position, entry.path);
    result_.file_data_bytes += entry.size;
  }

  std::string name_;
  std::unique_ptr<archive, ArchiveFree> archive_;
  std::unordered_map<std::uint32_t, std::string> first_names_;
  TarWriteResult result_;
};

TarWriteResult write_archive(const Ext4Filesystem& filesystem, const TarWriteOptions& options, const std::string& name,
                             const std::function<int(archive*)>& open_archive) {
  TarArchiveWriter writer(name, open_archive);
  walk_ext4_tree(filesystem, options.selection, [&](const FilesystemTreeEntry& entry) { writer.add(entry); });
  return writer.finish();
}

}  // namespace

TarWriteResult write_tar(const Ext4Filesystem& filesystem, const std::filesystem::path& output,
                         const TarWriteOptions& options) {
  PartialOutputFile partial(output);
  FileDescriptor fd(::open(partial.path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw_system_error("cannot create " + partial.path().string(), errno);
  TarWriteResult result = write_archive(filesystem, options, partial.path().string(),
                                        [&](archive* a) { return archive_write_open_fd(a, fd.get()); });
  if (::close(fd.release()) != 0) throw_system_error("cannot write " + partial.path().string(), errno);
  result.bytes_written = std::filesystem::file_size(partial.path());
  partial.commit();
  return result;
}

std::string write_tar_to_memory(const Ext4Filesystem& filesystem, const TarWriteOptions& options) {
  std::string bytes;
  auto append = [](archive*, void* data, const void* buffer, size_t length) -> la_ssize_t {
    static_cast<std::string*>(data)->append(static_cast<const char*>(buffer), length);
    return static_cast<la_ssize_t>(length);
  };
  write_archive(filesystem, options, "tar archive in memory",
                [&](archive* a) { return archive_write_open2(a, &bytes, nullptr, append, nullptr, nullptr); });
  return bytes;
}

}  // namespace aggrik8s
