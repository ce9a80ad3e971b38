// The flash policy's decisions: which targets are refused, where a block map is looked for, when the
// user is asked and what. (Refusals of disks, on a fake /sys tree: flash_attached_disks_test.cpp.)
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "tests/test_support.hpp"

#include <filesystem>

#include "core/error.hpp"
#include "flash/flash_plan.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

TEST_CASE("flash plan: the target is a block device, a regular file, or a new file outside /dev", "[flash]") {
  CHECK(classify_flash_target("/dev/sdb", static_cast<mode_t>(S_IFBLK | 0660)) == FlashTargetKind::block_device);
  CHECK(classify_flash_target("copy.img", static_cast<mode_t>(S_IFREG | 0644)) == FlashTargetKind::regular_file);
  CHECK(classify_flash_target("out/copy.img", std::nullopt) == FlashTargetKind::new_file);
  CHECK_THROWS_WITH(classify_flash_target("/dev/sdz", std::nullopt),
                    "/dev/sdz: no such device ('aggrik8s-image flash --list' shows the candidates)");
  // A typo under /dev is caught however it is spelt.
  CHECK_THROWS_WITH(classify_flash_target("/dev/../dev/sdz", std::nullopt), Catch::Contains("no such device"));
  // ... relative to /dev (`cd /dev; flash IMG sdzz`), and through a link to a node that is not there.
  {
    struct Cwd {
      std::filesystem::path was = std::filesystem::current_path();
      ~Cwd() { std::filesystem::current_path(was); }
    } restore;
    std::filesystem::current_path("/dev");
    CHECK_THROWS_WITH(classify_flash_target("a8s-no-such-disk", std::nullopt), Catch::Contains("no such device"));
  }
  aggrik8s::test::TempDir dir;
  std::filesystem::create_symlink("/dev/a8s-no-such-disk", dir / "by-id-link");
  CHECK_THROWS_WITH(classify_flash_target(dir / "by-id-link", std::nullopt),
                    Catch::Contains("is a symbolic link to something that does not exist"));
  CHECK_THROWS_WITH(classify_flash_target("/tmp", static_cast<mode_t>(S_IFDIR | 0755)),
                    "/tmp is neither a block device nor a regular file");
  CHECK_THROWS_WITH(classify_flash_target("/dev/ttyS0", static_cast<mode_t>(S_IFCHR | 0660)),
                    Catch::Contains("neither a block device"));
}

TEST_CASE("flash plan: block maps are looked for beside the source as bmaptool does", "[flash]") {
  using Names = std::vector<std::string>;
  auto candidates = [](const fs::path& image) {
    Names names;
    for (const auto& path : bmap_candidates_beside(image)) names.push_back(path.string());
    return names;
  };
  CHECK(candidates("out/pi.img.xz") == Names{"out/pi.img.xz.bmap", "out/pi.img.bmap", "out/pi.bmap"});
  CHECK(candidates("pi.img.zst") == Names{"pi.img.zst.bmap", "pi.img.bmap", "pi.bmap"});
  CHECK(candidates("pi.img") == Names{"pi.img.bmap", "pi.bmap"});
  CHECK(candidates("pi.raw.gz") == Names{"pi.raw.gz.bmap", "pi.raw.bmap"});
  CHECK(candidates("disk") == Names{"disk.bmap"});
}

TEST_CASE("flash plan: the test delay is a count of milliseconds or nothing", "[flash]") {
  using std::chrono::milliseconds;
  CHECK(parse_flash_test_delay(nullptr) == milliseconds(0));
  CHECK(parse_flash_test_delay("250") == milliseconds(250));
  CHECK(parse_flash_test_delay("-5") == milliseconds(0));
  CHECK(parse_flash_test_delay("slow") == milliseconds(0));
  CHECK(parse_flash_test_delay("") == milliseconds(0));
}

TEST_CASE("flash plan: a disk needs the user's yes, a file does not, the question names the disk", "[flash]") {
  CheckedFlashTarget file;
  file.path = "copy.img";
  file.kind = FlashTargetKind::regular_file;
  CHECK_FALSE(needs_overwrite_confirmation(file, false));

  CheckedFlashTarget card;
  card.path = "/dev/sdb";
  card.kind = FlashTargetKind::block_device;
  card.disk = AttachedDisk{};
  card.disk->size_bytes = 32ull << 30;
  card.disk->transport = "usb";
  card.disk->model = "Ultra";
  CHECK(needs_overwrite_confirmation(card, false));
  CHECK_FALSE(needs_overwrite_confirmation(card, true));
  CHECK(overwrite_question(card, "pi.img.zst") ==
        "About to overwrite /dev/sdb (32.0 GiB, usb, Ultra) with pi.img.zst.\nEverything on it will be lost.");
  card.disk->transport.clear();
  card.disk->model.clear();
  CHECK(overwrite_question(card, "pi.img") ==
        "About to overwrite /dev/sdb (32.0 GiB) with pi.img.\nEverything on it will be lost.");
}
