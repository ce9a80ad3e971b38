#pragma once
// Where a TFTP transfer reads its file from. The server's shared tree is a directory on disk; a Raspberry
// Pi node's tree is the boot partition of the image the builder wrote, read straight out of the image
// file, so an operator never mounts or extracts anything by hand. Both keep TftpRoot's confinement
// semantics: names are normalised the same way and ".." is refused before anything is looked up.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "netboot/tftp/tftp_path.hpp"

namespace aggrik8s {
class FileBlockDevice;
class FatFilesystem;
class SubrangeBlockDevice;
}  // namespace aggrik8s

namespace aggrik8s::netboot {

class TftpFileSource {
 public:
  virtual ~TftpFileSource() = default;
  // As TftpRoot::open: `client_prefixes` are tried first, a refusal ends the search. Never throws for
  // a bad request; the returned status says why nothing was opened.
  virtual TftpOpenedFile open(std::string_view requested, std::span<const std::string> client_prefixes = {}) const = 0;
  // "/srv/tftp", "out/pi5.img partition 1": for logs.
  virtual std::string describe() const = 0;
};

class TftpDirectorySource final : public TftpFileSource {
 public:
  explicit TftpDirectorySource(const std::filesystem::path& root, ConfinedReach reach = ConfinedReach::any_file)
      : root_(root, reach) {}
  TftpOpenedFile open(std::string_view requested, std::span<const std::string> client_prefixes = {}) const override {
    return root_.open(requested, client_prefixes);
  }
  std::string describe() const override { return root_.path().string(); }

 private:
  TftpRoot root_;
};

// One file made by the server for one request (an ephemeral Pi's cmdline.txt, which names its build
// and its node): the content goes into an anonymous memory file, handed out like any other.
class TftpGeneratedFileSource final : public TftpFileSource {
 public:
  TftpGeneratedFileSource(std::string name, std::string content) : name_(std::move(name)), content_(std::move(content)) {}
  // Opens the content whatever the name (the caller chose the source for that name).
  TftpOpenedFile open(std::string_view requested, std::span<const std::string> client_prefixes = {}) const override;
  std::string describe() const override { return "(generated " + name_ + ")"; }

 private:
  std::string name_;
  std::string content_;
};

// A FAT partition inside an image file, read with FatFilesystem (no mount, no loop device, no root).
// A requested file is copied once into an anonymous memory file (memfd) and handed out as a descriptor,
// so the transfer code reads it with pread() exactly as it reads a file on disk, and twenty Pis booting
// the same image share one copy. Boot partition files are tens of MiB at most; the copies are dropped
// when the image file changes (a rebuild) and on reload, when the source itself is replaced.
class FatImageFileSource final : public TftpFileSource {
 public:
  // Throws aggrik8s::Error if the image cannot be read, has no such partition or it is not FAT.
  FatImageFileSource(std::filesystem::path image, std::uint32_t partition_index = 1);
  ~FatImageFileSource() override;

  TftpOpenedFile open(std::string_view requested, std::span<const std::string> client_prefixes = {}) const override;
  std::string describe() const override;
  const std::filesystem::path& image() const { return image_; }

 private:
  struct OpenImage;
  TftpOpenedFile open_relative(const std::string& relative) const;
  OpenImage& current() const;  // reopens when the image file changed; mutex_ held

  std::filesystem::path image_;
  std::uint32_t partition_index_;
  mutable std::mutex mutex_;
  mutable std::unique_ptr<OpenImage> open_;
};

}  // namespace aggrik8s::netboot
