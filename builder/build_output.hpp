#pragma once
// What every build (Raspberry Pi images, Talos ISOs) needs around its outputs: files written under a
// temporary name are removed unless the build completes, and scratch space lives beside the outputs
// (same filesystem, so renames and reflinks work) and is removed whatever happens.
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace aggrik8s::builder {

// Outputs this build has started, removed (newest first) unless commit() is reached. Files already
// renamed into place are tracked too: a build that fails half-way leaves nothing that looks valid.
class PartialOutputs {
 public:
  PartialOutputs() = default;
  PartialOutputs(const PartialOutputs&) = delete;
  PartialOutputs& operator=(const PartialOutputs&) = delete;
  ~PartialOutputs() {
    if (committed_) return;
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
      std::error_code ec;
      std::filesystem::remove_all(*it, ec);
    }
  }
  std::filesystem::path track(const std::filesystem::path& path) {
    paths_.push_back(path);
    return path;
  }
  void commit() { committed_ = true; }

 private:
  std::vector<std::filesystem::path> paths_;
  bool committed_ = false;
};

// <output_dir>/.<prefix>-<pid>, mode 0700 (it may hold secrets on their way into an image).
class WorkDirectory {
 public:
  WorkDirectory(const std::filesystem::path& output_dir, const std::string& prefix) {
    path_ = output_dir / ("." + prefix + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all);
  }
  WorkDirectory(const WorkDirectory&) = delete;
  WorkDirectory& operator=(const WorkDirectory&) = delete;
  ~WorkDirectory() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace aggrik8s::builder
