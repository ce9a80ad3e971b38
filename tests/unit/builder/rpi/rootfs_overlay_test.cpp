// Overlays are copied as trees: what the image gets is the overlay's own entries (symlinks with their
// text, hard links, empty directories, modes), never what a symlink points at on the build host.
#include "builder/rpi/rootfs_overlay.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "disk/ext4_filesystem.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using aggrik8s::Ext4Access;
using aggrik8s::Ext4Filesystem;
using aggrik8s::Ext4FileType;
using aggrik8s::builder::install_overlays;
using aggrik8s::builder::OverlayEntry;
using aggrik8s::builder::read_overlay_tree;
using aggrik8s::builder::render_overlay_template;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t region_offset = 1 << 20;
constexpr std::uint64_t region_length = 32 << 20;
constexpr std::int64_t fixed_time = 1767225600;

const std::map<std::string, std::string> values{
    {"node", "n1"}, {"hostname", "worker-1"}, {"role", "agent"}, {"profile", "lab"}};

void symlink(const std::string& target, const fs::path& at) {
  fs::create_directories(at.parent_path());
  fs::create_symlink(target, at);
}

void chmod(const fs::path& path, unsigned mode) { REQUIRE(::chmod(path.c_str(), mode) == 0); }

// The "base image": a root filesystem made by mke2fs -d from a host tree, with what overlays meet in
// Raspberry Pi OS: /etc/hostname, a merged-/usr /lib link, /tmp 1777, the FAT partition's mount point.
fs::path make_root_image(const TempDir& dir) {
  fs::path base = dir / "base";
  write_file(base / "etc/hostname", "raspberrypi\n");
  write_file(base / "usr/lib/os-release", "ID=debian\n");
  fs::create_symlink("usr/lib", base / "lib");
  fs::create_directories(base / "tmp");
  chmod(base / "tmp", 01777);
  fs::create_directories(base / "boot/firmware");
  auto image = dir / "root.img";
  { std::ofstream create(image); }
  fs::resize_file(image, region_offset + region_length);
  aggrik8s::create_ext4_filesystem(image, region_offset, region_length,
                                   {.label = "rootfs", .populate_from = base, .fixed_time = fixed_time, .uuid = {}});
  return image;
}

Ext4Filesystem open_root(const fs::path& image, Ext4Access access = Ext4Access::read_write) {
  return Ext4Filesystem::open(image, region_offset, region_length, access, fixed_time);
}

void require_clean(const fs::path& image) {
  auto check = aggrik8s::check_ext4_filesystem(image, region_offset);
  INFO(check.report);
  REQUIRE(check.clean);
}

}  // namespace

TEST_CASE("overlay templates: the documented variables, both spellings, nothing else", "[overlay]") {
  CHECK(render_overlay_template("{{node}} {{ hostname }} {{role}} {{ profile }}\n", values) == "n1 worker-1 agent lab\n");
  // Only exactly one space on each side is the spaced form.
  CHECK(render_overlay_template("{{ node}} {{node }} {{  node  }}", values) == "{{ node}} {{node }} {{  node  }}");
  CHECK(render_overlay_template("{{{node}}}", values) == "{n1}");
  CHECK(render_overlay_template("{{node", values) == "{{node");
  CHECK(render_overlay_template("", values).empty());
  // Inserted values are not scanned again.
  CHECK(render_overlay_template("{{node}}", {{"node", "{{role}}"}, {"role", "x"}}) == "{{role}}");
  // Unknown names stay as they are and are reported (once); other template languages' syntax is left alone.
  std::vector<std::string> unknown;
  CHECK(render_overlay_template("{{hostnmae}} {{ .Values.x }} {{hostnmae}} {{ ip }} ${HOME}", values, &unknown) ==
        "{{hostnmae}} {{ .Values.x }} {{hostnmae}} {{ ip }} ${HOME}");
  CHECK(unknown == std::vector<std::string>{"hostnmae", "ip"});
  // The example in docs/profiles.md ("Overlays").
  unknown.clear();
  CHECK(render_overlay_template("{{hostname}} ({{role}}) of {{ profile }}, node {{node}}; {{ip}} stays\n",
                                {{"node", "n2"}, {"hostname", "worker-2"}, {"role", "agent"}, {"profile", "demo"}},
                                &unknown) == "worker-2 (agent) of demo, node n2; {{ip}} stays\n");
  CHECK(unknown == std::vector<std::string>{"ip"});
}

TEST_CASE("overlay trees are read without following symlinks, in a fixed order", "[overlay]") {
  TempDir dir;
  fs::path ov = dir / "ov";
  write_file(ov / "etc/acc/hello.txt", "hello\n");
  symlink("/etc/hostname", ov / "etc/acc/hostname-link");  // exists on the build host: must not matter
  symlink("../../../../etc/acc/hello.txt", ov / "usr/local/share/acc/hello-link");
  symlink("../share", ov / "usr/local/dir-link");  // a directory on the host: not descended into
  write_file(ov / "etc/acc/a.tmpl", "{{node}}\n");
  fs::create_directories(ov / "var/empty");
  fs::create_hard_link(ov / "etc/acc/hello.txt", ov / "usr/local/share/acc/hello-hard");

  auto entries = read_overlay_tree(ov);
  std::vector<std::string> targets;
  for (const auto& e : entries) targets.push_back(e.target);
  CHECK(targets == std::vector<std::string>{"/etc", "/etc/acc", "/etc/acc/a", "/etc/acc/hello.txt",
                                            "/etc/acc/hostname-link", "/usr", "/usr/local", "/usr/local/dir-link",
                                            "/usr/local/share", "/usr/local/share/acc",
                                            "/usr/local/share/acc/hello-hard", "/usr/local/share/acc/hello-link",
                                            "/var", "/var/empty"});
  auto find = [&](const std::string& target) -> const OverlayEntry& {
    auto it = std::find_if(entries.begin(), entries.end(), [&](const auto& e) { return e.target == target; });
    REQUIRE(it != entries.end());
    return *it;
  };
  CHECK(find("/etc/acc/hostname-link").kind == OverlayEntry::Kind::symlink);
  CHECK(find("/etc/acc/hostname-link").link == "/etc/hostname");
  CHECK(find("/usr/local/share/acc/hello-link").link == "../../../../etc/acc/hello.txt");
  CHECK(find("/usr/local/dir-link").kind == OverlayEntry::Kind::symlink);
  CHECK(find("/etc/acc/a").templated);
  CHECK(find("/usr/local/share/acc/hello-hard").kind == OverlayEntry::Kind::hard_link);
  CHECK(find("/usr/local/share/acc/hello-hard").link == "/etc/acc/hello.txt");
  CHECK(find("/var/empty").kind == OverlayEntry::Kind::directory);
  CHECK_FALSE(find("/var/empty").has_children);
  CHECK(find("/var").has_children);
}

TEST_CASE("overlay trees an image cannot hold are refused, naming the entry", "[overlay]") {
  TempDir dir;
  fs::path ov = dir / "ov";
  fs::create_directories(ov / "run");
  SECTION("a FIFO") {
    REQUIRE(::mkfifo((ov / "run/pipe").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(read_overlay_tree(ov), Contains("overlay " + ov.string() + ": run/pipe: is a FIFO") &&
                                                 Contains("only directories, regular files and symlinks"));
  }
  SECTION("a template without a name") {
    write_file(ov / "run/.tmpl", "x");
    CHECK_THROWS_WITH(read_overlay_tree(ov), Contains("run/.tmpl: a template needs a name before '.tmpl'"));
  }
  SECTION("a template and a file of the same name") {
    write_file(ov / "run/motd", "plain");
    write_file(ov / "run/motd.tmpl", "{{node}}");
    CHECK_THROWS_WITH(read_overlay_tree(ov), Contains("run/motd.tmpl: becomes /run/motd in the image, as run/motd does"));
  }
  SECTION("a missing overlay") {
    CHECK_THROWS_WITH(read_overlay_tree(dir / "nope"), Contains("does not exist or is not a directory"));
  }
  SECTION("anything under the boot partition's mount point") {
    write_file(ov / "boot/firmware/config.txt", "x");
    auto entries = read_overlay_tree(ov);
    CHECK_THROWS_WITH(aggrik8s::builder::require_outside_boot_mount(entries, ov, "/boot/firmware"),
                      Contains("boot/firmware/config.txt: the node mounts its FAT boot partition on /boot/firmware"));
    // A symlink there would be followed by nothing: FAT has none.
    fs::remove_all(ov / "boot");
    symlink("/etc/hostname", ov / "boot/firmware/link");
    CHECK_THROWS_WITH(aggrik8s::builder::require_outside_boot_mount(read_overlay_tree(ov), ov, "/boot/firmware"),
                      Contains("boot/firmware/link"));
    // The mount point itself, as a directory, and /boot beside it are fine.
    fs::remove_all(ov / "boot");
    fs::create_directories(ov / "boot/firmware");
    write_file(ov / "boot/extra.txt", "x");
    CHECK_NOTHROW(aggrik8s::builder::require_outside_boot_mount(read_overlay_tree(ov), ov, "/boot/firmware"));
  }
}

TEST_CASE("overlays land in ext4 as trees: symlinks, hard links, empty directories, modes", "[overlay][ext4]") {
  TempDir dir;
  auto image = make_root_image(dir);
  fs::path ov = dir / "ov";
  write_file(ov / "etc/acc/hello.txt", "hello\n");
  symlink("/etc/hostname", ov / "etc/acc/hostname-link");
  symlink("../../../../etc/acc/hello.txt", ov / "usr/local/share/acc/hello-link");
  symlink("/nonexistent/target", ov / "etc/acc/dangling");
  symlink("../../../../../../outside-the-overlay", ov / "etc/acc/outside");
  std::string long_target = "/usr/local/share/acc/" + std::string(80, 'x');  // a block symlink, not in the inode
  symlink(long_target, ov / "etc/acc/long-link");
  symlink("../usr/local/share/acc", ov / "etc/dir-link");
  symlink("hello.txt", ov / "etc/acc/named.tmpl");  // a symlink is never templated
  fs::create_hard_link(ov / "etc/acc/hello.txt", ov / "usr/local/share/acc/hello-hard");
  write_file(ov / "usr/local/bin/suid", "#!/bin/sh\n");
  chmod(ov / "usr/local/bin/suid", 04755);
  write_file(ov / "usr/local/bin/sgid", "#!/bin/sh\n");
  chmod(ov / "usr/local/bin/sgid", 02711);
  fs::create_directories(ov / "srv/shared");
  chmod(ov / "srv/shared", 02775);
  fs::create_directories(ov / "srv/drop");
  chmod(ov / "srv/drop", 01777);
  fs::create_directories(ov / "var/lib/acc-empty");
  chmod(ov / "var/lib/acc-empty", 0750);
  fs::create_directories(ov / "tmp");  // exists in the image as 1777: stays so
  chmod(ov / "tmp", 0755);
  write_file(ov / "lib/acc.conf", "via the image's /lib link\n");
  write_file(ov / "etc/acc/node.txt.tmpl", "node={{node}} host={{ hostname }} role={{role}} profile={{profile}}\n");
  chmod(ov / "etc/acc/node.txt.tmpl", 0640);
  fs::create_hard_link(ov / "etc/acc/node.txt.tmpl", ov / "etc/acc/node-again.txt.tmpl");
  // A second overlay replaces what the first wrote.
  fs::path second = dir / "second";
  write_file(second / "etc/acc/hello.txt", "replaced\n");

  std::vector<std::string> changes;
  {
    auto rootfs = open_root(image);
    changes = install_overlays(rootfs, {ov, second}, values, fixed_time, "/boot/firmware");
    rootfs.close();
  }
  require_clean(image);
  CHECK(std::find(changes.begin(), changes.end(), "/etc/acc/hostname-link -> /etc/hostname") != changes.end());
  CHECK(std::find(changes.begin(), changes.end(), "/var/lib/acc-empty/ (empty directory)") != changes.end());

  auto rootfs = open_root(image, Ext4Access::read_only);
  // The image's own /etc/hostname is untouched; the links are where the overlay put them, as written.
  CHECK(rootfs.status("/etc/hostname").type == Ext4FileType::regular);
  CHECK(rootfs.read_file("/etc/hostname") == "raspberrypi\n");
  auto link_of = [&](const std::string& path) {
    INFO(path);
    REQUIRE(rootfs.status(path).type == Ext4FileType::symlink);
    CHECK(rootfs.status(path).permissions == 0777);
    return rootfs.read_symlink(path);
  };
  CHECK(link_of("/etc/acc/hostname-link") == "/etc/hostname");
  CHECK(link_of("/usr/local/share/acc/hello-link") == "../../../../etc/acc/hello.txt");
  CHECK(link_of("/etc/acc/dangling") == "/nonexistent/target");
  CHECK(link_of("/etc/acc/outside") == "../../../../../../outside-the-overlay");
  CHECK(link_of("/etc/acc/long-link") == long_target);
  CHECK(link_of("/etc/dir-link") == "../usr/local/share/acc");
  CHECK(link_of("/etc/acc/named.tmpl") == "hello.txt");

  // The second overlay's file replaced the first's name only; the hard link keeps the first content.
  CHECK(rootfs.read_file("/etc/acc/hello.txt") == "replaced\n");
  CHECK(rootfs.read_file("/usr/local/share/acc/hello-link") == "replaced\n");  // resolved in the image
  auto hard = rootfs.status("/usr/local/share/acc/hello-hard");
  CHECK(hard.type == Ext4FileType::regular);
  CHECK(rootfs.read_file("/usr/local/share/acc/hello-hard") == "hello\n");
  CHECK(hard.link_count == 1);

  auto node = rootfs.status("/etc/acc/node.txt");
  auto node_again = rootfs.status("/etc/acc/node-again.txt");
  CHECK(node.inode == node_again.inode);
  CHECK(node.link_count == 2);
  CHECK(node.permissions == 0640);
  CHECK(rootfs.read_file("/etc/acc/node.txt") == "node=n1 host=worker-1 role=agent profile=lab\n");
  CHECK_FALSE(rootfs.exists("/etc/acc/node.txt.tmpl"));

  auto mode_of = [&](const std::string& path, Ext4FileType type) {
    auto st = rootfs.status(path);
    INFO(path);
    CHECK(st.type == type);
    CHECK(st.uid == 0);
    CHECK(st.gid == 0);
    CHECK(st.mtime.seconds == fixed_time);
    return st.permissions;
  };
  CHECK(mode_of("/usr/local/bin/suid", Ext4FileType::regular) == 04755);
  CHECK(mode_of("/usr/local/bin/sgid", Ext4FileType::regular) == 02711);
  CHECK(mode_of("/srv/shared", Ext4FileType::directory) == 02775);
  CHECK(mode_of("/srv/drop", Ext4FileType::directory) == 01777);
  CHECK(mode_of("/var/lib/acc-empty", Ext4FileType::directory) == 0750);
  CHECK(rootfs.list_directory("/var/lib/acc-empty").empty());
  CHECK(rootfs.status("/tmp").permissions == 01777);
  CHECK(rootfs.status("/lib").type == Ext4FileType::symlink);
  CHECK(rootfs.read_file("/usr/lib/acc.conf") == "via the image's /lib link\n");
}

TEST_CASE("an overlay reaching under the boot mount is refused before anything is written", "[overlay][ext4]") {
  TempDir dir;
  auto image = make_root_image(dir);
  fs::path ov = dir / "ov";
  write_file(ov / "etc/first.txt", "x");
  write_file(ov / "boot/firmware/config.txt", "dtparam=x\n");
  {
    auto rootfs = open_root(image);
    CHECK_THROWS_WITH(install_overlays(rootfs, {ov}, values, fixed_time, "/boot/firmware"),
                      Contains("boot/firmware/config.txt: the node mounts its FAT boot partition"));
    CHECK_FALSE(rootfs.exists("/etc/first.txt"));
    rootfs.close();
  }
  require_clean(image);
}

TEST_CASE("overlay space counts a sparse file's data, not its length", "[overlay]") {
  // A 300 MiB `truncate` file needs no data blocks in the image (holes stay holes); counting its
  // length refused grow_root: false builds and grew the root by 300 MiB.
  TempDir dir;
  fs::path ov = dir / "ov";
  write_file(ov / "opt/small", std::string(10000, 'x'));
  { std::ofstream create(ov / "opt/sparse"); }
  fs::resize_file(ov / "opt/sparse", 300u << 20);
  std::uint64_t needed = aggrik8s::builder::overlay_space_needed({ov});
  CHECK(needed < (1u << 20));
  CHECK(needed >= 10000);
}

TEST_CASE("an overlay reaching under the boot mount through the image's links is refused", "[overlay][ext4]") {
  // One overlay holds opt/esc -> /boot/firmware (or ../boot/firmware), the next opt/esc/extra.txt:
  // the file landed in the root filesystem's /boot/firmware, hidden under the FAT mount on the node.
  for (const std::string link : {"/boot/firmware", "../boot/firmware", "/../../boot/./firmware"}) {
    INFO(link);
    TempDir dir;
    auto image = make_root_image(dir);
    fs::path first = dir / "first", second = dir / "second";
    symlink(link, first / "opt/esc");
    write_file(second / "etc/ok.txt", "x");
    write_file(second / "opt/esc/extra.txt", "dtparam=foo\n");
    {
      auto rootfs = open_root(image);
      CHECK_THROWS_WITH(install_overlays(rootfs, {first, second}, values, fixed_time, "/boot/firmware"),
                        Contains("opt/esc/extra.txt would land in /boot/firmware/extra.txt through the image's "
                                 "symbolic links"));
      CHECK_FALSE(rootfs.exists("/boot/firmware/extra.txt"));
      CHECK_FALSE(rootfs.exists("/etc/ok.txt"));  // the refused overlay wrote nothing
      rootfs.close();
    }
    require_clean(image);
  }
  // A link elsewhere (merged /usr's lib -> usr/lib) still carries overlay files.
  TempDir dir;
  auto image = make_root_image(dir);
  fs::path ov = dir / "ov";
  write_file(ov / "lib/x.conf", "x");
  auto rootfs = open_root(image);
  install_overlays(rootfs, {ov}, values, fixed_time, "/boot/firmware");
  CHECK(rootfs.read_file("/usr/lib/x.conf") == "x");
  rootfs.close();
}

TEST_CASE("an overlay directory where the image has a file is refused naming the overlay entry", "[overlay][ext4]") {
  TempDir dir;
  auto image = make_root_image(dir);
  fs::path ov = dir / "ov";
  fs::create_directories(ov / "etc/hosts.d");
  write_file(ov / "etc/hosts.d/x", "x");
  {
    auto rootfs = open_root(image);
    rootfs.write_file("/etc/hosts.d", "a file in the base image", {0644, 0, 0, std::nullopt});
    CHECK_THROWS_WITH(install_overlays(rootfs, {ov}, values, fixed_time, "/boot/firmware"),
                      Contains("overlay " + ov.string() + ": " + (ov / "etc/hosts.d").string() +
                               " cannot be written to /etc/hosts.d in the image: ") &&
                          Contains("exists and is not a directory"));
    rootfs.close();
  }
}
