#include "builder/build_output.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/file_descriptor.hpp"
#include "core/log.hpp"
#include "core/positional_io.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

void write_file_with_mode(const fs::path& path, const std::string& content, FileMode mode) {
  write_file_with_mode(path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(content.data()), content.size()), mode);
}

void write_file_with_mode(const fs::path& path, std::span<const std::uint8_t> content, FileMode mode) {
  FileDescriptor out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode.bits));
  if (!out) throw_system_error("cannot create " + path.string(), errno);
  // open() gives a new file mode & ~umask and leaves an existing file's mode as it was.
  if (!mode.umask_applies && ::fchmod(out.get(), mode.bits) != 0) {
    throw_system_error("cannot set the mode of " + path.string(), errno);
  }
  pwrite_all(out.get(), 0, content.data(), content.size(), path.string());
}

void write_text_file_atomically(const fs::path& path, const std::string& content, FileMode mode) {
  fs::path partial = path;
  partial += ".partial";
  try {
    write_file_with_mode(partial, content, mode);
    fs::rename(partial, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(partial, ignored);
    throw;
  }
}

Sha256Digest DigestsByInode::of(const fs::path& path, dev_t device, ino_t inode, nlink_t links, const timespec& mtime) {
  // A file with one link cannot be met again under another name: not worth remembering.
  if (links <= 1) return Sha256::of_file(path);
  auto key = std::make_pair(device, inode);
  auto it = seen_.find(key);
  if (it != seen_.end() && it->second.mtime.tv_sec == mtime.tv_sec && it->second.mtime.tv_nsec == mtime.tv_nsec) {
    return it->second.digest;
  }
  Sha256Digest digest = Sha256::of_file(path);
  seen_[key] = {mtime, digest};
  return digest;
}

PartialOutputs::~PartialOutputs() {
  if (committed_) return;
  for (auto it = outputs_.rbegin(); it != outputs_.rend(); ++it) {
    std::error_code ec;
    fs::remove_all(it->path, ec);
    if (!it->previous.empty()) fs::rename(it->previous, it->path, ec);
  }
}

fs::path PartialOutputs::track(const fs::path& path) {
  outputs_.push_back({path, {}, std::make_unique<RemovedOnInterrupt>(path)});
  return path;
}

void PartialOutputs::publish(const fs::path& from, const fs::path& to) {
  InterruptCleanup::hold_off([&] {
    fs::path previous;
    struct stat st {};
    // Published twice in one build: the first publish keeps what the build started from.
    bool again = std::any_of(outputs_.begin(), outputs_.end(), [&](const Output& o) { return o.path == to; });
    if (!again && ::lstat(to.c_str(), &st) == 0) {
      // Beside it, so the rename back cannot cross filesystems; a name no output has.
      previous = to.parent_path() / ("." + to.filename().string() + ".previous-" + std::to_string(::getpid()));
      std::error_code ec;
      fs::remove_all(previous, ec);
      // A hard link keeps `to` in place until the rename below replaces it; a directory (or a
      // filesystem without hard links) is renamed aside, as rename(2) cannot replace a non-empty one.
      if (S_ISDIR(st.st_mode) || ::link(to.c_str(), previous.c_str()) != 0) fs::rename(to, previous);
    }
    outputs_.push_back({to, previous, std::make_unique<RemovedOnInterrupt>(to, previous)});
    fs::rename(from, to);
  });
}

void PartialOutputs::commit() {
  committed_ = true;
  for (auto& output : outputs_) {
    output.on_interrupt.reset();
    std::error_code ec;
    if (!output.previous.empty()) fs::remove_all(output.previous, ec);
  }
}

namespace {

// The process id that ends `name` after `marker` ("<...><marker><digits>"), if it is a process that is
// gone (killed with SIGKILL, or a crash).
std::optional<pid_t> gone_process(const std::string& name, const std::string& marker) {
  auto at = name.rfind(marker);
  if (at == std::string::npos) return std::nullopt;
  std::string digits = name.substr(at + marker.size());
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  auto pid = static_cast<pid_t>(std::stol(digits));
  if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) return std::nullopt;  // alive (or not ours to judge)
  return pid;
}

// What a killed build had replaced and kept aside (PartialOutputs::publish, ".<name>.previous-<pid>")
// goes back under its name: the earlier build's SHA256SUMS and manifest, still in place, describe it.
void restore_abandoned_previous_outputs(const fs::path& directory) {
  std::error_code ec;
  for (fs::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    const std::string marker = ".previous-";
    if (!name.starts_with(".") || !gone_process(name, marker)) continue;
    fs::path original = directory / name.substr(1, name.rfind(marker) - 1);
    std::error_code failed;
    if (fs::is_directory(fs::symlink_status(it->path(), failed))) fs::remove_all(original, failed);
    fs::rename(it->path(), original, failed);
    if (failed) fs::remove_all(it->path(), failed);
  }
}

}  // namespace

void remove_abandoned_work_directories(const fs::path& output_dir, const std::string& prefix) {
  std::error_code ec;
  const std::string start = "." + prefix + "-";
  for (fs::directory_iterator it(output_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!name.starts_with(start) || name.find('-', start.size()) != std::string::npos) continue;
    if (!gone_process(name, start)) continue;
    std::error_code removed;
    fs::remove_all(it->path(), removed);
  }
  restore_abandoned_previous_outputs(output_dir);
  restore_abandoned_previous_outputs(output_dir / "netboot");
}

void create_output_directories(const fs::path& directory) {
  fs::path current;
  for (const auto& part : directory) {
    current /= part;
    if (::mkdir(current.c_str(), 0755) != 0 && errno != EEXIST) throw_system_error("cannot create " + current.string(), errno);
  }
}

OutputDirectoryLock::OutputDirectoryLock(const fs::path& output_dir) {
  create_output_directories(output_dir);
  FileDescriptor fd(::open(output_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_system_error("cannot open " + output_dir.string(), errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
    fd_ = std::move(fd);
    return;
  }
  if (errno == EWOULDBLOCK) {
    throw Error(output_dir.string() + ": another build is writing into this directory; wait for it to end, or build into another --out");
  }
  log::debug(output_dir.string(), ": cannot be locked against a second build (", std::strerror(errno), "); going on without");
}

BuiltFile describe_file(const fs::path& path, DigestsByInode& digests) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_system_error("cannot stat " + path.string(), errno);
  Sha256Digest digest = digests.of(path, st.st_dev, st.st_ino, st.st_nlink, st.st_mtim);
  return BuiltFile{path, static_cast<std::uint64_t>(st.st_size), digest};
}

}  // namespace aggrik8s::builder
