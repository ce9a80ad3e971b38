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

void remove_abandoned_work_directories(const fs::path& output_dir, const std::string& prefix) {
  std::error_code ec;
  const std::string start = "." + prefix + "-";
  for (fs::directory_iterator it(output_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!name.starts_with(start) || name.size() == start.size()) continue;
    std::string digits = name.substr(start.size());
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) || digits.size() > 9) continue;
    auto pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    std::error_code removed;
    fs::remove_all(it->path(), removed);
  }
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
