#include "disk/filesystem_tree.hpp"

#include <algorithm>
#include <set>
#include <span>
#include <utility>

#include "core/error.hpp"

namespace aggrik8s {

std::string normalize_tree_path(const std::string& path, const std::string& what) {
  if (path.empty() || path.front() != '/') throw Error(what + " '" + path + "' is not an absolute path");
  if (auto nul = path.find('\0'); nul != std::string::npos) {
    throw Error(what + " '" + path.substr(0, nul) + "...' contains a NUL byte");
  }
  std::string normalized;
  std::size_t start = 1;
  while (start <= path.size()) {
    std::size_t slash = std::min(path.find('/', start), path.size());
    std::string component = path.substr(start, slash - start);
    if (component == "..") throw Error(what + " '" + path + "' contains '..'; give the path without it");
    if (!component.empty() && component != ".") normalized += "/" + component;
    start = slash + 1;
  }
  return normalized.empty() ? "/" : normalized;
}

std::string parent_tree_path(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

namespace {

std::string child_path(const std::string& directory, const std::string& name) {
  return (directory == "/" ? "" : directory) + "/" + name;
}

class Ext4TreeWalk {
 public:
  Ext4TreeWalk(const Ext4Filesystem& filesystem, const FilesystemTreeSelection& selection,
               const std::function<void(const FilesystemTreeEntry&)>& visit)
      : filesystem_(filesystem), selection_(selection), visit_(visit) {
    for (const auto& path : selection.exclude) {
      std::string normalized = normalize_tree_path(path, "excluded path");
      if (normalized == "/") throw Error("excluded path '" + path + "' is the root directory; nothing would be left");
      excluded_.insert(normalized);
    }
    for (const auto& [path, replacement] : selection.replacements) {
      std::string normalized = normalize_tree_path(path, "replaced file");
      if (normalized == "/") throw Error("replaced file '" + path + "' is the root directory, not a file");
      if (is_excluded(normalized)) throw Error("replaced file " + normalized + " lies in an excluded path");
      if (!replacements_.emplace(normalized, &replacement).second) {
        throw Error("replaced file " + normalized + " is given twice (as '" + path + "' and another spelling)");
      }
    }
  }

  void run() {
    walk_directory(EXT2_ROOT_INODE, "/");
    if (!replacements_.empty()) {
      // Whatever is left had no directory to go into.
      const std::string& path = replacements_.begin()->first;
      throw Error("replaced file " + path + ": its directory " + parent_tree_path(path) +
                  " is not in the tree (it does not exist, is not a directory, or is excluded)");
    }
  }

 private:
  static constexpr std::uint32_t EXT2_ROOT_INODE = 2;

  bool is_excluded(const std::string& path) const {
    // Excluded prefixes of path: path itself or one of its parents.
    for (std::string current = path;; current = parent_tree_path(current)) {
      if (excluded_.contains(current)) return true;
      if (current == "/") return false;
    }
  }

  FilesystemTreeEntry entry_of_inode(std::uint32_t inode, const std::string& path) const {
    try {
      Ext4FileStatus status = filesystem_.inode_status(inode);
      FilesystemTreeEntry entry;
      entry.path = path;
      entry.type = status.type;
      entry.permissions = status.permissions;
      entry.uid = status.uid;
      entry.gid = status.gid;
      entry.mtime = status.mtime;
      entry.size = status.size;
      entry.device_major = status.device_major;
      entry.device_minor = status.device_minor;
      entry.inode = inode;
      entry.extended_attributes = filesystem_.inode_extended_attributes(inode);
      if (status.type == Ext4FileType::symlink) entry.symlink_target = filesystem_.inode_symlink_target(inode);
      if (status.type == Ext4FileType::regular) {
        entry.read_data = [this, inode, path](const Ext4FileDataConsumer& consume) {
          try {
            filesystem_.read_inode_data(inode, consume);
          } catch (const Error& e) {
            throw Error(path + ": " + e.what());
          }
        };
      }
      return entry;
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
  }

  static FilesystemTreeEntry entry_of_replacement(const FilesystemTreeReplacement& replacement, const std::string& path) {
    FilesystemTreeEntry entry;
    entry.path = path;
    entry.type = Ext4FileType::regular;
    entry.permissions = replacement.permissions & 07777;
    entry.uid = replacement.uid;
    entry.gid = replacement.gid;
    entry.mtime = replacement.mtime;
    entry.size = replacement.content.size();
    const std::string* content = &replacement.content;
    entry.read_data = [content](const Ext4FileDataConsumer& consume) {
      if (!content->empty()) consume(0, std::as_bytes(std::span(content->data(), content->size())));
    };
    return entry;
  }

  void offer(const FilesystemTreeEntry& entry) {
    if (!selection_.include || selection_.include(entry)) visit_(entry);
  }

  void walk_directory(std::uint32_t inode, const std::string& path) {
    offer(entry_of_inode(inode, path));
    std::vector<Ext4DirectoryEntry> children;
    try {
      children = filesystem_.list_directory_inode(inode);
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
    // Files added by replacements go into the sorted listing as names of their own.
    struct Child {
      std::string name;
      const Ext4DirectoryEntry* ext4 = nullptr;
    };
    std::vector<Child> merged;
    merged.reserve(children.size());
    for (const auto& child : children) {
      // Only a damaged filesystem (or a tool writing raw entries, like debugfs given a path) has
      // these; written out they would make an unreadable squashfs or a tar that escapes its root.
      if (child.name.empty() || child.name.find('/') != std::string::npos || child.name.find('\0') != std::string::npos ||
          child.name == "." || child.name == "..") {
        throw Error(path + ": holds an entry named '" + child.name + "', which is not a file name; check the filesystem with e2fsck");
      }
      merged.push_back({child.name, &child});
    }
    const std::string prefix = path == "/" ? "/" : path + "/";
    for (auto it = replacements_.lower_bound(prefix); it != replacements_.end() && it->first.starts_with(prefix); ++it) {
      std::string name = it->first.substr(prefix.size());
      if (name.find('/') != std::string::npos) continue;  // deeper down
      if (!std::ranges::binary_search(children, name, {}, &Ext4DirectoryEntry::name)) {
        merged.push_back({name, nullptr});
      }
    }
    std::sort(merged.begin(), merged.end(), [](const Child& a, const Child& b) { return a.name < b.name; });

    for (const Child& child : merged) {
      std::string child_path_text = child_path(path, child.name);
      if (excluded_.contains(child_path_text)) continue;
      auto replacement = replacements_.find(child_path_text);
      if (replacement != replacements_.end()) {
        if (child.ext4 != nullptr && child.ext4->type == Ext4FileType::directory) {
          throw Error("replaced file " + child_path_text + " is a directory in the ext4 filesystem; only files can be replaced");
        }
        FilesystemTreeEntry entry = entry_of_replacement(*replacement->second, child_path_text);
        replacements_.erase(replacement);
        offer(entry);
        continue;
      }
      if (child.ext4->type == Ext4FileType::directory) {
        walk_directory(child.ext4->inode, child_path_text);
      } else {
        offer(entry_of_inode(child.ext4->inode, child_path_text));
      }
    }
  }

  const Ext4Filesystem& filesystem_;
  const FilesystemTreeSelection& selection_;
  const std::function<void(const FilesystemTreeEntry&)>& visit_;
  std::set<std::string> excluded_;
  std::map<std::string, const FilesystemTreeReplacement*> replacements_;
};

}  // namespace

void walk_ext4_tree(const Ext4Filesystem& filesystem, const FilesystemTreeSelection& selection,
                    const std::function<void(const FilesystemTreeEntry&)>& visit) {
  Ext4TreeWalk(filesystem, selection, visit).run();
}

}  // namespace aggrik8s
