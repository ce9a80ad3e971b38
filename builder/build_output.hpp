#pragma once
// What every build (Raspberry Pi images, Talos ISOs) needs around its outputs: files written under a
// temporary name are removed unless the build completes, and scratch space lives beside the outputs
// (same filesystem, so renames and reflinks work) and is removed whatever happens.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "core/error.hpp"

namespace aggrik8s::builder {

// The nodes `build --node` asked for (all when none), in profile order. A name the profile does not
// have is an error rather than a silently smaller build.
template <typename Node>
std::vector<const Node*> select_nodes(const std::vector<Node>& all, const std::vector<std::string>& wanted,
                                      const std::filesystem::path& profile_file) {
  for (const auto& name : wanted) {
    if (std::none_of(all.begin(), all.end(), [&](const Node& n) { return n.name == name; })) {
      throw Error(profile_file.string() + ": no node named '" + name + "'");
    }
  }
  std::vector<const Node*> selected;
  for (const auto& node : all) {
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), node.name) != wanted.end()) selected.push_back(&node);
  }
  if (selected.empty()) throw Error(profile_file.string() + ": nothing to build");
  return selected;
}

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
