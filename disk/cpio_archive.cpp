#include "disk/cpio_archive.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>

#include "core/error.hpp"

namespace aggrik8s {
namespace {

// include/uapi/linux/stat.h
constexpr std::uint32_t mode_regular = 0100000;
constexpr std::uint32_t mode_directory = 0040000;
constexpr std::uint32_t mode_symlink = 0120000;
constexpr std::uint32_t mode_character = 0020000;
constexpr std::uint32_t mode_block = 0060000;

std::uint32_t type_bits(CpioEntryType type) {
  switch (type) {
    case CpioEntryType::regular: return mode_regular;
    case CpioEntryType::directory: return mode_directory;
    case CpioEntryType::symlink: return mode_symlink;
    case CpioEntryType::character_device: return mode_character;
    case CpioEntryType::block_device: return mode_block;
  }
  return mode_regular;
}

void check_path(const std::string& path) {
  auto bad = [&](const std::string& why) { throw Error("cpio entry '" + path + "': " + why); };
  if (path.empty()) bad("empty path");
  if (path.front() == '/') bad("absolute path (entries are relative to the archive root)");
  if (path.find('\0') != std::string::npos) bad("NUL in the path");
  std::size_t begin = 0;
  while (begin <= path.size()) {
    std::size_t end = path.find('/', begin);
    if (end == std::string::npos) end = path.size();
    std::string_view component(path.data() + begin, end - begin);
    if (component.empty()) bad("empty path component");
    if (component == "." || component == "..") bad("'" + std::string(component) + "' component");
    begin = end + 1;
  }
}

void append_header(std::string& out, std::uint32_t inode, std::uint32_t mode, std::uint32_t links, std::uint32_t mtime,
                   std::uint32_t size, std::uint32_t rdev_major, std::uint32_t rdev_minor, const std::string& name) {
  char header[111];
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
  // namesize (with the NUL), check (0: no CRC in "070701").
  std::snprintf(header, sizeof header, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", inode, mode, 0u, 0u,
                links, mtime, size, 0u, 0u, rdev_major, rdev_minor, static_cast<std::uint32_t>(name.size() + 1), 0u);
  out.append(header, 110);
  out.append(name);
  out.push_back('\0');
  // The name is padded so that the data starts on a 4-byte boundary (of the archive).
  out.append((4 - out.size() % 4) % 4, '\0');
}

void append_data(std::string& out, const std::string& data) {
  out.append(data);
  out.append((4 - out.size() % 4) % 4, '\0');
}

}  // namespace

std::string write_newc_cpio(std::vector<CpioEntry> entries, std::int64_t mtime) {
  if (mtime < 0 || mtime > std::numeric_limits<std::uint32_t>::max()) {
    throw Error("cpio mtime " + std::to_string(mtime) + " does not fit newc's 32-bit unsigned field");
  }
  std::map<std::string, CpioEntry> by_path;
  for (auto& entry : entries) {
    check_path(entry.path);
    if (entry.type != CpioEntryType::regular && entry.type != CpioEntryType::symlink && !entry.content.empty()) {
      throw Error("cpio entry '" + entry.path + "': only regular files and symlinks have content");
    }
    if (entry.type == CpioEntryType::symlink && entry.content.empty()) {
      throw Error("cpio entry '" + entry.path + "': symlink without a target");
    }
    if (entry.content.size() > std::numeric_limits<std::uint32_t>::max()) {
      throw Error("cpio entry '" + entry.path + "': " + std::to_string(entry.content.size()) +
                  " bytes do not fit newc's 32-bit size field");
    }
    if (entry.permissions > 07777) throw Error("cpio entry '" + entry.path + "': permissions beyond 07777");
    std::string path = entry.path;
    if (!by_path.emplace(path, std::move(entry)).second) throw Error("cpio entry '" + path + "' given twice");
  }
  // Parents: missing ones are added; an existing non-directory parent is a contradiction.
  std::vector<std::string> paths;
  for (const auto& [path, entry] : by_path) paths.push_back(path);
  for (const auto& path : paths) {
    for (std::size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
      std::string parent = path.substr(0, slash);
      auto it = by_path.find(parent);
      if (it == by_path.end()) {
        by_path.emplace(parent, CpioEntry{parent, CpioEntryType::directory, 0755, {}, 0, 0});
      } else if (it->second.type != CpioEntryType::directory) {
        throw Error("cpio entry '" + path + "': its parent '" + parent + "' is not a directory");
      }
    }
  }
  std::string out;
  std::uint32_t inode = 0;
  // std::map orders by bytes: "a" < "a/b", so a directory precedes its contents.
  for (const auto& [path, entry] : by_path) {
    std::uint32_t permissions = entry.type == CpioEntryType::symlink ? 0777 : entry.permissions;
    std::uint32_t links = entry.type == CpioEntryType::directory ? 2 : 1;
    bool device = entry.type == CpioEntryType::character_device || entry.type == CpioEntryType::block_device;
    append_header(out, ++inode, type_bits(entry.type) | permissions, links, static_cast<std::uint32_t>(mtime),
                  static_cast<std::uint32_t>(entry.content.size()), device ? entry.device_major : 0,
                  device ? entry.device_minor : 0, path);
    append_data(out, entry.content);
  }
  append_header(out, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!");
  return out;
}

}  // namespace aggrik8s
