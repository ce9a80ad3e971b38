#include "netboot/tftp/tftp_file_source.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/partition_table.hpp"
#include "core/error.hpp"
#include "core/positional_io.hpp"

namespace aggrik8s::netboot {

struct FatImageFileSource::OpenImage {
  OpenImage(const std::filesystem::path& image, std::uint32_t partition_index)
      : device(image, FileBlockDevice::Access::read_only),
        table(read_partition_table(device)),
        partition(open_partition(device, table, partition_index)),
        filesystem(partition) {}

  FileBlockDevice device;
  PartitionTable table;
  SubrangeBlockDevice partition;
  FatFilesystem filesystem;
  struct timespec modified {};
  std::uint64_t size = 0;
  // relative path (as requested, case kept) -> memfd with the file's content
  std::map<std::string, FileDescriptor> copies;
};

namespace {

struct ImageIdentity {
  struct timespec modified {};
  std::uint64_t size = 0;
  bool ok = false;
};

ImageIdentity identify(const std::filesystem::path& image) {
  struct stat info {};
  ImageIdentity identity;
  if (::stat(image.c_str(), &info) != 0) return identity;
  identity.modified = info.st_mtim;
  identity.size = static_cast<std::uint64_t>(info.st_size);
  identity.ok = true;
  return identity;
}

bool same(const ImageIdentity& identity, const struct timespec& modified, std::uint64_t size) {
  return identity.modified.tv_sec == modified.tv_sec && identity.modified.tv_nsec == modified.tv_nsec &&
         identity.size == size;
}

FileDescriptor memory_copy(const std::string& name, std::span<const std::uint8_t> content) {
  FileDescriptor fd(::memfd_create(("tftp:" + name).c_str(), MFD_CLOEXEC));
  if (!fd) throw_system_error("memfd_create for " + name, errno);
  write_all(fd.get(), content.data(), content.size(), "the in-memory copy of " + name);
  return fd;
}

}  // namespace

TftpOpenedFile TftpGeneratedFileSource::open(std::string_view, std::span<const std::string>) const {
  TftpOpenedFile file;
  file.fd = memory_copy(name_, std::span(reinterpret_cast<const std::uint8_t*>(content_.data()), content_.size()));
  file.size = content_.size();
  file.path = name_;
  file.status = TftpOpenStatus::opened;
  return file;
}

FatImageFileSource::FatImageFileSource(std::filesystem::path image, std::uint32_t partition_index)
    : image_(std::move(image)), partition_index_(partition_index) {
  std::lock_guard lock(mutex_);
  current();  // fail at configuration time, not at the first boot
}

FatImageFileSource::~FatImageFileSource() = default;

std::string FatImageFileSource::describe() const {
  return image_.string() + " partition " + std::to_string(partition_index_);
}

FatImageFileSource::OpenImage& FatImageFileSource::current() const {
  ImageIdentity identity = identify(image_);
  if (!identity.ok) throw Error("Pi image " + image_.string() + ": " + std::strerror(errno));
  if (!open_ || !same(identity, open_->modified, open_->size)) {
    auto fresh = std::make_unique<OpenImage>(image_, partition_index_);
    fresh->modified = identity.modified;
    fresh->size = identity.size;
    open_ = std::move(fresh);
  }
  return *open_;
}

TftpOpenedFile FatImageFileSource::open(std::string_view requested, std::span<const std::string> client_prefixes) const {
  return open_with_client_prefixes(requested, client_prefixes,
                                   [this](const std::string& relative) { return open_relative(relative); });
}

TftpOpenedFile FatImageFileSource::open_relative(const std::string& relative) const {
  TftpOpenedFile result;
  result.path = image_.string() + ":/" + relative;
  try {
    std::lock_guard lock(mutex_);
    OpenImage& image = current();
    auto cached = image.copies.find(relative);
    if (cached == image.copies.end()) {
      // FAT has no links, so a normalised name cannot lead outside the partition.
      auto entry = image.filesystem.stat(relative);
      if (!entry) {
        result.status = TftpOpenStatus::not_found;
        result.reason = result.path.string() + ": no such file in the image";
        return result;
      }
      if (entry->is_directory) {
        result.status = TftpOpenStatus::access_violation;
        result.reason = result.path.string() + " is a directory";
        return result;
      }
      std::vector<std::uint8_t> content = image.filesystem.read_file(relative);
      cached = image.copies.emplace(relative, memory_copy(relative, content)).first;
    }
    // Each transfer gets its own descriptor: pread() has no shared offset, and the copy outlives a
    // rebuild of the image for transfers already running.
    FileDescriptor fd(::fcntl(cached->second.get(), F_DUPFD_CLOEXEC, 0));
    if (!fd) throw_system_error("dup of the copy of " + relative, errno);
    struct stat info {};
    if (::fstat(fd.get(), &info) != 0) throw_system_error("fstat of the copy of " + relative, errno);
    result.status = TftpOpenStatus::opened;
    result.fd = std::move(fd);
    result.size = static_cast<std::uint64_t>(info.st_size);
  } catch (const std::exception& e) {
    result.status = TftpOpenStatus::access_violation;
    result.reason = e.what();
  }
  return result;
}

}  // namespace aggrik8s::netboot
