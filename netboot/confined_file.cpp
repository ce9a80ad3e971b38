#include "netboot/confined_file.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <vector>

namespace aggrik8s::netboot {
namespace {

// Linux's own limit on links in one lookup (MAXSYMLINKS); beyond it the name is a loop or an attack.
constexpr int max_links = 40;

std::vector<std::string> split_components(std::string_view path) {
  std::vector<std::string> components;
  std::size_t position = 0;
  while (position <= path.size()) {
    std::size_t slash = path.find('/', position);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > position) components.emplace_back(path.substr(position, slash - position));
    position = slash + 1;
  }
  return components;
}

std::string join(const std::vector<std::string>& components) {
  std::string path;
  for (const auto& component : components) path += "/" + component;
  return path.empty() ? "/" : path;
}

std::string child(const std::vector<std::string>& directory, const std::string& name) {
  return directory.empty() ? "/" + name : join(directory) + "/" + name;
}

enum class Openat2 { unknown, available, missing };
std::atomic<Openat2> openat2_state{Openat2::unknown};

#ifdef SYS_openat2
int call_openat2(int dir, const char* name, int flags, std::uint64_t resolve) {
  struct open_how how {};
  how.flags = static_cast<__u64>(static_cast<unsigned int>(flags));
  how.resolve = static_cast<__u64>(resolve);
  return static_cast<int>(::syscall(SYS_openat2, dir, name, &how, sizeof how));
}
#endif

// Whether this kernel (and any seccomp filter around us) lets openat2 through; asked once.
bool have_openat2() {
#ifdef SYS_openat2
  Openat2 state = openat2_state.load();
  if (state == Openat2::unknown) {
    int fd = call_openat2(AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    // ENOSYS: kernel before 5.6; EPERM: a container's seccomp profile that predates the syscall.
    state = (fd < 0 && (errno == ENOSYS || errno == EPERM)) ? Openat2::missing : Openat2::available;
    if (fd >= 0) ::close(fd);
    openat2_state.store(state);
  }
  return state == Openat2::available;
#else
  return false;
#endif
}

// One directory entry `name` (no '/', not "." or "..") of `dir`, links not followed. A trailing link
// comes back as an O_PATH descriptor of the link itself when O_PATH is asked for.
int open_entry(int dir, const std::string& name, int flags) {
  flags |= O_NOFOLLOW | O_CLOEXEC;
#ifdef SYS_openat2
  if (have_openat2()) {
    return call_openat2(dir, name.c_str(), flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  }
#endif
  // A single component with O_NOFOLLOW cannot lead anywhere but into `dir` either.
  return ::openat(dir, name.c_str(), flags);
}

int open_parent(int dir) {
#ifdef SYS_openat2
  if (have_openat2()) {
    return call_openat2(dir, "..", O_PATH | O_DIRECTORY | O_CLOEXEC, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  }
#endif
  return ::openat(dir, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

bool stat_fd(int fd, struct stat& info) { return ::fstatat(fd, "", &info, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0; }

bool same_inode(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

// Kernel pseudo filesystems hold process and kernel state, never boot files.
const char* pseudo_filesystem(int fd, bool& failed) {
  struct statfs info {};
  failed = ::fstatfs(fd, &info) != 0;
  if (failed) return nullptr;
  switch (static_cast<unsigned long>(info.f_type)) {
    case PROC_SUPER_MAGIC: return "procfs";
    case SYSFS_MAGIC: return "sysfs";
    case DEBUGFS_MAGIC: return "debugfs";
    case TRACEFS_MAGIC: return "tracefs";
    case SECURITYFS_MAGIC: return "securityfs";
    case CGROUP_SUPER_MAGIC: return "cgroupfs";
    case CGROUP2_SUPER_MAGIC: return "cgroup2fs";
    case BPF_FS_MAGIC: return "bpffs";
    case EFIVARFS_MAGIC: return "efivarfs";
    default: return nullptr;
  }
}

ConfinedFile refused(std::string reason) {
  ConfinedFile result;
  result.status = ConfinedFileStatus::refused;
  result.reason = std::move(reason);
  return result;
}

ConfinedFile failed_lookup(const std::string& where, int error) {
  ConfinedFile result;
  // A missing name (or a regular file used as a directory) is an ordinary miss; anything else
  // (EACCES, ELOOP from a link swapped in under us, EXDEV from RESOLVE_BENEATH) refuses.
  result.status = (error == ENOENT || error == ENOTDIR) ? ConfinedFileStatus::not_found : ConfinedFileStatus::refused;
  result.reason = where + ": " + std::strerror(error);
  return result;
}

}  // namespace

void use_openat2_for_testing(bool enabled) { openat2_state.store(enabled ? Openat2::unknown : Openat2::missing); }

ConfinedFile open_confined_file(const std::filesystem::path& root, std::string_view relative, ConfinedReach reach) {
  const std::string root_text = root.string();
  if (!root.is_absolute()) return refused("served directory " + root_text + " is not an absolute path");
  if (relative.find('\0') != std::string_view::npos) return refused("name contains a NUL byte");
  if (relative.empty() || relative.front() == '/') return refused("name '" + std::string(relative) + "' is not relative");
  std::deque<std::string> pending;
  for (auto& component : split_components(relative)) {
    if (component == "." || component == "..") {
      return refused("name '" + std::string(relative) + "' has a '" + component + "' component");
    }
    pending.push_back(std::move(component));
  }
  if (pending.empty()) return refused("name '" + std::string(relative) + "' names the directory itself");
  // "name/" is a directory or nothing (POSIX: ENOTDIR for a file), never the file "name".
  const bool names_a_directory = relative.back() == '/';

  const std::vector<std::string> root_components = split_components(root_text);
  FileDescriptor directory(::open(root_text.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!directory) return failed_lookup(root_text, errno);
  struct stat root_info {};
  if (!stat_fd(directory.get(), root_info)) return failed_lookup(root_text, errno);

  // Where the walk stands: `here` for messages; `depth` below the root while inside it. Once a link
  // leads out, `outside` holds until a directory on the way is the root itself again, and `public_path`
  // records whether every directory walked since then was world-searchable.
  std::vector<std::string> here = root_components;
  std::size_t depth = 0;
  bool outside = false;
  bool public_path = true;
  int links = 0;

  auto enter = [&](FileDescriptor next, const struct stat& info) {
    if (same_inode(info, root_info)) {
      outside = false;
      public_path = true;
      depth = 0;
      here = root_components;
    } else if (outside) {
      public_path = public_path && (info.st_mode & S_IXOTH) != 0;
    }
    directory = std::move(next);
  };

  std::string last;
  FileDescriptor entry;
  struct stat info {};
  while (!pending.empty()) {
    std::string component = std::move(pending.front());
    pending.pop_front();
    if (component == ".") continue;  // only link targets bring these
    if (component == "..") {
      FileDescriptor parent(open_parent(directory.get()));
      if (!parent) return failed_lookup(join(here) + "/..", errno);
      if (!stat_fd(parent.get(), info)) return failed_lookup(join(here) + "/..", errno);
      if (!here.empty()) here.pop_back();
      if (!outside && depth == 0) {
        outside = true;  // a link climbed above the root
      } else if (!outside) {
        --depth;
      }
      enter(std::move(parent), info);
      continue;
    }

    std::string where = child(here, component);
    entry = FileDescriptor(open_entry(directory.get(), component, O_PATH));
    if (!entry) return failed_lookup(where, errno);
    if (!stat_fd(entry.get(), info)) return failed_lookup(where, errno);

    if (S_ISLNK(info.st_mode)) {
      if (++links > max_links) return refused(where + ": more than " + std::to_string(max_links) + " symbolic links (a loop?)");
      bool statfs_failed = false;
      const char* pseudo = pseudo_filesystem(entry.get(), statfs_failed);
      if (statfs_failed) return failed_lookup(where, errno);
      if (pseudo != nullptr) return refused(where + " is a link on " + pseudo + " (magic links are never followed)");
      std::array<char, PATH_MAX> target{};
      ssize_t length = ::readlinkat(entry.get(), "", target.data(), target.size());
      if (length < 0) return failed_lookup(where, errno);
      if (static_cast<std::size_t>(length) >= target.size()) return refused(where + ": link target too long");
      std::string_view text(target.data(), static_cast<std::size_t>(length));
      if (text.empty()) return failed_lookup(where, ENOENT);
      std::vector<std::string> components = split_components(text);
      pending.insert(pending.begin(), components.begin(), components.end());
      if (text.front() == '/') {
        FileDescriptor slash(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!slash) return failed_lookup("/", errno);
        if (!stat_fd(slash.get(), info)) return failed_lookup("/", errno);
        // The walk starts afresh at "/": only the directories from there on lead to the file.
        here.clear();
        outside = true;
        public_path = true;
        enter(std::move(slash), info);
      }
      entry.reset();
      continue;
    }

    if (pending.empty()) {
      last = std::move(component);
      break;
    }
    if (!S_ISDIR(info.st_mode)) return failed_lookup(where, ENOTDIR);
    here.push_back(component);
    if (!outside) ++depth;
    enter(std::move(entry), info);
  }

  const std::string where = last.empty() ? join(here) : child(here, last);
  if (last.empty() || !entry) return refused(where + " is a directory, not a regular file");
  if (names_a_directory && !S_ISDIR(info.st_mode)) return failed_lookup(where + "/", ENOTDIR);
  if (!S_ISREG(info.st_mode)) return refused(where + " is not a regular file");
  if (outside && !public_path) {
    return refused(where + " lies outside the served directory " + root_text +
                   " behind a directory that not every local user may enter; links out of the root reach only public files");
  }
  if (outside && (info.st_mode & S_IROTH) == 0) {
    return refused(where + " lies outside the served directory " + root_text +
                   " and is not world-readable; links out of the root reach only public files");
  }
  if (reach == ConfinedReach::world_readable_only && (info.st_mode & S_IROTH) == 0) {
    return refused(where + " is not world-readable: " + root_text +
                   " is a shared tree anyone may read from, so it serves only files every local user may read "
                   "(as tftp-hpa does; node images and secrets go to their node through its own routes)");
  }

  // Reopen the entry checked above for reading. O_NONBLOCK: should a FIFO have been swapped in after
  // the check, opening it must not hang the server (the inode comparison below then refuses it).
  FileDescriptor file(open_entry(directory.get(), last, O_RDONLY | O_NONBLOCK));
  if (!file) return failed_lookup(where, errno);
  struct stat opened {};
  if (::fstat(file.get(), &opened) != 0) return failed_lookup(where, errno);
  if (!same_inode(opened, info) || !S_ISREG(opened.st_mode)) return refused(where + " changed while it was being opened");
  bool statfs_failed = false;
  const char* pseudo = pseudo_filesystem(file.get(), statfs_failed);
  if (statfs_failed) return failed_lookup(where, errno);
  if (pseudo != nullptr) return refused(where + " is on " + pseudo + ", not a file to serve");

  ConfinedFile result;
  result.status = ConfinedFileStatus::opened;
  result.fd = std::move(file);
  result.path = where;
  result.size = static_cast<std::uint64_t>(opened.st_size);
  result.outside_root = outside;
  return result;
}

}  // namespace aggrik8s::netboot
