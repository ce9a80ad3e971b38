#pragma once
// What every build (Raspberry Pi images, Talos ISOs) needs around its outputs: files written under a
// temporary name are removed unless the build completes, small files are replaced whole (never seen
// half-written), every output is described by its size and SHA-256 for SHA256SUMS and the manifest,
// and scratch space lives beside the outputs (same filesystem, so renames and reflinks work) and is
// removed whatever happens. The manifest itself: builder/build_manifest.hpp.
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {

struct BuildOptions {
  std::filesystem::path output_dir;
  std::vector<std::string> only_nodes;          // empty: all
  std::optional<std::int64_t> source_date_epoch;  // pins every timestamp written
  // Each Pi image is fdatasync'ed before it is renamed into place, so a crash or power cut never leaves
  // a complete-looking image with missing blocks. false (--no-sync) leaves the writeback to the kernel:
  // the build then ends when the images are in the page cache, which on a slow disk is most of the
  // time for several nodes (the disk must still write them; a crash soon after may leave an image
  // that fails `sha256sum -c SHA256SUMS`).
  bool sync_images = true;
  FetchOptions fetch;
};

// One output file as SHA256SUMS and the manifest list it.
struct BuiltFile {
  std::filesystem::path path;
  std::uint64_t size = 0;
  Sha256Digest sha256;
};

// The permission bits a written file gets. A file holding a secret must be 0600 whatever the umask
// and even when a stale file of that name was more open, so its mode is set exactly; other files
// may leave the umask to the user, as the files of most tools do.
struct FileMode {
  mode_t bits = 0644;
  bool umask_applies = false;
  static constexpr FileMode exactly(mode_t bits) { return {bits, false}; }
  static constexpr FileMode less_umask(mode_t bits) { return {bits, true}; }
};

// Creates (or truncates) `path` with `mode` from the start, so a secret is never briefly readable by
// others, and writes `content` to it.
void write_file_with_mode(const std::filesystem::path& path, const std::string& content, FileMode mode);
void write_file_with_mode(const std::filesystem::path& path, std::span<const std::uint8_t> content, FileMode mode);

// Replaces `path` whole: `content` goes to <path>.partial, which is then renamed over `path`, so a
// reader (or a crash) finds the old file or the new one, never half of one. On failure the .partial
// is removed and `path` is as it was.
void write_text_file_atomically(const std::filesystem::path& path, const std::string& content, FileMode mode);

// SHA-256 of files hard-linked to one another, taken once: Talos netboot nodes' kernels and
// initramfs are links to one file each, and hashing it again for every node is most of the time
// their listing would take. A digest is reused only while the inode's mtime is what it was.
class DigestsByInode {
 public:
  Sha256Digest of(const std::filesystem::path& path, dev_t device, ino_t inode, nlink_t links, const timespec& mtime);

 private:
  struct Seen {
    timespec mtime{};
    Sha256Digest digest;
  };
  std::map<std::pair<dev_t, ino_t>, Seen> seen_;
};

// mkdir -p with mode 0755 (less under a stricter umask): create_directories' 0777 under umask 000 would
// make the directories that hold node configs and images world-writable, so anyone could swap a
// node's config.yaml. Existing directories are left as they are.
void create_output_directories(const std::filesystem::path& directory);

// One build at a time in an output directory, which the constructor creates (create_output_directories)
// and locks until the build ends. Two builds into the same directory wrote the same *.partial names:
// one's cleanup removed the other's files, and the other published a SHA256SUMS its images no longer
// matched. The lock is an exclusive flock on the directory itself (no lock file among the outputs),
// which the kernel drops when the process ends, however it ends; a second build fails at once, naming
// the directory. Where the filesystem cannot flock a directory (NFS emulates flock with byte-range
// locks, which want a file open for writing) the build goes on unlocked, as it did before.
class OutputDirectoryLock {
 public:
  explicit OutputDirectoryLock(const std::filesystem::path& output_dir);
  // Whether the lock is held (false where the filesystem refused to lock).
  bool held() const { return static_cast<bool>(fd_); }

 private:
  FileDescriptor fd_;
};

// Size and SHA-256 of an output file, as it is on disk now.
BuiltFile describe_file(const std::filesystem::path& path, DigestsByInode& digests);

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
// renamed into place are tracked too: a build that fails half-way leaves nothing that looks valid. What
// an output replaced (an earlier build's n1.iso, netboot/n1/) is kept under another name until
// commit() and put back otherwise, so an interrupted or failed rebuild leaves the earlier build whole,
// as its SHA256SUMS and manifest (still in place) describe it; they replaced files removed and kept
// the old record naming them.
class PartialOutputs {
 public:
  PartialOutputs() = default;
  PartialOutputs(const PartialOutputs&) = delete;
  PartialOutputs& operator=(const PartialOutputs&) = delete;
  ~PartialOutputs();
  // Also removed if the process is interrupted first (core/interrupt_cleanup.hpp).
  std::filesystem::path track(const std::filesystem::path& path);
  // Renames `from` (tracked) to `to`. Whatever was at `to` is first given a second name (a hard link;
  // a directory is renamed), all with an interrupt's cleanup held off, so the cleanup, which may run
  // at any moment on its own thread, finds the new output under one of its names and the old one
  // under the other.
  void publish(const std::filesystem::path& from, const std::filesystem::path& to);
  // Keeps every output and drops what they replaced.
  void commit();

 private:
  struct Output {
    std::filesystem::path path;
    std::filesystem::path previous;  // what `path` replaced, renamed back unless committed; empty: none
    std::unique_ptr<RemovedOnInterrupt> on_interrupt;  // not movable: one allocation each
  };
  std::vector<Output> outputs_;
  bool committed_ = false;
};

// The .<prefix>-<pid> directories of builds that are gone (killed with SIGKILL, or a crash: an
// interrupt removes its own), with whatever secrets they held: removed before a new build starts.
void remove_abandoned_work_directories(const std::filesystem::path& output_dir, const std::string& prefix);

// <output_dir>/.<prefix>-<pid>, mode 0700 (it may hold secrets on their way into an image).
class WorkDirectory {
 public:
  WorkDirectory(const std::filesystem::path& output_dir, const std::string& prefix) {
    remove_abandoned_work_directories(output_dir, prefix);
    path_ = output_dir / ("." + prefix + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    on_interrupt_.emplace(path_);
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
  std::optional<RemovedOnInterrupt> on_interrupt_;
};

}  // namespace aggrik8s::builder
