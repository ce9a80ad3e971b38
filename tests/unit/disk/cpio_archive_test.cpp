// newc cpio as the kernel's initramfs unpacker reads it: header fields, padding, order, the trailer;
// and GNU cpio agreeing with what was written.
#include "disk/cpio_archive.hpp"

#include <catch2/catch.hpp>

#include <string>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using aggrik8s::CpioEntry;
using aggrik8s::CpioEntryType;
using aggrik8s::write_newc_cpio;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t fixed_time = 1767225600;  // 0x6955B900

// The 8-hex-digit field `index` (0 = ino) of the header at `at`.
std::string field(const std::string& archive, std::size_t at, int index) {
  return archive.substr(at + 6 + static_cast<std::size_t>(index) * 8, 8);
}

}  // namespace

TEST_CASE("cpio: one file: the newc header, name and data padded to 4 bytes, then the trailer", "[cpio]") {
  std::string archive = write_newc_cpio({{"init", CpioEntryType::regular, 0755, "#!/bin/sh\n", 0, 0}}, fixed_time);
  REQUIRE(archive.substr(0, 6) == "070701");
  CHECK(field(archive, 0, 0) == "00000001");  // ino
  CHECK(field(archive, 0, 1) == "000081ED");  // S_IFREG | 0755
  CHECK(field(archive, 0, 2) == "00000000");  // uid
  CHECK(field(archive, 0, 3) == "00000000");  // gid
  CHECK(field(archive, 0, 4) == "00000001");  // nlink
  CHECK(field(archive, 0, 5) == "6955B900");  // mtime
  CHECK(field(archive, 0, 6) == "0000000A");  // filesize
  CHECK(field(archive, 0, 11) == "00000005");  // namesize "init\0"
  CHECK(field(archive, 0, 12) == "00000000");  // check
  // 110 + 5 = 115 -> name padded to 116; data 10 bytes -> 128.
  CHECK(archive.substr(110, 6) == std::string("init\0\0", 6));
  CHECK(archive.substr(116, 10) == "#!/bin/sh\n");
  CHECK(archive.substr(126, 2) == std::string(2, '\0'));
  REQUIRE(archive.substr(128, 6) == "070701");
  CHECK(field(archive, 128, 0) == "00000000");
  CHECK(field(archive, 128, 11) == "0000000B");
  CHECK(archive.substr(128 + 110, 11) == std::string("TRAILER!!!\0", 11));
  CHECK(archive.size() % 4 == 0);
}

TEST_CASE("cpio: entries sorted, missing parents added before their contents, inodes in order", "[cpio]") {
  std::string archive = write_newc_cpio({{"lib/modules/k/a.ko", CpioEntryType::regular, 0644, "ko", 0, 0},
                                         {"bin/sh", CpioEntryType::symlink, 0, "busybox", 0, 0},
                                         {"bin", CpioEntryType::directory, 0700, {}, 0, 0},
                                         {"dev/console", CpioEntryType::character_device, 0600, {}, 5, 1}},
                                        fixed_time);
  std::vector<std::string> names;
  std::vector<std::string> inodes;
  for (std::size_t at = 0; at < archive.size();) {
    std::size_t name_size = std::stoul(field(archive, at, 11), nullptr, 16);
    std::size_t file_size = std::stoul(field(archive, at, 6), nullptr, 16);
    std::string name = archive.substr(at + 110, name_size - 1);
    names.push_back(name);
    inodes.push_back(field(archive, at, 0));
    if (name == "bin") CHECK(field(archive, at, 1) == "000041C0");         // S_IFDIR | 0700, as given
    if (name == "bin/sh") CHECK(field(archive, at, 1) == "0000A1FF");      // S_IFLNK | 0777
    if (name == "dev/console") {
      CHECK(field(archive, at, 1) == "00002180");  // S_IFCHR | 0600
      CHECK(field(archive, at, 9) == "00000005");
      CHECK(field(archive, at, 10) == "00000001");
    }
    if (name == "lib") CHECK(field(archive, at, 1) == "000041ED");  // added: 0755
    if (name == "TRAILER!!!") break;
    at += (110 + name_size + 3) / 4 * 4;
    at += (file_size + 3) / 4 * 4;
  }
  CHECK(names == std::vector<std::string>{"bin", "bin/sh", "dev", "dev/console", "lib", "lib/modules", "lib/modules/k",
                                          "lib/modules/k/a.ko", "TRAILER!!!"});
  CHECK(inodes.front() == "00000001");
  CHECK(inodes[7] == "00000008");
}

TEST_CASE("cpio: the same entries in any order give the same bytes", "[cpio]") {
  std::vector<CpioEntry> entries{{"a/b", CpioEntryType::regular, 0644, "1", 0, 0}, {"a-b", CpioEntryType::regular, 0644, "2", 0, 0},
                                 {"c", CpioEntryType::symlink, 0, "a/b", 0, 0}};
  std::vector<CpioEntry> reversed(entries.rbegin(), entries.rend());
  CHECK(write_newc_cpio(entries, fixed_time) == write_newc_cpio(reversed, fixed_time));
}

TEST_CASE("cpio: invalid entries are refused with the entry's name", "[cpio]") {
  auto file = [](std::string path) { return CpioEntry{std::move(path), CpioEntryType::regular, 0644, "x", 0, 0}; };
  CHECK_THROWS_WITH(write_newc_cpio({file("/init")}, 0), Contains("'/init': absolute path"));
  CHECK_THROWS_WITH(write_newc_cpio({file("a/../b")}, 0), Contains("'a/../b': '..' component"));
  CHECK_THROWS_WITH(write_newc_cpio({file("a//b")}, 0), Contains("empty path component"));
  CHECK_THROWS_WITH(write_newc_cpio({file("init"), file("init")}, 0), Contains("'init' given twice"));
  CHECK_THROWS_WITH(write_newc_cpio({file("init"), file("init/x")}, 0), Contains("its parent 'init' is not a directory"));
  CHECK_THROWS_WITH(write_newc_cpio({{"l", CpioEntryType::symlink, 0, "", 0, 0}}, 0), Contains("'l': symlink without a target"));
  CHECK_THROWS_WITH(write_newc_cpio({file("init")}, -1), Contains("does not fit newc's 32-bit unsigned field"));
}

TEST_CASE("cpio: GNU cpio lists and extracts what was written", "[cpio]") {
  aggrik8s::test::TempDir dir;
  std::string archive = write_newc_cpio({{"etc/udhcpc.script", CpioEntryType::regular, 0750, "#!/bin/sh\nexit 0\n", 0, 0},
                                         {"bin/busybox", CpioEntryType::regular, 04755, std::string(1001, 'b'), 0, 0},
                                         {"bin/sh", CpioEntryType::symlink, 0, "busybox", 0, 0},
                                         {"newroot", CpioEntryType::directory, 0755, {}, 0, 0}},
                                        fixed_time);
  aggrik8s::test::write_file(dir / "a.cpio", archive);
  auto listing = aggrik8s::test::run("cd '" + dir.path().string() + "' && cpio -itv --quiet < a.cpio");
  REQUIRE(listing.exit_code == 0);
  CHECK_THAT(listing.output, Contains("-rwsr-xr-x   1 root     root         1001"));
  CHECK_THAT(listing.output, Contains("bin/sh -> busybox"));
  CHECK_THAT(listing.output, Contains("drwxr-xr-x   2 root     root            0"));
  auto extract = aggrik8s::test::run("mkdir '" + (dir / "x").string() + "' && cd '" + (dir / "x").string() +
                                     "' && cpio -idm --quiet --no-absolute-filenames < ../a.cpio && stat -c '%a %s %Y' "
                                     "etc/udhcpc.script bin/busybox && readlink bin/sh");
  REQUIRE(extract.exit_code == 0);
  CHECK(extract.output == "750 17 1767225600\n4755 1001 1767225600\nbusybox\n");
}
