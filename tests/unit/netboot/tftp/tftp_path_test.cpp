#include "netboot/tftp/tftp_path.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
namespace fs = std::filesystem;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;

TEST_CASE("tftp path: request names are normalized inside the root", "[tftp][path]") {
  CHECK(normalize_tftp_request_path("/pxelinux.0").path == "pxelinux.0");
  CHECK(normalize_tftp_request_path("pxelinux.cfg//default").path == "pxelinux.cfg/default");
  CHECK(normalize_tftp_request_path("./a/./b").path == "a/b");
  CHECK(normalize_tftp_request_path("a/boot.img/").path == "a/boot.img/");  // a directory: no file matches
  CHECK(normalize_tftp_request_path("../etc/passwd").refusal == "contains a '..' component");
  CHECK(normalize_tftp_request_path("a/../../b").refusal == "contains a '..' component");
  CHECK(normalize_tftp_request_path("a/..").refusal == "contains a '..' component");
  CHECK(normalize_tftp_request_path("/").refusal == "names the root directory itself");
  CHECK(normalize_tftp_request_path("a..b/..c").path == "a..b/..c");  // only whole components count
  CHECK(normalize_tftp_request_path("\\Boot\\BCD").path == "\\Boot\\BCD");  // remap's job, not ours
  CHECK(normalize_tftp_request_path("..\\..\\etc").path == "..\\..\\etc");  // one odd name, no '..' component
  CHECK(normalize_tftp_request_path(std::string_view("a\0/../b", 7)).refusal == "contains a NUL byte");
}

TEST_CASE("tftp path: files open inside the root, escapes are access violations", "[tftp][path]") {
  TempDir dir;
  write_file(dir / "outside.txt", "secret");
  fs::permissions(dir / "outside.txt", fs::perms::owner_read | fs::perms::owner_write);  // not public
  write_file(dir / "root/kernel8.img", "kernel");
  write_file(dir / "root/9ffefdef/config.txt", "pi-specific");
  write_file(dir / "root/config.txt", "shared");
  write_file(dir / "root/dc-a6-32-01-02-03/cmdline.txt", "by-mac");
  fs::create_directories(dir / "root/dir");
  fs::create_symlink("kernel8.img", dir / "root/link-inside");
  fs::create_symlink(dir / "root/kernel8.img", dir / "root/absolute-link-inside");
  fs::create_symlink("../outside.txt", dir / "root/link-outside");
  fs::create_symlink(dir.path(), dir / "root/dir-link-outside");
  TftpRoot root(dir / "root");

  auto opened = root.open("/kernel8.img");
  REQUIRE(opened.status == TftpOpenStatus::opened);
  CHECK(opened.size == 6);
  CHECK(opened.fd);
  CHECK(root.open("link-inside").status == TftpOpenStatus::opened);
  CHECK(root.open("absolute-link-inside").status == TftpOpenStatus::opened);

  CHECK(root.open("missing").status == TftpOpenStatus::not_found);
  CHECK(root.open("kernel8.img/x").status == TftpOpenStatus::not_found);
  CHECK(root.open("../outside.txt").status == TftpOpenStatus::access_violation);
  auto escaped = root.open("link-outside");
  CHECK(escaped.status == TftpOpenStatus::access_violation);
  CHECK_THAT(escaped.reason, Catch::Contains("outside the served directory"));
  CHECK(root.open("dir-link-outside/outside.txt").status == TftpOpenStatus::access_violation);
  CHECK(root.open("dir").status == TftpOpenStatus::access_violation);  // not a regular file
  CHECK(root.open("/").status == TftpOpenStatus::access_violation);

  SECTION("client directories are tried first, then the shared tree") {
    std::vector<std::string> pi = {"9ffefdef"};
    CHECK(aggrik8s::test::read_file("/proc/self/fd/" + std::to_string(root.open("config.txt", pi).fd.get())) ==
          "pi-specific");
    auto fallback = root.open("kernel8.img", pi);
    REQUIRE(fallback.status == TftpOpenStatus::opened);
    CHECK(fallback.path == fs::canonical(dir / "root/kernel8.img"));
    const std::uint8_t mac_bytes[6] = {0xdc, 0xa6, 0x32, 0x01, 0x02, 0x03};
    std::string mac = tftp_mac_directory(std::span<const std::uint8_t, 6>(mac_bytes));
    CHECK(mac == "dc-a6-32-01-02-03");
    std::vector<std::string> by_mac = {mac};
    CHECK(root.open("cmdline.txt", by_mac).path == fs::canonical(dir / "root" / mac / "cmdline.txt"));
    // A client directory that leads out of the root refuses instead of falling back.
    std::vector<std::string> escaping = {"dir-link-outside"};
    CHECK(root.open("outside.txt", escaping).status == TftpOpenStatus::access_violation);
    std::vector<std::string> bad_prefix = {"../x"};
    CHECK(root.open("config.txt", bad_prefix).status == TftpOpenStatus::opened);
  }
}

TEST_CASE("tftp path: a missing root is reported when the server is configured", "[tftp][path]") {
  TempDir dir;
  CHECK_THROWS_AS(TftpRoot(dir / "nope"), aggrik8s::Error);
  write_file(dir / "file", "x");
  CHECK_THROWS_WITH(TftpRoot(dir / "file"), Catch::Contains("is not a directory"));
}
