// The RAM root's formats from a real ext4 image: disk/filesystem_tree's walk, disk/squashfs_writer
// and disk/tar_writer, judged by tools that know nothing of our code — unsquashfs (squashfs-tools),
// rdsquashfs (squashfs-tools-ng), the kernel's squashfs (a loop mount, when running as root), GNU tar
// and busybox tar — and compared inode by inode with what Ext4Filesystem reads from the image.
//
// The image is made rootless: mke2fs, then Ext4Filesystem for files, directories, symlinks, hard
// links, owners and times, then debugfs for what Ext4Filesystem does not create (device nodes, a
// fifo, extended attributes).
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/sha256.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/filesystem_tree.hpp"
#include "disk/squashfs_writer.hpp"
#include "disk/tar_writer.hpp"
#include "tests/test_support.hpp"

using aggrik8s::Ext4Access;
using aggrik8s::Ext4Filesystem;
using aggrik8s::Ext4FileType;
using aggrik8s::test::random_bytes;
using aggrik8s::test::run;
using aggrik8s::test::TempDir;

namespace {

constexpr std::uint64_t image_bytes = 96ULL << 20;
constexpr std::int64_t build_time = 1700000000;
constexpr std::uint64_t sparse_bytes = 64ULL << 20;
const std::string long_target(100, 'x');
const std::string non_ascii_name = "caf\xc3\xa9";
// security.capability for cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
const std::string ping_capability("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
// system.posix_acl_access in the VFS format: version 2, user::rw-, user 1000 r--, group::r--, mask r--, other::r--.
const std::string access_acl = [] {
  std::string acl("\x02\x00\x00\x00", 4);
  auto entry = [&](std::uint16_t tag, std::uint16_t perm, std::uint32_t id) {
    acl += std::string{static_cast<char>(tag & 0xff), static_cast<char>(tag >> 8), static_cast<char>(perm & 0xff),
                       static_cast<char>(perm >> 8)};
    for (int i = 0; i < 4; ++i) acl += static_cast<char>((id >> (8 * i)) & 0xff);
  };
  entry(0x01, 6, 0xffffffff);
  entry(0x02, 4, 1000);
  entry(0x04, 4, 0xffffffff);
  entry(0x10, 4, 0xffffffff);
  entry(0x20, 4, 0xffffffff);
  return acl;
}();

// Options with the fields a test sets; the rest default.
struct SquashfsOptionsFor {
  std::string compressor = "zstd";
  std::optional<std::int64_t> fixed_time = build_time;
  unsigned threads = 0;
  std::uint32_t block_size = 128 * 1024;
  bool drop_unsupported_xattrs = false;
};
aggrik8s::SquashfsWriteOptions squashfs_options(const SquashfsOptionsFor& wanted) {
  aggrik8s::SquashfsWriteOptions options;
  options.compressor = wanted.compressor;
  options.fixed_time = wanted.fixed_time;
  options.threads = wanted.threads;
  options.block_size = wanted.block_size;
  options.drop_unsupported_xattrs = wanted.drop_unsupported_xattrs;
  return options;
}

std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

aggrik8s::test::CommandResult must_run(const std::string& command) {
  auto result = run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result;
}

// The image every test starts from; with_acl adds /acl carrying a POSIX ACL, which squashfs cannot hold.
std::filesystem::path make_root_image(const TempDir& dir, bool with_acl = false) {
  auto image = dir / "root.ext4";
  aggrik8s::test::write_file(image, "");
  std::filesystem::resize_file(image, image_bytes);
  aggrik8s::Ext4CreateOptions create_options;
  create_options.fixed_time = build_time;
  create_options.uuid = "6a1c1b3e-5f3e-4e2a-9d39-0f1e2d3c4b5a";
  aggrik8s::create_ext4_filesystem(image, 0, image_bytes, create_options);
  {
    auto host_sparse = dir / "sparse.host";
    aggrik8s::test::write_file(host_sparse, "START");
    std::filesystem::resize_file(host_sparse, sparse_bytes);
    must_run("printf END | dd of=" + quoted(host_sparse) + " bs=1 seek=" + std::to_string(sparse_bytes - 3) +
             " conv=notrunc status=none");
    auto fs = Ext4Filesystem::open(image, 0, image_bytes, Ext4Access::read_write, build_time);
    fs.create_directories("/a/b/c");
    fs.create_directories("/empty");
    fs.create_directories("/sticky", {01777, 0, 0, {}});
    fs.write_file("/a/b/c/file.txt", std::string("hello\n"), {0644, 0, 0, {}});
    fs.write_file("/zero", std::string(), {0644, 0, 0, {}});
    fs.copy_file_from_host(host_sparse, "/sparse", {0640, 0, 0, {}});
    fs.write_file("/suid", random_bytes(40000, 7), {04755, 0, 0, {}});
    fs.create_symlink("/abs", "/etc/passwd");
    fs.create_symlink("/rel", "../a/b");
    fs.create_symlink("/dangling", "nowhere");
    fs.create_symlink("/long", long_target);
    fs.write_file("/h1", std::string("linked\n"), {0600, 5, 6, {}});
    fs.create_hard_link("/a/h2", "/h1");
    fs.create_hard_link("/a/b/h3", "/h1");
    fs.write_file("/owned", std::string("owned\n"), {0644, 1000, 42, aggrik8s::Ext4Timestamp{1600000000, 123456789}});
    fs.write_file("/" + non_ascii_name, std::string("u\n"), {0644, 0, 0, {}});
    fs.write_file("/ping", random_bytes(3000, 9), {0755, 0, 0, {}});
    if (with_acl) fs.write_file("/acl", std::string("acl\n"), {0644, 0, 0, {}});
    fs.close();
  }
  aggrik8s::test::write_file(dir / "cap.bin", ping_capability);
  aggrik8s::test::write_file(dir / "acl.bin", access_acl);
  // debugfs takes names relative to its current directory literally (a "/" in a name is kept).
  std::string commands =
      "cd /\nmknod fifo p\nmknod null c 1 3\nmknod blk b 8 1\nmknod bigdev c 259 300\n"
      "ea_set ping user.comment \"hi there\"\nea_set -f " + (dir / "cap.bin").string() + " ping security.capability\n";
  if (with_acl) commands += "ea_set -f " + (dir / "acl.bin").string() + " acl system.posix_acl_access\n";
  aggrik8s::test::write_file(dir / "debugfs.cmd", commands);
  must_run("E2FSPROGS_FAKE_TIME=" + std::to_string(build_time) + " debugfs -w -f " + quoted(dir / "debugfs.cmd") + " " +
           quoted(image) + " 2>&1");
  must_run("e2fsck -fn " + quoted(image));
  return image;
}

Ext4Filesystem open_root(const std::filesystem::path& image) {
  return Ext4Filesystem::open(image, 0, image_bytes, Ext4Access::read_only);
}

std::map<std::string, std::string> host_xattrs(const std::filesystem::path& path) {
  std::map<std::string, std::string> result;
  std::string names(4096, '\0');
  ssize_t length = ::llistxattr(path.c_str(), names.data(), names.size());
  REQUIRE(length >= 0);
  for (std::size_t start = 0; start < static_cast<std::size_t>(length);) {
    std::string name(names.c_str() + start);
    start += name.size() + 1;
    std::string value(4096, '\0');
    ssize_t size = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    REQUIRE(size >= 0);
    value.resize(static_cast<std::size_t>(size));
    result[name] = value;
  }
  return result;
}

struct TreeComparison {
  bool xattrs = true;
  bool mtimes = true;
  // busybox tar sets a directory's mtime before unpacking into it, which then changes it.
  bool directory_mtimes = true;
  std::set<std::string> absent;  // ext4 paths expected not to be in the host tree
};

// Every ext4 path (but the absent ones) against the host tree at root: type, mode, owner, mtime in
// seconds, size, content, symlink target, device number, xattrs; names of one ext4 inode share one
// host inode. Returns the number of paths compared.
std::size_t compare_with_ext4(const Ext4Filesystem& fs, const std::filesystem::path& root, const TreeComparison& how) {
  std::size_t compared = 0;
  std::map<std::uint32_t, ino_t> host_inode_of;
  std::function<void(const std::string&)> visit = [&](const std::string& path) {
    if (how.absent.contains(path)) {
      INFO(path);
      struct stat ignored {};
      CHECK(::lstat((root.string() + path).c_str(), &ignored) != 0);
      return;
    }
    auto status = fs.status(path);
    std::filesystem::path host = path == "/" ? root : std::filesystem::path(root.string() + path);
    struct stat st {};
    INFO("path " << path);
    REQUIRE(::lstat(host.c_str(), &st) == 0);
    ++compared;
    CHECK((st.st_mode & 07777) == status.permissions);
    CHECK(st.st_uid == status.uid);
    CHECK(st.st_gid == status.gid);
    if (how.mtimes && status.type != Ext4FileType::symlink &&
        (how.directory_mtimes || status.type != Ext4FileType::directory))
      CHECK(st.st_mtim.tv_sec == status.mtime.seconds);
    if (how.xattrs) {
      std::map<std::string, std::string> expected;
      for (const auto& attribute : fs.extended_attributes(path)) expected[attribute.name] = attribute.value;
      CHECK(host_xattrs(host) == expected);
    }
    switch (status.type) {
      case Ext4FileType::directory:
        REQUIRE(S_ISDIR(st.st_mode));
        for (const auto& entry : fs.list_directory(path)) visit((path == "/" ? "" : path) + "/" + entry.name);
        break;
      case Ext4FileType::regular: {
        REQUIRE(S_ISREG(st.st_mode));
        CHECK(static_cast<std::uint64_t>(st.st_size) == status.size);
        CHECK(aggrik8s::test::read_file(host) == fs.read_file(path));
        auto known = host_inode_of.emplace(status.inode, st.st_ino).first;
        CHECK(known->second == st.st_ino);
        CHECK(st.st_nlink == status.link_count);
        break;
      }
      case Ext4FileType::symlink:
        REQUIRE(S_ISLNK(st.st_mode));
        CHECK(std::filesystem::read_symlink(host).string() == fs.read_symlink(path));
        break;
      case Ext4FileType::character_device:
      case Ext4FileType::block_device:
        REQUIRE((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)));
        CHECK(S_ISCHR(st.st_mode) == (status.type == Ext4FileType::character_device));
        CHECK(major(st.st_rdev) == status.device_major);
        CHECK(minor(st.st_rdev) == status.device_minor);
        break;
      case Ext4FileType::fifo: CHECK(S_ISFIFO(st.st_mode)); break;
      case Ext4FileType::socket: CHECK(S_ISSOCK(st.st_mode)); break;
    }
  };
  visit("/");
  return compared;
}

// A lazy unmount on the way out, whatever the test did.
struct LoopMount {
  std::filesystem::path point;
  bool mounted = false;
  LoopMount(const std::filesystem::path& image, const std::filesystem::path& at) : point(at) {
    std::filesystem::create_directories(at);
    mounted = run("mount -t squashfs -o loop,ro " + quoted(image) + " " + quoted(at) + " 2>&1").exit_code == 0;
  }
  ~LoopMount() {
    if (mounted) run("umount -l " + quoted(point));
  }
};

std::map<std::string, std::string> unsquashfs_listing(const std::filesystem::path& image) {
  // "-rw-r--r-- 1000/42 6 2023-... squashfs-root/owned" -> {"/owned": "-rw-r--r-- 1000/42 6"}
  std::map<std::string, std::string> lines;
  std::istringstream in(must_run("unsquashfs -lln " + quoted(image)).output);
  for (std::string line; std::getline(in, line);) {
    auto root = line.find(" squashfs-root");
    if (root == std::string::npos) continue;
    std::string path = line.substr(root + 14);
    auto arrow = path.find(" -> ");
    if (arrow != std::string::npos) path = path.substr(0, arrow);
    std::string fields = line.substr(0, root);
    // Drop the date and time (the last two fields).
    for (int i = 0; i < 2; ++i) fields = fields.substr(0, fields.find_last_not_of(' ', fields.rfind(' ')) + 1);
    std::string squeezed;
    for (char c : fields) {
      if (c != ' ' || (!squeezed.empty() && squeezed.back() != ' ')) squeezed += c;
    }
    lines[path.empty() ? "/" : path] = squeezed;
  }
  return lines;
}

std::string rdsquashfs(const std::filesystem::path& image, const std::string& arguments) {
  return must_run("rdsquashfs " + arguments + " " + quoted(image)).output;
}

std::uintmax_t count_files(const std::filesystem::path& dir) {
  return static_cast<std::uintmax_t>(std::distance(std::filesystem::directory_iterator(dir), {}));
}

}  // namespace

TEST_CASE("Ext4Filesystem reads what a tree walk needs: xattrs, device numbers, data with holes", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir, true);
  auto fs = open_root(image);

  auto ping = fs.extended_attributes("/ping");
  REQUIRE(ping.size() == 2);
  CHECK(ping[0] == aggrik8s::Ext4ExtendedAttribute{"security.capability", ping_capability});
  CHECK(ping[1] == aggrik8s::Ext4ExtendedAttribute{"user.comment", "hi there"});
  // libext2fs stores ACLs in ext4's compact form and gives them back in setxattr's format.
  auto acl = fs.extended_attributes("/acl");
  REQUIRE(acl.size() == 1);
  // ids of the entries without one as the kernel gives them (0xffffffff), not as libext2fs does (0).
  CHECK(acl[0] == aggrik8s::Ext4ExtendedAttribute{"system.posix_acl_access", access_acl});
  CHECK(fs.extended_attributes("/zero").empty());
  CHECK(fs.inode_extended_attributes(fs.status("/ping").inode) == ping);

  auto null_device = fs.status("/null");
  CHECK(null_device.type == Ext4FileType::character_device);
  CHECK((null_device.device_major == 1 && null_device.device_minor == 3));
  auto big_device = fs.status("/bigdev");  // beyond 8:8, so ext4's new encoding
  CHECK((big_device.device_major == 259 && big_device.device_minor == 300));
  auto block_device = fs.inode_status(fs.status("/blk").inode);
  CHECK((block_device.type == Ext4FileType::block_device && block_device.device_major == 8 && block_device.device_minor == 1));
  CHECK(fs.status("/owned").mtime == aggrik8s::Ext4Timestamp{1600000000, 123456789});

  auto extents = fs.file_data_extents("/sparse");
  REQUIRE(extents.size() == 2);
  CHECK(extents[0].offset == 0);
  CHECK(extents[1].offset + extents[1].length == sparse_bytes);
  CHECK(extents[0].length + extents[1].length <= 2 * 4096);
  std::uint64_t passed = 0;
  std::string head;
  std::string tail;
  fs.read_file_data("/sparse", [&](std::uint64_t offset, std::span<const std::byte> data) {
    passed += data.size();
    std::string text(reinterpret_cast<const char*>(data.data()), data.size());
    if (offset == 0) head = text.substr(0, 5);
    if (offset + data.size() == sparse_bytes) tail = text.substr(text.size() - 3);
  });
  CHECK(passed <= 2 * 4096);
  CHECK(head == "START");
  CHECK(tail == "END");

  // A large file comes in pieces of at most 4 MiB, in order, and adds up to its content.
  std::string suid;
  fs.read_inode_data(fs.status("/suid").inode, [&](std::uint64_t offset, std::span<const std::byte> data) {
    CHECK(offset == suid.size());
    suid.append(reinterpret_cast<const char*>(data.data()), data.size());
  });
  CHECK(suid == random_bytes(40000, 7));
  CHECK(fs.inode_symlink_target(fs.status("/long").inode) == long_target);
  CHECK_THROWS_WITH(fs.read_file_data("/a", [](std::uint64_t, std::span<const std::byte>) {}),
                    Catch::Contains("/a") && Catch::Contains("not a regular file"));
}

TEST_CASE("walk_ext4_tree: byte order, directories first, exclusions and replacements", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir);
  auto fs = open_root(image);

  std::vector<std::string> paths;
  walk_ext4_tree(fs, {}, [&](const aggrik8s::FilesystemTreeEntry& entry) { paths.push_back(entry.path); });
  const std::vector<std::string> expected = {"/", "/a", "/a/b", "/a/b/c", "/a/b/c/file.txt", "/a/b/h3", "/a/h2", "/abs",
                                             "/bigdev", "/blk", "/" + non_ascii_name, "/dangling", "/empty", "/fifo", "/h1",
                                             "/long", "/lost+found", "/null", "/owned", "/ping", "/rel", "/sparse",
                                             "/sticky", "/suid", "/zero"};
  CHECK(paths == expected);

  aggrik8s::FilesystemTreeSelection selection;
  selection.exclude = {"/a/b", "/lost+found/", "/does/not/exist"};
  selection.replacements["/h1"] = {"new\n", 0600, 0, 0, {build_time, 0}};
  selection.replacements["/a/added"] = {"added\n", 0640, 7, 8, {build_time, 0}};
  selection.replacements["/zzz"] = {"", 0644, 0, 0, {build_time, 0}};
  selection.include = [](const aggrik8s::FilesystemTreeEntry& entry) { return entry.path != "/a"; };
  std::map<std::string, aggrik8s::FilesystemTreeEntry> seen;
  walk_ext4_tree(fs, selection, [&](const aggrik8s::FilesystemTreeEntry& entry) { seen.emplace(entry.path, entry); });
  CHECK(!seen.contains("/a"));  // left out by include, its contents still walked
  CHECK(seen.contains("/a/h2"));
  CHECK(!seen.contains("/a/b"));
  CHECK(!seen.contains("/a/b/h3"));
  CHECK(!seen.contains("/lost+found"));
  REQUIRE(seen.contains("/a/added"));
  CHECK(seen.at("/a/added").inode == 0);
  CHECK(seen.at("/a/added").uid == 7);
  REQUIRE(seen.contains("/h1"));
  CHECK(seen.at("/h1").inode == 0);
  CHECK(seen.at("/a/h2").inode != 0);  // the other name keeps the original
  CHECK(seen.contains("/zzz"));

  auto walk = [&](const aggrik8s::FilesystemTreeSelection& s) {
    walk_ext4_tree(fs, s, [](const aggrik8s::FilesystemTreeEntry&) {});
  };
  aggrik8s::FilesystemTreeSelection bad;
  bad.replacements["/a/b"] = {};
  CHECK_THROWS_WITH(walk(bad), Catch::Contains("/a/b") && Catch::Contains("is a directory"));
  bad = {};
  bad.replacements["/missing/file"] = {};
  CHECK_THROWS_WITH(walk(bad), Catch::Contains("/missing/file") && Catch::Contains("/missing is not in the tree"));
  bad = {};
  bad.replacements["/abs/file"] = {};  // a symlink is not a directory
  CHECK_THROWS_WITH(walk(bad), Catch::Contains("/abs/file"));
  bad = {};
  bad.exclude = {"/a"};
  bad.replacements["/a/h2"] = {};
  CHECK_THROWS_WITH(walk(bad), Catch::Contains("/a/h2") && Catch::Contains("excluded"));
  bad = {};
  bad.exclude = {"/"};
  CHECK_THROWS_WITH(walk(bad), Catch::Contains("root directory"));
  bad = {};
  bad.exclude = {"relative"};
  CHECK_THROWS_WITH(walk(bad), Catch::Contains("'relative' is not an absolute path"));
}

TEST_CASE("write_squashfs keeps owners, modes, xattrs, links, devices and holes (unsquashfs, rdsquashfs)", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir);
  auto fs = open_root(image);
  auto output = dir / "root.sqfs";
  auto result = aggrik8s::write_squashfs(fs, output, squashfs_options({}));
  CHECK(result.bytes_written == std::filesystem::file_size(output));
  CHECK(result.bytes_written % 4096 == 0);
  CHECK(result.sha256 == aggrik8s::Sha256::of_file(output).hex());
  CHECK(result.regular_files == 8);  // h1, h2 and h3 are one
  CHECK(result.hard_links == 2);
  CHECK(result.directories == 7);
  CHECK(result.symlinks == 4);
  CHECK(result.special_files == 4);
  CHECK(!std::filesystem::exists(dir / "root.sqfs.partial"));
  // 64 MiB of holes cost nothing: the image is far smaller than the sparse file.
  CHECK(result.bytes_written < 256 * 1024);

  auto listing = unsquashfs_listing(output);
  CHECK(listing.at("/owned") == "-rw-r--r-- 1000/42 6");
  CHECK(listing.at("/suid") == "-rwsr-xr-x 0/0 40000");
  CHECK(listing.at("/sticky") == "drwxrwxrwt 0/0 3");
  CHECK(listing.at("/h1") == "-rw------- 5/6 7");
  CHECK(listing.at("/null") == "c--------- 0/0 1, 3");  // debugfs mknod gives mode 0
  // unsquashfs 4.5.1 lists a device beyond 8:8 bits wrongly ("4355, 44", as it does for mksquashfs's
  // image of the same node); rdsquashfs and the kernel decode Linux's encoding.
  CHECK(rdsquashfs(output, "-s /bigdev").find("Device number: 259:300") != std::string::npos);
  CHECK(listing.at("/blk") == "b--------- 0/0 8, 1");
  CHECK(listing.at("/fifo").starts_with("p--------- 0/0"));
  CHECK(listing.at("/sparse") == "-rw-r----- 0/0 67108864");
  CHECK(listing.at("/zero") == "-rw-r--r-- 0/0 0");
  CHECK(listing.contains("/" + non_ascii_name));
  CHECK(listing.contains("/empty"));
  CHECK(must_run("unsquashfs -lln " + quoted(output) + " /long").output.find("-> " + long_target) != std::string::npos);
  CHECK(must_run("unsquashfs -lln " + quoted(output) + " /rel").output.find("-> ../a/b") != std::string::npos);

  auto owned = rdsquashfs(output, "-s /owned");
  CHECK(owned.find("(1600000000)") != std::string::npos);  // whole seconds of ext4's mtime
  auto h1 = rdsquashfs(output, "-s /h1");
  CHECK(h1.find("Hard link count: 3") != std::string::npos);
  auto inode_number = [&](const std::string& path) {
    auto text = rdsquashfs(output, "-s " + path);
    return text.substr(text.find("Inode number:"), text.find('\n', text.find("Inode number:")) - text.find("Inode number:"));
  };
  CHECK(inode_number("/a/h2") == inode_number("/h1"));
  CHECK(inode_number("/a/b/h3") == inode_number("/h1"));
  auto ping_xattrs = rdsquashfs(output, "-x /ping");
  CHECK(ping_xattrs.find("security.capability") != std::string::npos);
  CHECK(ping_xattrs.find("user.comment=hi there") != std::string::npos);
  CHECK(rdsquashfs(output, "-c /a/b/c/file.txt") == "hello\n");
  auto sparse = rdsquashfs(output, "-c /sparse");
  REQUIRE(sparse.size() == sparse_bytes);
  CHECK(sparse.substr(0, 5) == "START");
  CHECK(sparse.substr(sparse.size() - 3) == "END");
  CHECK(sparse.find_first_not_of('\0', 5) == sparse.size() - 3);

  if (::geteuid() == 0) {
    // As root: unpacked by unsquashfs (owners, devices, xattrs set for real) and read by the kernel.
    auto unpacked = dir / "unpacked";
    must_run("unsquashfs -q -n -d " + quoted(unpacked) + " " + quoted(output));
    CHECK(compare_with_ext4(fs, unpacked, TreeComparison()) == 25);
    LoopMount mount(output, dir / "mnt");
    if (mount.mounted) {
      CHECK(compare_with_ext4(fs, mount.point, TreeComparison()) == 25);
    } else {
      WARN("no loop mount here; the kernel's reading of the image was not checked");
    }
  } else {
    WARN("not root: the unpacked tree's owners, devices and xattrs were not compared");
  }
}

TEST_CASE("write_squashfs with every compressor, and the same bytes twice", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir);
  auto fs = open_root(image);
  for (const std::string& compressor : aggrik8s::squashfs_compressor_names()) {
    INFO(compressor);
    auto first = dir / (compressor + "-1.sqfs");
    auto second = dir / (compressor + "-2.sqfs");
    auto a = aggrik8s::write_squashfs(fs, first, squashfs_options({.compressor = compressor, .threads = 1}));
    auto b = aggrik8s::write_squashfs(fs, second, squashfs_options({.compressor = compressor, .threads = 3}));
    CHECK(a.sha256 == b.sha256);
    CHECK(aggrik8s::test::read_file(first) == aggrik8s::test::read_file(second));
    auto stat = must_run("unsquashfs -s " + quoted(first)).output;
    CHECK(stat.find("Compression " + compressor) != std::string::npos);
    CHECK(rdsquashfs(first, "-c /suid") == random_bytes(40000, 7));
    if (::geteuid() == 0) {
      // unsquashfs 4.5.1 cannot read libsquashfs's lz4 images ("failed to read id table block";
      // gensquashfs's own lz4 images neither); the kernel, the reader that matters, can.
      if (compressor != "lz4") {
        auto unpacked = dir / ("unpacked-" + compressor);
        must_run("unsquashfs -q -n -d " + quoted(unpacked) + " " + quoted(first));
        CHECK(compare_with_ext4(fs, unpacked, TreeComparison()) == 25);
      }
      LoopMount mount(first, dir / ("mnt-" + compressor));
      if (mount.mounted) CHECK(compare_with_ext4(fs, mount.point, TreeComparison()) == 25);
    }
    std::filesystem::remove(second);
  }
  // Without a fixed time the superblock takes the root directory's mtime, not the clock.
  auto c = aggrik8s::write_squashfs(fs, dir / "c.sqfs", squashfs_options({.fixed_time = std::nullopt}));
  auto d = aggrik8s::write_squashfs(fs, dir / "d.sqfs", squashfs_options({.fixed_time = std::nullopt, .threads = 1}));
  CHECK(c.sha256 == d.sha256);
  CHECK(rdsquashfs(dir / "c.sqfs", "-s /").size() > 0);
  CHECK_THROWS_WITH(aggrik8s::write_squashfs(fs, dir / "x.sqfs", squashfs_options({.compressor = "lzo"})),
                    Catch::Contains("'lzo' is not one of zstd, xz, gzip, lz4"));
  CHECK_THROWS_WITH(aggrik8s::write_squashfs(fs, dir / "x.sqfs", squashfs_options({.block_size = 100000})),
                    Catch::Contains("block size 100000"));
  CHECK(!std::filesystem::exists(dir / "x.sqfs"));
  CHECK(!std::filesystem::exists(dir / "x.sqfs.partial"));
}

TEST_CASE("write_squashfs applies exclusions and replacements", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir);
  auto fs = open_root(image);
  aggrik8s::SquashfsWriteOptions options = squashfs_options({});
  options.selection.exclude = {"/a/b", "/lost+found"};
  options.selection.replacements["/h1"] = {"replaced\n", 0644, 0, 0, {build_time, 0}};
  options.selection.replacements["/etc-fstab"] = {"proc /proc proc defaults 0 0\n", 0644, 0, 0, {build_time, 0}};
  options.selection.include = [](const aggrik8s::FilesystemTreeEntry& entry) { return entry.path != "/empty"; };
  aggrik8s::SquashfsWriteProgress last_progress;
  options.progress = [&](const aggrik8s::SquashfsWriteProgress& progress) { last_progress = progress; };
  auto output = dir / "edited.sqfs";
  auto result = aggrik8s::write_squashfs(fs, output, options);
  CHECK(last_progress.files_done == result.regular_files);
  CHECK(last_progress.file_data_bytes_done == result.file_data_bytes);
  auto listing = unsquashfs_listing(output);
  CHECK(!listing.contains("/a/b"));
  CHECK(!listing.contains("/a/b/h3"));
  CHECK(!listing.contains("/lost+found"));
  CHECK(!listing.contains("/empty"));
  CHECK(listing.contains("/a/h2"));
  CHECK(rdsquashfs(output, "-c /h1") == "replaced\n");
  CHECK(rdsquashfs(output, "-c /a/h2") == "linked\n");  // the other name keeps the ext4 file
  CHECK(rdsquashfs(output, "-s /a/h2").find("Inode type: file") != std::string::npos);  // basic: one link
  CHECK(rdsquashfs(output, "-c /etc-fstab") == "proc /proc proc defaults 0 0\n");
  CHECK(result.hard_links == 0);
  // The ext4 image itself is unchanged.
  CHECK(fs.read_file("/h1") == "linked\n");
  CHECK(!fs.exists("/etc-fstab"));
}

TEST_CASE("squashfs_image builds a few given files in memory: owners, modes, times, data, level (unsquashfs, rdsquashfs)", "[integration][disk]") {
  // The shape of a Talos embedded-config extension: nested directories and one 0400 file.
  TempDir dir;
  const std::int64_t when = 1767225600;
  auto entry = [&](std::string path, Ext4FileType type, std::uint16_t permissions) {
    aggrik8s::FilesystemTreeEntry e;
    e.path = std::move(path);
    e.type = type;
    e.permissions = permissions;
    e.mtime.seconds = when;
    return e;
  };
  const std::string content = random_bytes(200000, 11);  // two blocks and a fragment
  std::vector<aggrik8s::FilesystemTreeEntry> tree{entry("/", Ext4FileType::directory, 0755),
                                                  entry("/usr", Ext4FileType::directory, 0755),
                                                  entry("/usr/local", Ext4FileType::directory, 0750)};
  auto file = entry("/usr/local/config.yaml", Ext4FileType::regular, 0400);
  file.uid = 7;
  file.gid = 9;
  file.size = content.size();
  file.read_data = [&content](const aggrik8s::Ext4FileDataConsumer& consume) {
    consume(0, std::as_bytes(std::span(content.data(), 1000)));
    consume(1000, std::as_bytes(std::span(content.data() + 1000, content.size() - 1000)));
  };
  tree.push_back(file);
  aggrik8s::SquashfsWriteOptions options;
  options.fixed_time = when;
  options.level = 18;
  options.threads = 1;
  const std::string bytes = aggrik8s::squashfs_image(tree, options);
  REQUIRE(bytes.size() % 4096 == 0);
  CHECK(aggrik8s::squashfs_image(tree, options) == bytes);
  auto image = dir / "in-memory.sqfs";
  aggrik8s::test::write_file(image, bytes);
  auto listing = unsquashfs_listing(image);
  CHECK(listing["/"].starts_with("drwxr-xr-x 0/0 "));
  CHECK(listing["/usr/local"].starts_with("drwxr-x--- 0/0 "));
  CHECK(listing["/usr/local/config.yaml"] == "-r-------- 7/9 200000");
  CHECK(rdsquashfs(image, "-c /usr/local/config.yaml") == content);
  auto stat = must_run("TZ=UTC unsquashfs -s " + quoted(image)).output;  // its times are local
  CHECK(stat.find("Compression zstd") != std::string::npos);
  CHECK(stat.find("compression-level 18") != std::string::npos);
  CHECK(stat.find("Creation or last append time Thu Jan  1 00:00:00 2026") != std::string::npos);
  // The default level is not written into the image.
  options.level.reset();
  aggrik8s::test::write_file(dir / "default.sqfs", aggrik8s::squashfs_image(tree, options));
  CHECK(must_run("unsquashfs -s " + quoted(dir / "default.sqfs")).output.find("compression-level") == std::string::npos);

  CHECK_THROWS_WITH(aggrik8s::squashfs_image({tree.begin() + 1, tree.end()}, options), Catch::Contains("must start with \"/\""));
  options.level = 99;
  CHECK_THROWS_WITH(aggrik8s::squashfs_image(tree, options), Catch::Contains("zstd compressor"));
}

TEST_CASE("write_squashfs leaves no file behind when it fails", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir, true);
  auto fs = open_root(image);

  SECTION("an ACL squashfs cannot hold is named, unless dropping is allowed") {
    CHECK_THROWS_WITH(aggrik8s::write_squashfs(fs, dir / "out.sqfs"),
                      Catch::Contains("/acl") && Catch::Contains("system.posix_acl_access"));
    CHECK(!std::filesystem::exists(dir / "out.sqfs.partial"));
    CHECK(!std::filesystem::exists(dir / "out.sqfs"));
    auto result = aggrik8s::write_squashfs(fs, dir / "out.sqfs", squashfs_options({.drop_unsupported_xattrs = true}));
    CHECK(result.dropped_xattrs == 1);
    CHECK(rdsquashfs(dir / "out.sqfs", "-c /acl") == "acl\n");
  }
  SECTION("an output directory that does not exist") {
    CHECK_THROWS_WITH(aggrik8s::write_squashfs(fs, dir / "missing" / "out.sqfs"),
                      Catch::Contains((dir / "missing" / "out.sqfs.partial").string()));
    CHECK(!std::filesystem::exists(dir / "missing"));
  }
  SECTION("the disk fills up mid-write (a file size limit stands in for ENOSPC)") {
    auto output_dir = dir / "out";
    std::filesystem::create_directories(output_dir);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      std::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead of killing us
      rlimit limit{16 * 1024, 16 * 1024};
      ::setrlimit(RLIMIT_FSIZE, &limit);
      try {
        auto child_fs = open_root(image);
        aggrik8s::write_squashfs(child_fs, output_dir / "out.sqfs",
                                 squashfs_options({.compressor = "gzip", .block_size = 4096, .drop_unsupported_xattrs = true}));
        ::_exit(1);  // should not have fitted
      } catch (const aggrik8s::Error& e) {
        ::_exit(std::string(e.what()).find("out.sqfs.partial") != std::string::npos ? 0 : 2);
      } catch (...) {
        ::_exit(3);
      }
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(count_files(output_dir) == 0);
  }
}

TEST_CASE("write_tar: GNU tar and busybox tar unpack the same tree", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir);
  auto fs = open_root(image);
  aggrik8s::TarWriteOptions options;
  options.selection.exclude = {"/sparse"};  // holes are written as zeros: keep the test small
  auto output = dir / "layer.tar";
  auto result = aggrik8s::write_tar(fs, output, options);
  CHECK(result.bytes_written == std::filesystem::file_size(output));
  CHECK(result.hard_links == 2);
  CHECK(result.entries == 24);
  CHECK(!std::filesystem::exists(dir / "layer.tar.partial"));
  CHECK(aggrik8s::write_tar_to_memory(fs, options) == aggrik8s::test::read_file(output));
  aggrik8s::write_tar(fs, dir / "again.tar", options);
  CHECK(aggrik8s::test::read_file(dir / "again.tar") == aggrik8s::test::read_file(output));

  auto listing = must_run("tar --numeric-owner -tvf " + quoted(output) + " 2>&1").output;
  // GNU tar knows every pax keyword but hdrcharset, which says that the non-ASCII name's bytes are
  // kept as they are (libarchive cannot call them UTF-8 in the C locale); it warns and keeps them.
  CHECK(listing.find("Ignoring unknown extended header keyword 'LIBARCHIVE") == std::string::npos);
  CHECK(listing.find("-rw-r--r-- 1000/42") != std::string::npos);
  CHECK(listing.find("-rwsr-xr-x 0/0") != std::string::npos);
  CHECK(listing.find("./a/h2 link to ./a/b/h3") != std::string::npos);
  CHECK(listing.find("./h1 link to ./a/b/h3") != std::string::npos);
  CHECK(listing.find("./abs -> /etc/passwd") != std::string::npos);
  CHECK(listing.find("./long -> " + long_target) != std::string::npos);
  CHECK(listing.find("259,300") != std::string::npos);
  CHECK(listing.find("./" + non_ascii_name) != std::string::npos);

  TreeComparison without_sparse;
  without_sparse.absent = {"/sparse"};
  if (::geteuid() == 0) {
    auto gnu = dir / "gnu";
    std::filesystem::create_directories(gnu);
    must_run("tar --xattrs --xattrs-include='*' --numeric-owner -xpf " + quoted(output) + " -C " + quoted(gnu));
    CHECK(compare_with_ext4(fs, gnu, without_sparse) == 24);
    TreeComparison busybox_comparison = without_sparse;
    busybox_comparison.xattrs = false;
    busybox_comparison.directory_mtimes = false;
    auto busybox = dir / "busybox";
    std::filesystem::create_directories(busybox);
    must_run("busybox tar -xf " + quoted(output) + " -C " + quoted(busybox));
    // busybox tar keeps no extended attributes.
    CHECK(compare_with_ext4(fs, busybox, busybox_comparison) == 24);
  } else {
    WARN("not root: the unpacked trees were not compared");
  }
}

TEST_CASE("write_tar: a node layer without the shared directories, unpacked by busybox as a user", "[integration][disk]") {
  TempDir dir;
  auto image = make_root_image(dir);
  auto fs = open_root(image);
  aggrik8s::TarWriteOptions options;
  // What a node layer looks like: files only, the directories they go into already in the root.
  options.selection.include = [](const aggrik8s::FilesystemTreeEntry& entry) {
    return entry.type == Ext4FileType::regular || entry.type == Ext4FileType::symlink;
  };
  options.selection.exclude = {"/sparse"};
  auto output = dir / "node.tar";
  aggrik8s::write_tar(fs, output, options);
  auto listing = must_run("tar --numeric-owner -tvf " + quoted(output)).output;
  CHECK(listing.find("./a/b/c/file.txt") != std::string::npos);
  CHECK(listing.find(" ./a/\n") == std::string::npos);
  CHECK(listing.find("./null") == std::string::npos);

  auto target = dir / "as-user";
  std::filesystem::create_directories(target);
  std::string prefix;
  if (::geteuid() == 0) {
    must_run("chown 65534:65534 " + quoted(target) + " " + quoted(dir.path()) + " && chmod 0755 " + quoted(dir.path()));
    prefix = "setpriv --reuid 65534 --regid 65534 --clear-groups ";
  }
  must_run(prefix + "busybox tar -xf " + quoted(output) + " -C " + quoted(target) + " 2>&1");
  CHECK(aggrik8s::test::read_file(target / "a/b/c/file.txt") == "hello\n");
  CHECK(aggrik8s::test::read_file(target / "suid") == random_bytes(40000, 7));
  CHECK(std::filesystem::read_symlink(target / "long").string() == long_target);
  struct stat h1 {};
  struct stat h3 {};
  REQUIRE(::stat((target / "h1").c_str(), &h1) == 0);
  REQUIRE(::stat((target / "a/b/h3").c_str(), &h3) == 0);
  CHECK(h1.st_ino == h3.st_ino);
  CHECK(h1.st_nlink == 3);
  // As a user busybox drops set-id bits (GNU tar does too without -p); as root (the initramfs) it keeps
  // them, which the test above compares.
  REQUIRE(::stat((target / "suid").c_str(), &h1) == 0);
  CHECK((h1.st_mode & 0777) == 0755);
}
