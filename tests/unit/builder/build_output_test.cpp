#include "builder/build_output.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "builder/build_manifest.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;
namespace fs = std::filesystem;

namespace {

mode_t mode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

ino_t inode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

// The process umask for one scope: the modes under test depend on it.
class UmaskScope {
 public:
  explicit UmaskScope(mode_t mask) : previous_(::umask(mask)) {}
  ~UmaskScope() { ::umask(previous_); }

 private:
  mode_t previous_;
};

// Files this process writes may not grow past `bytes` (writes beyond fail with EFBIG instead of
// raising SIGXFSZ): a disk that fills up half-way through a write.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &previous_);
    previous_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit limited = previous_;
    limited.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limited);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &previous_);
    ::signal(SIGXFSZ, previous_handler_);
  }

 private:
  rlimit previous_{};
  sighandler_t previous_handler_ = SIG_DFL;
};

fs::path partial_of(const fs::path& path) { return fs::path(path.string() + ".partial"); }

}  // namespace

TEST_CASE("build output: a file is replaced by a rename of a new file, never rewritten in place", "[build_output]") {
  test::TempDir dir;
  fs::path target = dir / "manifest.json";
  test::write_file(target, "old\n");
  // A second name for the old file: rewriting in place would change what it reads too.
  fs::create_hard_link(target, dir / "old-name");
  ino_t old_inode = inode_of(target);

  write_text_file_atomically(target, "new\n", FileMode::exactly(0644));

  CHECK(test::read_file(target) == "new\n");
  CHECK(inode_of(target) != old_inode);
  CHECK(test::read_file(dir / "old-name") == "old\n");
  CHECK_FALSE(fs::exists(partial_of(target)));
}

TEST_CASE("build output: a write that fails half-way leaves the old file whole and no .partial", "[build_output]") {
  test::TempDir dir;
  fs::path target = dir / "SHA256SUMS";
  test::write_file(target, "the complete old list\n");
  std::string content(64 * 1024, 'x');
  {
    FileSizeLimit disk_full_after(4096);
    CHECK_THROWS_AS(write_text_file_atomically(target, content, FileMode::exactly(0644)), Error);
  }
  CHECK(test::read_file(target) == "the complete old list\n");
  CHECK_FALSE(fs::exists(partial_of(target)));
}

TEST_CASE("build output: a rename that fails removes the .partial and leaves the target as it was", "[build_output]") {
  test::TempDir dir;
  // A non-empty directory cannot be replaced by a file.
  fs::path target = dir / "manifest.json";
  fs::create_directories(target);
  test::write_file(target / "kept", "kept\n");
  CHECK_THROWS(write_text_file_atomically(target, "{}\n", FileMode::exactly(0644)));
  CHECK(fs::is_directory(target));
  CHECK(test::read_file(target / "kept") == "kept\n");
  CHECK_FALSE(fs::exists(partial_of(target)));
}

TEST_CASE("build output: exact modes ignore the umask, less_umask modes follow it", "[build_output]") {
  test::TempDir dir;
  {
    UmaskScope strict(077);
    write_text_file_atomically(dir / "public", "p\n", FileMode::exactly(0644));
    write_text_file_atomically(dir / "as-umask-allows", "u\n", FileMode::less_umask(0666));
    CHECK(mode_of(dir / "public") == 0644);
    CHECK(mode_of(dir / "as-umask-allows") == 0600);
  }
  {
    UmaskScope usual(022);
    write_text_file_atomically(dir / "as-umask-allows-022", "u\n", FileMode::less_umask(0666));
    CHECK(mode_of(dir / "as-umask-allows-022") == 0644);
  }
}

TEST_CASE("build output: a secret file is 0600 even over a more open file of the same name", "[build_output]") {
  test::TempDir dir;
  UmaskScope open_umask(0);
  fs::path config = dir / "config.yaml";
  test::write_file(config, "stale\n");
  fs::permissions(config, fs::perms::all);
  write_file_with_mode(config, "secret\n", FileMode::exactly(0600));
  CHECK(mode_of(config) == 0600);
  CHECK(test::read_file(config) == "secret\n");

  // A stale .partial left 0666 by some earlier crash must not make the replacement readable.
  fs::path record = dir / "token";
  test::write_file(partial_of(record), "stale\n");
  fs::permissions(partial_of(record), fs::perms::all);
  write_text_file_atomically(record, "secret\n", FileMode::exactly(0600));
  CHECK(mode_of(record) == 0600);
  CHECK(test::read_file(record) == "secret\n");
}

TEST_CASE("build output: describe_file gives size and sha256, hashing hard-linked files once", "[build_output]") {
  test::TempDir dir;
  fs::path kernel = dir / "vmlinuz";
  test::write_file(kernel, "abc");
  fs::create_hard_link(kernel, dir / "vmlinuz-2");
  DigestsByInode digests;
  BuiltFile first = describe_file(kernel, digests);
  CHECK(first.path == kernel);
  CHECK(first.size == 3);
  CHECK(first.sha256.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  // Same bytes count, same mtime, other content: only a remembered digest still says "abc".
  struct stat before {};
  REQUIRE(::stat(kernel.c_str(), &before) == 0);
  test::write_file(dir / "vmlinuz-2", "xyz");
  timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, kernel.c_str(), times, 0) == 0);
  CHECK(describe_file(dir / "vmlinuz-2", digests).sha256 == first.sha256);

  // A changed mtime means the file was written again: hashed again.
  fs::last_write_time(kernel, fs::last_write_time(kernel) + std::chrono::seconds(5));
  CHECK(describe_file(dir / "vmlinuz-2", digests).sha256.hex() ==
        "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282");
  // A file with one link is always read.
  fs::path single = dir / "single";
  test::write_file(single, "abc");
  DigestsByInode fresh;
  CHECK(describe_file(single, fresh).sha256 == first.sha256);
  test::write_file(single, "xyz");
  CHECK(describe_file(single, fresh).sha256.hex() == "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282");
}

TEST_CASE("build output: SHA256SUMS lists files relative to the output directory in sha256sum's format", "[build_output]") {
  test::TempDir dir;
  fs::create_directories(dir / "netboot" / "cp1");
  test::write_file(dir / "n1.img", "abc");
  test::write_file(dir / "netboot" / "cp1" / "boot.ipxe", "xyz");
  DigestsByInode digests;
  std::vector<BuiltFile> files{describe_file(dir / "n1.img", digests), describe_file(dir / "netboot" / "cp1" / "boot.ipxe", digests)};
  CHECK(sha256sums_text(files, dir.path()) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  n1.img\n"
        "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282  netboot/cp1/boot.ipxe\n");
  CHECK(built_file_json(files[1], dir.path()) ==
        nlohmann::json{{"file", "netboot/cp1/boot.ipxe"},
                       {"size", 3},
                       {"sha256", "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282"}});

  UmaskScope strict(077);
  BuildRecord record = write_build_record(dir.path(), files, nlohmann::json{{"nodes", {"n1"}}}, FileMode::exactly(0644));
  CHECK(record.checksums == dir / "SHA256SUMS");
  CHECK(record.manifest == dir / "manifest.json");
  CHECK(test::read_file(record.checksums) == sha256sums_text(files, dir.path()));
  CHECK(test::read_file(record.manifest) == "{\n  \"nodes\": [\n    \"n1\"\n  ]\n}\n");
  CHECK(mode_of(record.checksums) == 0644);
  CHECK(mode_of(record.manifest) == 0644);
}

TEST_CASE("a manifest naming a file whose name is not UTF-8 is written, the bytes replaced", "[build-output]") {
  // ext4 names are bytes: an overlay's Latin-1 "caf\xe9.txt" lands as it is; the build failed with a
  // bare JSON exception naming neither the overlay nor the file.
  aggrik8s::test::TempDir dir;
  nlohmann::json manifest{{"changes", {"overlay /opt/caf\xe9.txt"}}};
  BuildRecord record = write_build_record(dir.path(), {}, manifest, FileMode::exactly(0644));
  CHECK(test::read_file(record.manifest) == "{\n  \"changes\": [\n    \"overlay /opt/caf\xef\xbf\xbd.txt\"\n  ]\n}\n");
}

TEST_CASE("output directories are 0755 under any umask, never world-writable", "[build-output]") {
  aggrik8s::test::TempDir dir;
  mode_t previous = ::umask(0);
  create_output_directories(dir / "out/netboot/n1");
  ::umask(previous);
  for (const char* sub : {"out", "out/netboot", "out/netboot/n1"}) {
    struct stat st {};
    REQUIRE(::stat((dir / sub).c_str(), &st) == 0);
    INFO(sub);
    CHECK((st.st_mode & 07777) == 0755);
  }
  create_output_directories(dir / "out/netboot/n1");  // existing: fine
}

TEST_CASE("build --node keeps the other nodes' records while their files are intact", "[build-output]") {
  aggrik8s::test::TempDir dir;
  aggrik8s::test::write_file(dir / "a.iso", "aaaa");
  aggrik8s::test::write_file(dir / "b.iso", "bbbbbb");
  aggrik8s::test::write_file(dir / "c.iso", "cc");
  auto entry = [](const std::string& name, const std::string& file, std::uint64_t size) {
    return nlohmann::json{{"name", name}, {"outputs", {{"iso", {{"file", file}, {"size", size}, {"sha256", "x"}}}}}};
  };
  nlohmann::json old{{"profile", {{"name", "workers"}}},
                     {"nodes", {entry("a", "a.iso", 4), entry("b", "b.iso", 6), entry("c", "c.iso", 99)}}};
  aggrik8s::test::write_file(dir / "manifest.json", old.dump());
  aggrik8s::test::write_file(dir / "SHA256SUMS", Sha256::of(std::string("aaaa")).hex() + "  a.iso\n" +
                                                     Sha256::of(std::string("bbbbbb")).hex() + "  b.iso\n" +
                                                     Sha256::of(std::string("cc")).hex() + "  c.iso\n");
  // Node b rebuilt alone; a is intact, c's file no longer has the size its entry records.
  nlohmann::json manifest{{"profile", {{"name", "workers"}}}, {"nodes", {entry("b", "b.iso", 6)}}};
  std::vector<BuiltFile> files{{dir / "b.iso", 6, Sha256::of(std::string("bbbbbb"))}};
  keep_unbuilt_nodes(dir.path(), {"a", "b", "c"}, manifest, files);
  REQUIRE(manifest["nodes"].size() == 2);
  CHECK(manifest["nodes"][0]["name"] == "a");  // profile order
  CHECK(manifest["nodes"][1]["name"] == "b");
  REQUIRE(files.size() == 2);
  CHECK(files[1].path == dir / "a.iso");
  CHECK(files[1].sha256 == Sha256::of(std::string("aaaa")));
  // SHA256SUMS comes out in name order, as a full build of a, b (and c) writes it.
  CHECK(sha256sums_text(files, dir.path()) == Sha256::of(std::string("aaaa")).hex() + "  a.iso\n" +
                                                  Sha256::of(std::string("bbbbbb")).hex() + "  b.iso\n");
  // Another profile's manifest in the directory is not this one's record.
  nlohmann::json other{{"profile", {{"name", "servers"}}}, {"nodes", {entry("b", "b.iso", 6)}}};
  std::vector<BuiltFile> none;
  keep_unbuilt_nodes(dir.path(), {"a", "b"}, other, none);
  CHECK(other["nodes"].size() == 1);
  CHECK(none.empty());
}

TEST_CASE("the outputs of a node the profile no longer has are removed, a user's files kept", "[build-output]") {
  // A node taken out of the profile left its image (join token) and a killed build's .partial files
  // behind, outside SHA256SUMS.
  aggrik8s::test::TempDir top;
  const fs::path dir = top / "out";
  for (const char* file : {"n1.img", "n1.img.bmap", "n1.img.zst", "n1.img.xz.partial", "n2.img", "notes.txt", "n10.img.partial"}) {
    aggrik8s::test::write_file(dir / file, "x");
  }
  auto entry = [](const std::string& name) {
    return nlohmann::json{{"name", name},
                          {"outputs", {{"image", {{"file", name + ".img"}}}, {"bmap", {{"file", name + ".img.bmap"}}},
                                       {"zst", {{"file", name + ".img.zst"}}}, {"escape", {{"file", "../outside"}}}}}};
  };
  aggrik8s::test::write_file(top / "outside", "not ours");
  nlohmann::json old{{"profile", {{"name", "edge"}}}, {"nodes", {entry("n1"), entry("n2")}}};
  aggrik8s::test::write_file(dir / "manifest.json", old.dump());
  CHECK(remove_dropped_node_outputs(dir, {"n2", "n10"}, "another-profile").empty());
  auto removed = remove_dropped_node_outputs(dir, {"n2", "n10"}, "edge");
  CHECK(removed.size() == 4);
  for (const char* gone : {"n1.img", "n1.img.bmap", "n1.img.zst", "n1.img.xz.partial"}) CHECK_FALSE(fs::exists(dir / gone));
  for (const char* kept : {"n2.img", "notes.txt", "n10.img.partial"}) CHECK(fs::exists(dir / kept));
  CHECK(fs::exists(top / "outside"));
}

TEST_CASE("a work directory left by a build that is gone is removed when the next one starts", "[build-output]") {
  aggrik8s::test::TempDir dir;
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);  // its pid is free now
  aggrik8s::test::write_file(dir / (".work-" + std::to_string(child)) / "token", "secret");
  aggrik8s::test::write_file(dir / (".work-" + std::to_string(::getppid())) / "x", "a live process's");
  aggrik8s::test::write_file(dir / ".work-notapid" / "x", "not ours");
  {
    WorkDirectory work(dir.path(), "work");
    CHECK(fs::exists(work.path()));
  }
  CHECK_FALSE(fs::exists(dir / (".work-" + std::to_string(child))));
  CHECK(fs::exists(dir / (".work-" + std::to_string(::getppid()))));
  CHECK(fs::exists(dir / ".work-notapid"));
}

TEST_CASE("one build at a time in an output directory: a second lock fails at once, naming the directory", "[build-output]") {
  aggrik8s::test::TempDir dir;
  const fs::path out = dir / "out" / "site";
  {
    OutputDirectoryLock first(out);  // creates it
    REQUIRE(fs::is_directory(out));
    REQUIRE(first.held());
    // Another open of the directory, as another build's would be: flock locks belong to the open file,
    // so this process conflicts with itself as two processes would.
    CHECK_THROWS_WITH(OutputDirectoryLock(out), Catch::Contains(out.string() + ": another build is writing into this directory"));
    // Another directory is not affected.
    OutputDirectoryLock other(dir / "out" / "elsewhere");
    CHECK(other.held());
  }
  OutputDirectoryLock after(out);  // the first build's end released it
  CHECK(after.held());
  // Nothing was written into the directory for the lock.
  CHECK(fs::is_empty(out));
}

TEST_CASE("a rebuild that fails half-way leaves the earlier build's outputs as they were", "[build-output]") {
  // Found interrupting a Talos rebuild into the same directory: n1.iso had already been replaced by
  // the new one, the cleanup removed it, and the earlier build's SHA256SUMS still listed it.
  aggrik8s::test::TempDir dir;
  aggrik8s::test::write_file(dir / "n1.iso", "earlier n1");
  aggrik8s::test::write_file(dir / "netboot" / "n1" / "config.yaml", "earlier config");
  {
    PartialOutputs partial;
    aggrik8s::test::write_file(partial.track(dir / "n1.iso.partial"), "new n1");
    partial.publish(dir / "n1.iso.partial", dir / "n1.iso");
    aggrik8s::test::write_file(partial.track(dir / "n2.iso.partial"), "new n2");
    partial.publish(dir / "n2.iso.partial", dir / "n2.iso");
    aggrik8s::test::write_file(partial.track(dir / "netboot" / "n1.partial") / "config.yaml", "new config");
    partial.publish(dir / "netboot" / "n1.partial", dir / "netboot" / "n1");
    CHECK(aggrik8s::test::read_file(dir / "n1.iso") == "new n1");
    CHECK(aggrik8s::test::read_file(dir / "netboot" / "n1" / "config.yaml") == "new config");
  }  // not committed: the build failed
  CHECK(aggrik8s::test::read_file(dir / "n1.iso") == "earlier n1");
  CHECK(aggrik8s::test::read_file(dir / "netboot" / "n1" / "config.yaml") == "earlier config");
  CHECK_FALSE(fs::exists(dir / "n2.iso"));
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir.path())) names.push_back(fs::relative(entry.path(), dir.path()).string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"n1.iso", "netboot", "netboot/n1", "netboot/n1/config.yaml"});
}

TEST_CASE("a committed rebuild keeps the new outputs and nothing of what they replaced", "[build-output]") {
  aggrik8s::test::TempDir dir;
  aggrik8s::test::write_file(dir / "n1.iso", "earlier n1");
  aggrik8s::test::write_file(dir / "netboot" / "n1" / "stale", "earlier file");
  {
    PartialOutputs partial;
    aggrik8s::test::write_file(partial.track(dir / "n1.iso.partial"), "new n1");
    partial.publish(dir / "n1.iso.partial", dir / "n1.iso");
    aggrik8s::test::write_file(partial.track(dir / "netboot" / "n1.partial") / "config.yaml", "new config");
    partial.publish(dir / "netboot" / "n1.partial", dir / "netboot" / "n1");
    partial.commit();
  }
  CHECK(aggrik8s::test::read_file(dir / "n1.iso") == "new n1");
  CHECK(aggrik8s::test::read_file(dir / "netboot" / "n1" / "config.yaml") == "new config");
  CHECK_FALSE(fs::exists(dir / "netboot" / "n1" / "stale"));
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir.path())) names.push_back(fs::relative(entry.path(), dir.path()).string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"n1.iso", "netboot", "netboot/n1", "netboot/n1/config.yaml"});
}

TEST_CASE("what a killed build had replaced is put back when the next build starts", "[build-output]") {
  aggrik8s::test::TempDir dir;
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);  // its pid is free now
  const std::string gone = std::to_string(child);
  // SIGKILL between publishing n1.iso and the commit: the new file in place, the earlier one aside.
  aggrik8s::test::write_file(dir / "n1.iso", "killed build's n1");
  aggrik8s::test::write_file(dir / (".n1.iso.previous-" + gone), "earlier n1");
  aggrik8s::test::write_file(dir / "netboot" / "n1" / "config.yaml", "killed build's config");
  aggrik8s::test::write_file(dir / "netboot" / (".n1.previous-" + gone) / "config.yaml", "earlier config");
  aggrik8s::test::write_file(dir / (".n2.iso.previous-" + std::to_string(::getppid())), "a live build's");
  { WorkDirectory work(dir.path(), "work-talos"); }
  CHECK(aggrik8s::test::read_file(dir / "n1.iso") == "earlier n1");
  CHECK(aggrik8s::test::read_file(dir / "netboot" / "n1" / "config.yaml") == "earlier config");
  CHECK_FALSE(fs::exists(dir / (".n1.iso.previous-" + gone)));
  CHECK_FALSE(fs::exists(dir / "netboot" / (".n1.previous-" + gone)));
  CHECK(fs::exists(dir / (".n2.iso.previous-" + std::to_string(::getppid()))));
}
