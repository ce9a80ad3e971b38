// open_confined_file: which files a TFTP/HTTP client can read through the served directory
// (policy in netboot/confined_file.hpp and docs/netboot.md).
#include "netboot/confined_file.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "netboot/tftp/tftp_path.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
namespace fs = std::filesystem;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;

namespace {

std::string content_of(const ConfinedFile& file) {
  REQUIRE(file.status == ConfinedFileStatus::opened);
  std::string out(file.size, '\0');
  REQUIRE(::pread(file.fd.get(), out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
  return out;
}

void set_mode(const fs::path& path, mode_t mode) { REQUIRE(::chmod(path.c_str(), mode) == 0); }

// The positive "outside the root" cases need a world-searchable path from / to the test directory.
bool public_ancestors(const fs::path& path) {
  for (fs::path p = path; !p.empty() && p != p.root_path(); p = p.parent_path()) {
    struct stat info {};
    if (::stat(p.c_str(), &info) != 0 || (info.st_mode & S_IXOTH) == 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("confined file: names are taken strictly relative, never repaired", "[confined][path]") {
  TempDir dir;
  write_file(dir / "root/a/file", "a");
  const fs::path root = fs::canonical(dir / "root");
  CHECK(content_of(open_confined_file(root, "a/file")) == "a");
  CHECK(content_of(open_confined_file(root, "a//file")) == "a");
  for (std::string_view bad : {"../root/a/file", "a/../a/file", "a/./file", "/a/file", "", ".", "a/.."}) {
    INFO(bad);
    CHECK(open_confined_file(root, bad).status == ConfinedFileStatus::refused);
  }
  CHECK(open_confined_file(root, std::string_view("a/file\0x", 8)).status == ConfinedFileStatus::refused);
  CHECK(open_confined_file(root, "a").status == ConfinedFileStatus::refused);  // a directory
  CHECK(open_confined_file(root, "a/missing").status == ConfinedFileStatus::not_found);
  CHECK(open_confined_file(root, "a/file/x").status == ConfinedFileStatus::not_found);
  // "file/" asks for a directory: not the file (POSIX ENOTDIR), as tftp-hpa and nginx answer.
  CHECK(open_confined_file(root, "a/file/").status == ConfinedFileStatus::not_found);
  CHECK(open_confined_file(root, "a/file//").status == ConfinedFileStatus::not_found);
  CHECK(open_confined_file(root, "a/").status == ConfinedFileStatus::refused);  // a directory
  CHECK(open_confined_file("relative/root", "a/file").status == ConfinedFileStatus::refused);
}

TEST_CASE("confined file: a shared tree serves only world-readable files, as tftp-hpa does", "[confined][mode]") {
  // `--http-root out/` put every node image (0600: join tokens) on /files/ for anyone on the network.
  TempDir dir;
  write_file(dir / "root/pi5-worker/n1.img", "image with a join token");
  write_file(dir / "root/ipxe.efi", "public");
  set_mode(dir / "root/pi5-worker/n1.img", 0600);
  set_mode(dir / "root/ipxe.efi", 0644);
  const fs::path root = fs::canonical(dir / "root");
  ConfinedFile secret = open_confined_file(root, "pi5-worker/n1.img", ConfinedReach::world_readable_only);
  CHECK(secret.status == ConfinedFileStatus::refused);
  CHECK_THAT(secret.reason, Catch::Contains("is not world-readable"));
  CHECK(content_of(open_confined_file(root, "ipxe.efi", ConfinedReach::world_readable_only)) == "public");
  // A declared asset's directory or a build's node tree serves what the operator named.
  CHECK(content_of(open_confined_file(root, "pi5-worker/n1.img")) == "image with a join token");
  CHECK(TftpRoot(root, ConfinedReach::world_readable_only).open("pi5-worker/n1.img").status == TftpOpenStatus::access_violation);
  CHECK(TftpRoot(root).open("pi5-worker/n1.img").status == TftpOpenStatus::opened);
}

TEST_CASE("confined file: backslashes are ordinary characters, not separators", "[confined][path]") {
  TempDir dir;
  write_file(dir / "root/Boot\\BCD", "bcd");
  write_file(dir / "secret", "no");
  const fs::path root = fs::canonical(dir / "root");
  CHECK(content_of(open_confined_file(root, "Boot\\BCD")) == "bcd");
  CHECK(open_confined_file(root, "..\\secret").status == ConfinedFileStatus::not_found);
}

TEST_CASE("confined file: links inside the root are followed", "[confined][symlink]") {
  TempDir dir;
  write_file(dir / "root/kernel8.img", "kernel");
  fs::create_directories(dir / "root/sub/deeper");
  fs::create_symlink("kernel8.img", dir / "root/relative");
  fs::create_symlink("../../kernel8.img", dir / "root/sub/deeper/up-two");
  fs::create_symlink("sub", dir / "root/sub-link");
  fs::create_symlink("../kernel8.img", dir / "root/sub/up");
  // Out of the root and straight back in: still the root's own file, whatever the path on the way.
  fs::create_symlink("../root/kernel8.img", dir / "root/out-and-back");
  fs::create_symlink(fs::canonical(dir / "root/kernel8.img"), dir / "root/absolute-inside");
  set_mode(dir.path(), 0700);  // so "inside" must not depend on the public-path rule
  const fs::path root = fs::canonical(dir / "root");
  for (std::string_view name : {"relative", "sub/deeper/up-two", "sub-link/up", "out-and-back", "absolute-inside"}) {
    INFO(name);
    auto file = open_confined_file(root, name);
    CHECK(content_of(file) == "kernel");
    CHECK_FALSE(file.outside_root);
    CHECK(file.path == root / "kernel8.img");
  }
  set_mode(dir.path(), 0755);
}

TEST_CASE("confined file: links out of the root reach only files every local user could read", "[confined][symlink]") {
  TempDir dir;
  write_file(dir / "root/placeholder", "");
  write_file(dir / "public/ipxe.efi", "efi");
  write_file(dir / "public/private.key", "key");
  write_file(dir / "closed/ipxe.efi", "efi");
  set_mode(dir.path(), 0755);
  set_mode(dir / "public", 0755);
  set_mode(dir / "public/ipxe.efi", 0644);
  set_mode(dir / "public/private.key", 0600);
  set_mode(dir / "closed", 0700);
  set_mode(dir / "closed/ipxe.efi", 0644);
  fs::create_symlink(fs::canonical(dir / "public/ipxe.efi"), dir / "root/ipxe.efi");  // like Debian's
  fs::create_symlink("../public/ipxe.efi", dir / "root/relative.efi");
  fs::create_symlink(fs::canonical(dir / "public"), dir / "root/public-dir");
  fs::create_symlink("../public/private.key", dir / "root/key");
  fs::create_symlink("../closed/ipxe.efi", dir / "root/closed.efi");
  fs::create_symlink(fs::canonical(dir / "closed/ipxe.efi"), dir / "root/closed-absolute.efi");
  const fs::path root = fs::canonical(dir / "root");

  if (public_ancestors(dir.path())) {
    for (std::string_view name : {"ipxe.efi", "relative.efi", "public-dir/ipxe.efi"}) {
      INFO(name);
      auto file = open_confined_file(root, name);
      CHECK(content_of(file) == "efi");
      CHECK(file.outside_root);
      CHECK(file.path == fs::canonical(dir / "public/ipxe.efi"));
    }
  } else {
    WARN("the test directory's ancestors are not world-searchable: positive outside-the-root cases skipped");
  }
  auto key = open_confined_file(root, "key");
  CHECK(key.status == ConfinedFileStatus::refused);
  CHECK_THAT(key.reason, Catch::Contains("not world-readable"));
  CHECK(open_confined_file(root, "public-dir/private.key").status == ConfinedFileStatus::refused);
  for (std::string_view name : {"closed.efi", "closed-absolute.efi"}) {
    INFO(name);
    auto closed = open_confined_file(root, name);
    CHECK(closed.status == ConfinedFileStatus::refused);
    CHECK_THAT(closed.reason, Catch::Contains("not every local user may enter"));
  }
  // A link out to a missing file is a plain miss.
  fs::create_symlink("../public/missing", dir / "root/dangling");
  CHECK(open_confined_file(root, "dangling").status == ConfinedFileStatus::not_found);
}

TEST_CASE("confined file: system files behind links placed in the root", "[confined][symlink]") {
  TempDir dir;
  fs::create_directories(dir / "root");
  fs::create_symlink("/etc/passwd", dir / "root/passwd");
  fs::create_symlink("/etc/shadow", dir / "root/shadow");
  const fs::path root = fs::canonical(dir / "root");
  // Decision (docs/netboot.md): a link an operator placed is followed to a world-readable file, as
  // tftp-hpa would serve /etc/passwd itself; whoever could place the link could have copied the file.
  struct stat passwd {};
  if (::stat("/etc/passwd", &passwd) == 0 && (passwd.st_mode & S_IROTH) != 0) {
    CHECK(open_confined_file(root, "passwd").status == ConfinedFileStatus::opened);
  }
  struct stat shadow {};
  if (::stat("/etc/shadow", &shadow) == 0) {
    REQUIRE((shadow.st_mode & S_IROTH) == 0);
    auto refused = open_confined_file(root, "shadow");
    CHECK(refused.status == ConfinedFileStatus::refused);
    CHECK_THAT(refused.reason, Catch::Contains("not world-readable"));
  }
}

TEST_CASE("confined file: /proc magic links and pseudo-filesystem files are never served", "[confined][symlink]") {
  TempDir dir;
  write_file(dir / "root/placeholder", "");
  fs::create_symlink("/proc/self/root/etc/passwd", dir / "root/via-proc-root");
  fs::create_symlink("/proc/self/fd/0", dir / "root/fd0");
  fs::create_symlink("/proc/self/exe", dir / "root/exe");
  fs::create_symlink("/proc/" + std::to_string(::getpid()) + "/exe", dir / "root/pid-exe");
  fs::create_symlink("/proc/version", dir / "root/version");  // world-readable, but kernel state
  fs::create_symlink("/sys/kernel/mm/transparent_hugepage/enabled", dir / "root/sysfs");
  const fs::path root = fs::canonical(dir / "root");
  for (std::string_view name : {"via-proc-root", "fd0", "exe", "pid-exe", "version"}) {
    INFO(name);
    auto file = open_confined_file(root, name);
    CHECK(file.status == ConfinedFileStatus::refused);
    CHECK_THAT(file.reason, Catch::Contains("procfs"));
  }
  if (fs::exists("/sys/kernel/mm/transparent_hugepage/enabled")) {
    auto file = open_confined_file(root, "sysfs");
    CHECK(file.status == ConfinedFileStatus::refused);
    CHECK_THAT(file.reason, Catch::Contains("sysfs"));
  }
}

TEST_CASE("confined file: link loops, FIFOs and directories are refused without hanging", "[confined][symlink]") {
  TempDir dir;
  fs::create_directories(dir / "root/dir");
  fs::create_symlink("loop-b", dir / "root/loop-a");
  fs::create_symlink("loop-a", dir / "root/loop-b");
  fs::create_symlink("self", dir / "root/self");
  fs::create_symlink(".", dir / "root/dot");
  fs::create_symlink("dir/..", dir / "root/dir-up");
  REQUIRE(::mkfifo((dir / "root/fifo").c_str(), 0644) == 0);
  const fs::path root = fs::canonical(dir / "root");
  for (std::string_view name : {"loop-a", "self"}) {
    INFO(name);
    auto loop = open_confined_file(root, name);
    CHECK(loop.status == ConfinedFileStatus::refused);
    CHECK_THAT(loop.reason, Catch::Contains("symbolic links (a loop?)"));
  }
  for (std::string_view name : {"fifo", "dir", "dot", "dir-up", "dot/dot/dir"}) {
    INFO(name);
    CHECK(open_confined_file(root, name).status == ConfinedFileStatus::refused);
  }
}

// Debian 12's ipxe package: /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi, the root docs/netboot.md names.
TEST_CASE("confined file: Debian's /usr/lib/ipxe serves ipxe.efi through its link to /boot", "[confined][symlink][tftp]") {
  if (!fs::is_symlink("/usr/lib/ipxe/ipxe.efi") || !fs::exists("/boot/ipxe.efi")) {
    WARN("Debian's ipxe package is not installed: skipped");
    return;
  }
  TftpRoot root("/usr/lib/ipxe");
  for (const char* name : {"ipxe.efi", "/ipxe.efi", "undionly.kpxe", "snponly.efi"}) {
    INFO(name);
    CHECK(root.open(name).status == TftpOpenStatus::opened);
  }
  auto efi = root.open("ipxe.efi");
  REQUIRE(efi.status == TftpOpenStatus::opened);
  CHECK(efi.path == fs::canonical("/boot/ipxe.efi"));
  CHECK(efi.size == fs::file_size("/boot/ipxe.efi"));
}

// Kernels before 5.6 (or an old container seccomp profile) have no openat2: the same walk with
// single-component openat(O_NOFOLLOW) steps must give the same answers.
TEST_CASE("confined file: the openat fallback keeps the same policy", "[confined][symlink]") {
  TempDir dir;
  write_file(dir / "root/kernel8.img", "kernel");
  write_file(dir / "public/ipxe.efi", "efi");
  write_file(dir / "public/private.key", "key");
  set_mode(dir.path(), 0755);
  set_mode(dir / "public", 0755);
  set_mode(dir / "public/ipxe.efi", 0644);
  set_mode(dir / "public/private.key", 0600);
  fs::create_symlink("kernel8.img", dir / "root/inside");
  fs::create_symlink(fs::canonical(dir / "public/ipxe.efi"), dir / "root/ipxe.efi");
  fs::create_symlink("../public/private.key", dir / "root/key");
  fs::create_symlink("/proc/self/root/etc/passwd", dir / "root/via-proc-root");
  fs::create_symlink("loop", dir / "root/loop");
  const fs::path root = fs::canonical(dir / "root");
  use_openat2_for_testing(false);
  CHECK(content_of(open_confined_file(root, "inside")) == "kernel");
  if (public_ancestors(dir.path())) CHECK(content_of(open_confined_file(root, "ipxe.efi")) == "efi");
  CHECK(open_confined_file(root, "key").status == ConfinedFileStatus::refused);
  CHECK(open_confined_file(root, "via-proc-root").status == ConfinedFileStatus::refused);
  CHECK(open_confined_file(root, "loop").status == ConfinedFileStatus::refused);
  CHECK(open_confined_file(root, "../public/ipxe.efi").status == ConfinedFileStatus::refused);
  CHECK(open_confined_file(root, "missing").status == ConfinedFileStatus::not_found);
  use_openat2_for_testing(true);
}
