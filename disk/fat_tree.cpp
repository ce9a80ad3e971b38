#include "disk/fat_tree.hpp"

namespace aggrik8s {

namespace {

void append_tree(FatFilesystem& fat, const std::string& directory, std::vector<FatTreeEntry>& out) {
  for (const FatDirectoryEntry& entry : fat.list_directory(directory)) {
    if (entry.name == "." || entry.name == "..") continue;
    std::string path = directory.empty() ? entry.name : directory + "/" + entry.name;
    out.push_back({path, entry});
    if (entry.is_directory) append_tree(fat, path, out);
  }
}

}  // namespace

std::vector<FatTreeEntry> list_fat_tree(FatFilesystem& fat, const std::string& directory) {
  std::vector<FatTreeEntry> out;
  append_tree(fat, directory, out);
  return out;
}

}  // namespace aggrik8s
