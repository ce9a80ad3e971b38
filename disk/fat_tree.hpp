#pragma once
// Walking a whole FAT filesystem: the Pi boot partition's files go whole into the ephemeral output's
// boot directory and into HTTP boot's boot.img, both in the same (directory) order so outputs are
// reproducible.
#include <string>
#include <vector>

#include "disk/fat_filesystem.hpp"

namespace aggrik8s {

struct FatTreeEntry {
  std::string path;  // '/'-separated from the root: "overlays/vc4-kms-v3d-pi5.dtbo"
  FatDirectoryEntry entry;
};

// Every file and directory under `directory` ("" for the root), depth first in directory order, each
// directory before its contents.
std::vector<FatTreeEntry> list_fat_tree(FatFilesystem& fat, const std::string& directory = "");

}  // namespace aggrik8s
