#pragma once
// The seam between on-disk formats (partition tables, FAT) and storage: an image file, a buffer in a
// unit test, or a partition-sized window of either. Format code only ever sees a BlockDevice, so it
// can be tested without files and never needs a loop device or root.
//
// Offsets are in bytes; reads and writes past size() are errors (an image never grows implicitly:
// growing it is a decision, taken with resize()).
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "disk/data_extent.hpp"
#include "core/file_descriptor.hpp"

namespace aggrik8s {

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  BlockDevice() = default;
  BlockDevice(const BlockDevice&) = delete;
  BlockDevice& operator=(const BlockDevice&) = delete;

  virtual std::uint64_t size() const = 0;
  // Fills the whole buffer or throws Error.
  virtual void read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) = 0;
  virtual void write_at(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
  // Default: not resizable (a partition view cannot change its bounds).
  virtual void resize(std::uint64_t new_size);
  virtual void flush() {}
  // For error messages: "out/pi5.img", "out/pi5.img partition 1".
  virtual std::string name() const = 0;

 protected:
  // Concrete devices may be moved (returned from factories); slicing copies through the base may not.
  BlockDevice(BlockDevice&&) = default;
  BlockDevice& operator=(BlockDevice&&) = default;
  // Throws Error naming the device when [offset, offset+length) does not fit in size().
  void check_range(const char* operation, std::uint64_t offset, std::uint64_t length) const;
};

// An image file accessed with pread/pwrite. Writing all-zero blocks into a region that is still a
// hole is skipped, so images stay sparse (a 512 MiB FAT partition holding 30 MiB stays ~30 MiB on disk).
class FileBlockDevice final : public BlockDevice {
 public:
  enum class Access { read_only, read_write };
  FileBlockDevice(const std::filesystem::path& path, Access access);

  std::uint64_t size() const override { return size_; }
  void read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) override;
  void write_at(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  // ftruncate: growing adds a hole, never allocated zeros.
  void resize(std::uint64_t new_size) override;
  void flush() override;
  std::string name() const override { return path_.string(); }
  int fd() const { return fd_.get(); }
  // The byte ranges write_at was asked to write, merged (all-zero blocks it skipped included).
  std::vector<DataExtent> written_extents() const { return merge_extents(written_); }

 private:
  void write_fully(std::uint64_t offset, std::span<const std::uint8_t> data);
  std::vector<DataExtent> written_;
  std::filesystem::path path_;
  FileDescriptor fd_;
  Access access_;
  std::uint64_t size_ = 0;
};

// A buffer in memory, for unit tests and for building small structures before they are placed.
class MemoryBlockDevice final : public BlockDevice {
 public:
  explicit MemoryBlockDevice(std::uint64_t size, std::string name = "memory");
  explicit MemoryBlockDevice(std::vector<std::uint8_t> bytes, std::string name = "memory");

  std::uint64_t size() const override { return bytes_.size(); }
  void read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) override;
  void write_at(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  void resize(std::uint64_t new_size) override;
  std::string name() const override { return name_; }

  std::vector<std::uint8_t>& bytes() { return bytes_; }
  const std::vector<std::uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
  std::string name_;
};

// [offset, offset + length) of another device, seen as a device of its own (a partition). The parent
// must outlive the view.
class SubrangeBlockDevice final : public BlockDevice {
 public:
  SubrangeBlockDevice(BlockDevice& parent, std::uint64_t offset, std::uint64_t length, std::string name);

  std::uint64_t size() const override { return length_; }
  void read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) override;
  void write_at(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  void flush() override { parent_.flush(); }
  std::string name() const override { return name_; }

 private:
  BlockDevice& parent_;
  std::uint64_t offset_;
  std::uint64_t length_;
  std::string name_;
};

}  // namespace aggrik8s
