#include "builder/rpi/rootfs_overlay.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <tuple>

#include "disk/ext4_filesystem.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view template_suffix = ".tmpl";
constexpr std::uint64_t block = 4096;
// Templates grow by what their variables expand to; node names, hostnames and roles are short.
constexpr std::uint64_t template_margin = 4096;

std::string describe_type(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "of unknown type";
}

std::string read_link_text(const fs::path& path, std::size_t size_hint, const fs::path& overlay) {
  std::string text(std::max<std::size_t>(size_hint, 64) + 1, '\0');
  while (true) {
    ssize_t n = ::readlink(path.c_str(), text.data(), text.size());
    if (n < 0) throw_system_error("overlay " + overlay.string() + ": cannot read the symlink " + path.string(), errno);
    if (static_cast<std::size_t>(n) < text.size()) {
      text.resize(static_cast<std::size_t>(n));
      return text;
    }
    text.resize(text.size() * 2);  // the link changed size since lstat
  }
}

bool is_variable_name(std::string_view name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// Hard links are found by the host inode. A template and a plain file of the same host inode have
// different content in the image, so they are different image files.
using HostInodeKey = std::tuple<dev_t, ino_t, bool>;

// The bytes of a host file outside its holes, what copy_file_from_host writes. Only a file with fewer
// blocks than its length can have holes; the data ranges (SEEK_DATA/SEEK_HOLE) are counted rather
// than st_blocks, which a compressing filesystem (ZFS) reports compressed. Any failure: the length.
std::uint64_t data_bytes_of(const fs::path& file, const struct stat& st) {
  auto size = static_cast<std::uint64_t>(st.st_size);
  if (static_cast<std::uint64_t>(st.st_blocks) * 512 >= size) return size;
  FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return size;
  std::uint64_t data = 0;
  for (off_t at = 0; static_cast<std::uint64_t>(at) < size;) {
    off_t start = ::lseek(fd.get(), at, SEEK_DATA);
    if (start < 0) return errno == ENXIO ? data : size;  // ENXIO: only a hole is left
    off_t end = ::lseek(fd.get(), start, SEEK_HOLE);
    if (end < 0) return size;
    data += static_cast<std::uint64_t>(end - start);
    at = end;
  }
  return data;
}

class OverlayTreeReader {
 public:
  explicit OverlayTreeReader(fs::path overlay) : overlay_(std::move(overlay)) {}

  std::vector<OverlayEntry> read() {
    struct stat st {};
    // The overlay directory itself may be a symlink (the profile names it); what is in it is not followed.
    if (::stat(overlay_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw Error("overlay directory " + overlay_.string() + " does not exist or is not a directory");
    }
    walk(overlay_, "");
    return std::move(entries_);
  }

 private:
  [[noreturn]] void refuse(const std::string& relative, const std::string& why) const {
    throw Error("overlay " + overlay_.string() + ": " + relative + ": " + why);
  }

  // image_dir by value: it is often an entry's target, and entries_ grows while this runs.
  void walk(const fs::path& host_dir, const std::string image_dir) {
    std::vector<std::string> names;
    std::error_code ec;
    for (fs::directory_iterator it(host_dir, ec), end; !ec && it != end; it.increment(ec)) {
      names.push_back(it->path().filename().string());
    }
    if (ec) throw Error("overlay " + overlay_.string() + ": cannot list " + host_dir.string() + ": " + ec.message());
    // Byte order: the order of writes decides block allocation, and the output must not depend on readdir.
    std::sort(names.begin(), names.end());
    std::map<std::string, std::string> source_of_image_name;
    for (const auto& name : names) {
      fs::path source = host_dir / name;
      std::string relative = (image_dir.empty() ? "" : image_dir.substr(1) + "/") + name;
      struct stat st {};
      if (::lstat(source.c_str(), &st) != 0) {
        throw_system_error("overlay " + overlay_.string() + ": cannot read " + source.string(), errno);
      }
      OverlayEntry entry;
      entry.source = source;
      entry.permissions = static_cast<std::uint16_t>(st.st_mode & 07777);
      std::string image_name = name;
      if (S_ISDIR(st.st_mode)) {
        entry.kind = OverlayEntry::Kind::directory;
      } else if (S_ISLNK(st.st_mode)) {
        entry.kind = OverlayEntry::Kind::symlink;
        entry.link = read_link_text(source, static_cast<std::size_t>(st.st_size), overlay_);
      } else if (S_ISREG(st.st_mode)) {
        entry.kind = OverlayEntry::Kind::regular_file;
        entry.size = static_cast<std::uint64_t>(st.st_size);
        entry.data_bytes = data_bytes_of(source, st);
        if (name.ends_with(template_suffix)) {
          if (name.size() == template_suffix.size()) {
            refuse(relative, "a template needs a name before '.tmpl' (the suffix is dropped in the image)");
          }
          entry.templated = true;
          image_name.resize(name.size() - template_suffix.size());
        }
      } else {
        refuse(relative, "is " + describe_type(st.st_mode) +
                             "; an overlay may hold only directories, regular files and symlinks");
      }
      if (auto [it, added] = source_of_image_name.emplace(image_name, relative); !added) {
        refuse(relative, "becomes " + image_dir + "/" + image_name + " in the image, as " + it->second +
                             " does; remove one of them");
      }
      entry.target = image_dir + "/" + image_name;
      if (entry.kind == OverlayEntry::Kind::regular_file && st.st_nlink > 1) {
        auto [it, first] = hard_links_.emplace(HostInodeKey{st.st_dev, st.st_ino, entry.templated}, entry.target);
        if (!first) {
          entry.kind = OverlayEntry::Kind::hard_link;
          entry.link = it->second;
        }
      }
      std::size_t index = entries_.size();
      entries_.push_back(std::move(entry));
      if (S_ISDIR(st.st_mode)) {
        std::size_t before = entries_.size();
        walk(source, entries_[index].target);
        entries_[index].has_children = entries_.size() > before;
      }
    }
  }

  fs::path overlay_;
  std::vector<OverlayEntry> entries_;
  std::map<HostInodeKey, std::string> hard_links_;
};

std::string read_whole_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error("cannot read " + path.string());
  return s.str();
}

}  // namespace

std::vector<OverlayEntry> read_overlay_tree(const fs::path& dir) { return OverlayTreeReader(dir).read(); }

void require_outside_boot_mount(const std::vector<OverlayEntry>& entries, const fs::path& dir,
                                const std::string& boot_mount) {
  for (const auto& entry : entries) {
    bool below = entry.target.starts_with(boot_mount + "/");
    bool replaces_mount_point = entry.target == boot_mount && entry.kind != OverlayEntry::Kind::directory;
    if (!below && !replaces_mount_point) continue;
    throw Error("overlay " + dir.string() + ": " + entry.target.substr(1) + ": the node mounts its FAT boot partition on " +
                boot_mount + ", so this would be hidden under the mount (and FAT has no symlinks, hard links or modes); "
                "remove it from the overlay and set config.txt and cmdline.txt with the profile's boot.config_txt "
                "and boot.cmdline");
  }
}

namespace {

// Where `target` lands in the image: symlinks in its directory part followed from the image's root,
// as Ext4Filesystem follows them when writing (so `opt/esc/x` with the image's /opt/esc ->
// /boot/firmware lands in /boot/firmware/x). The last component is not followed, as when writing.
std::string landing_path(const Ext4Filesystem& rootfs, const std::string& target) {
  std::vector<std::string> pending, done;
  auto push_front_components = [&pending](const std::string& path) {
    std::vector<std::string> parts;
    std::istringstream in(path);
    for (std::string part; std::getline(in, part, '/');) {
      if (!part.empty()) parts.push_back(part);
    }
    pending.insert(pending.begin(), parts.begin(), parts.end());
  };
  auto joined = [](const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& part : parts) out += "/" + part;
    return out.empty() ? std::string("/") : out;
  };
  push_front_components(target);
  for (int links = 0; pending.size() > 1;) {
    std::string component = pending.front();
    pending.erase(pending.begin());
    if (component == ".") continue;
    if (component == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    done.push_back(component);
    std::string here = joined(done);
    if (!rootfs.exists(here) || rootfs.status(here).type != Ext4FileType::symlink) continue;
    if (++links > 40) break;  // a loop: writing fails on it anyway
    std::string link = rootfs.read_symlink(here);
    done.pop_back();
    if (link.starts_with("/")) done.clear();
    push_front_components(link);
  }
  for (const auto& rest : pending) done.push_back(rest);
  return joined(done);
}

}  // namespace

void require_outside_boot_mount(const Ext4Filesystem& rootfs, const std::vector<OverlayEntry>& entries,
                                const fs::path& dir, const std::string& boot_mount) {
  for (const auto& entry : entries) {
    std::string lands = landing_path(rootfs, entry.target);
    if (lands == entry.target || !lands.starts_with(boot_mount + "/")) continue;
    throw Error("overlay " + dir.string() + ": " + entry.target.substr(1) + " would land in " + lands +
                " through the image's symbolic links; the node mounts its FAT boot partition on " + boot_mount +
                ", so it would be hidden under the mount; set config.txt and cmdline.txt with the profile's "
                "boot.config_txt and boot.cmdline");
  }
}

std::uint64_t overlay_space_needed(const std::vector<fs::path>& overlays) {
  std::uint64_t total = 0;
  for (const auto& dir : overlays) {
    for (const auto& entry : read_overlay_tree(dir)) {
      total += block;
      if (entry.kind == OverlayEntry::Kind::regular_file) {
        // A sparse file is written with its holes (copy_file_from_host), so it needs its data blocks,
        // as du counts them, not its length: a 300 MiB `truncate` file needs none. A template is
        // rendered into memory and written whole.
        std::uint64_t bytes = entry.templated ? entry.size + template_margin : entry.data_bytes;
        total += (bytes + block - 1) / block * block;
      }
    }
  }
  return total;
}

std::string render_overlay_template(std::string_view text, const std::map<std::string, std::string>& values,
                                    std::vector<std::string>* unknown) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (true) {
    std::size_t open = text.find("{{", pos);
    std::size_t close = open == std::string_view::npos ? open : text.find("}}", open + 2);
    if (close == std::string_view::npos) break;
    std::string_view inner = text.substr(open + 2, close - open - 2);
    std::string_view name = inner;
    if (inner.size() > 2 && inner.front() == ' ' && inner.back() == ' ') name = inner.substr(1, inner.size() - 2);
    out.append(text.substr(pos, open - pos));
    if (auto it = values.find(std::string(name)); it != values.end()) {
      out += it->second;
      pos = close + 2;
      continue;
    }
    if (unknown && is_variable_name(name) &&
        std::find(unknown->begin(), unknown->end(), name) == unknown->end()) {
      unknown->emplace_back(name);
    }
    // Not a variable: keep one brace and look again from the next (so "{{{node}}}" gives "{" value "}").
    out += '{';
    pos = open + 1;
  }
  out.append(text.substr(pos));
  return out;
}

std::vector<std::string> install_overlays(Ext4Filesystem& rootfs, const std::vector<fs::path>& overlays,
                                          const std::map<std::string, std::string>& values,
                                          std::optional<std::int64_t> fixed_time, const std::string& boot_mount) {
  std::vector<std::string> written;
  std::optional<Ext4Timestamp> time;
  if (fixed_time) time = Ext4Timestamp{*fixed_time, 0};
  std::string known;
  for (const auto& [key, value] : values) known += (known.empty() ? "" : ", ") + key;
  for (const auto& dir : overlays) {
    // Read and checked whole before the first write: a refused tree leaves nothing half-copied.
    std::vector<OverlayEntry> entries = read_overlay_tree(dir);
    require_outside_boot_mount(entries, dir, boot_mount);
    require_outside_boot_mount(rootfs, entries, dir, boot_mount);  // through links earlier overlays or the image hold
    for (const auto& entry : entries) {
      Ext4FileAttributes attributes{entry.permissions, 0, 0, time};
      // What the image already holds can refuse an entry (a directory where the image has a file):
      // the error names the overlay's entry, not only the image being written.
      try {
        switch (entry.kind) {
          case OverlayEntry::Kind::directory:
            rootfs.create_directories(entry.target, attributes);
            if (!entry.has_children) written.push_back(entry.target + "/ (empty directory)");
            break;
          case OverlayEntry::Kind::regular_file:
            if (entry.templated) {
              std::vector<std::string> unknown;
              std::string content = render_overlay_template(read_whole_file(entry.source), values, &unknown);
              for (const auto& name : unknown) {
                log::warning("overlay template ", entry.source.string(), ": {{", name,
                             "}} is not a known variable and is left as it is (known: ", known, ")");
              }
              rootfs.write_file(entry.target, content, attributes);
            } else {
              rootfs.copy_file_from_host(entry.source, entry.target, attributes);
            }
            written.push_back(entry.target);
            break;
          case OverlayEntry::Kind::symlink:
            rootfs.create_symlink(entry.target, entry.link, {0777, 0, 0, time});
            written.push_back(entry.target + " -> " + entry.link);
            break;
          case OverlayEntry::Kind::hard_link:
            rootfs.create_hard_link(entry.target, entry.link);
            written.push_back(entry.target + " (hard link to " + entry.link + ")");
            break;
        }
      } catch (const Error& e) {
        throw Error("overlay " + dir.string() + ": " + entry.source.string() + " cannot be written to " + entry.target +
                    " in the image: " + e.what());
      }
    }
  }
  return written;
}

}  // namespace aggrik8s::builder
