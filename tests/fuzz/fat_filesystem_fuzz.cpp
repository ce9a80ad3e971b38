// libFuzzer target for the FAT12/16/32 reader and writer (boot sector, FAT, directory entries, VFAT
// long-name chains): the input is the start of a boot partition (see SparseFuzzDevice). Every image
// either opens or throws aggrik8s::Error; an opened one is walked (every directory listed, every file
// read) and then edited the way an image build edits the Pi boot partition, where each call again
// either works or throws Error. A file written into an image that accepted it must read back as written.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "disk/fat_filesystem.hpp"
#include "core/error.hpp"
#include "tests/fuzz/fuzz_block_device.hpp"

using namespace aggrik8s;

namespace {

// Bounds the walk: a corrupt image can make directories refer to each other.
struct WalkBudget {
  int directories = 64;
  int files = 256;
};

void walk(FatFilesystem& fs, const std::string& path, int depth, WalkBudget& budget) {
  if (depth > 8 || --budget.directories < 0) return;
  std::vector<FatDirectoryEntry> entries;
  try {
    entries = fs.list_directory(path);
  } catch (const Error&) {
    return;
  }
  for (const auto& entry : entries) {
    std::string child = path.empty() ? entry.name : path + "/" + entry.name;
    try {
      if (entry.is_directory) {
        walk(fs, child, depth + 1, budget);
      } else if (--budget.files >= 0) {
        (void)fs.stat(child);
        (void)fs.read_file(child);
      }
    } catch (const Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // 48 MiB: room for a FAT32 file system (at least 65525 clusters), small enough to walk quickly.
  fuzz::SparseFuzzDevice device(data, size, 48u << 20, "boot.img");
  std::optional<FatFilesystem> fs;
  try {
    fs.emplace(device);
  } catch (const Error&) {
    return 0;
  }
  fs->set_timestamp(1700000000);
  (void)fs->volume_label();
  WalkBudget budget;
  walk(*fs, "", 0, budget);

  const std::string content = "console=serial0,115200 root=PARTUUID=a1b2c3d4-02 rootwait cfg80211.ieee80211_regdom=DE\n";
  for (const char* path : {"cmdline.txt", "overlays/a-long-overlay-name.dtbo"}) {
    try {
      fs->make_directories("overlays");
      fs->write_file(path, content);
    } catch (const Error&) {
      continue;
    }
    // The write succeeded, so the image was consistent enough to take it: it must read back.
    if (fs->read_text_file(path) != content) std::abort();
  }
  try {
    fs->remove("cmdline.txt");
  } catch (const Error&) {
  }
  return 0;
}
