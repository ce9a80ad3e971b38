// `aggrik8s-image inspect` on images the CLI builds from the stand-in fixtures: what the build wrote is
// what inspect finds, in text and JSON, and the join token never appears in either.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

const std::string token = "K10inspect-secret-token::server:c0ffee";

std::string cli() { return test::cli_path().string(); }

// Fixtures are deterministic and take seconds to make: made once per build tree, under a lock because
// ctest may run test cases in parallel processes.
fs::path fixtures() {
  fs::path dir = fs::path(AGGRIK8S_TEST_BINARY_DIR) / "test-fixtures-inspect";
  fs::create_directories(dir);
  std::string make = (test::source_dir() / "tests/fixtures").string();
  std::string d = dir.string();
  auto r = test::run("flock '" + d + ".lock' sh -c '"
                     "{ [ -f \"" + d + "/firstrun/raspios-lite-arm64.img\" ] || " + make + "/make-rpi-os-image \"" + d +
                     "/firstrun\" --formats img --quiet; } && "
                     "{ [ -f \"" + d + "/cloudinit/raspios-lite-arm64.img\" ] || " + make + "/make-rpi-os-image \"" + d +
                     "/cloudinit\" --flavour cloudinit --formats img --quiet; } && "
                     "{ [ -f \"" + d + "/rke2/sha256sum-arm64.txt\" ] || " + make + "/make-rke2-release \"" + d +
                     "/rke2\" --quiet; }'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return dir;
}

// Builds one node from a fixture base with the CLI and returns the image's path.
fs::path build_node(const test::TempDir& dir, const std::string& flavour, const std::string& role) {
  fs::path f = fixtures();
  test::write_file(dir / "token", token + "\n");
  fs::permissions(dir / "token", fs::perms::owner_read | fs::perms::owner_write);
  std::string rke2 = "rke2:\n  version: v1.33.1+rke2r1\n  release_dir: " + (f / "rke2").string() +
                     "\n  images: [rke2-images-core, rke2-images-canal]\n  role: " + role +
                     "\n  token: {file: token}\n";
  if (role == "agent") rke2 += "  server: https://10.0.0.1:9345\n";
  test::write_file(dir / "profile.yaml", "kind: rpi5-rke2\nname: inspect\nbase: {path: " +
                                              (f / flavour / "raspios-lite-arm64.img").string() + "}\n" + rke2 +
                                              "output: {root_free_space: 16MiB, bmap: false}\n"
                                              "nodes:\n  - name: n1\n");
  auto r = test::run(cli() + " build -q --cache-dir '" + (dir / "cache").string() + "' --out '" + (dir / "out").string() +
                     "' '" + (dir / "profile.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return dir / "out" / "n1.img";
}

nlohmann::json inspect_json(const fs::path& image) {
  auto r = test::run(cli() + " inspect --json '" + image.string() + "' 2>/dev/null");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.output);
}

}  // namespace

TEST_CASE("inspect: a built firstrun.sh server image, in text and JSON, without the token", "[inspect]") {
  test::TempDir dir;
  fs::path image = build_node(dir, "firstrun", "server");

  auto text = test::run(cli() + " inspect '" + image.string() + "'");
  INFO(text.output);
  REQUIRE(text.exit_code == 0);
  CHECK(text.output.find(token) == std::string::npos);
  CHECK(text.output.find("K10inspect") == std::string::npos);
  CHECK(text.output.find("MBR, disk identifier 5452574f") != std::string::npos);
  CHECK(text.output.find("5452574f-02 (partition 2, the root filesystem: matches)") != std::string::npos);
  CHECK(text.output.find("cgroup_enable=memory present") != std::string::npos);
  CHECK(text.output.find("firstrun.sh") != std::string::npos);
  CHECK(text.output.find("v1.33.1+rke2r1 (from preload.json)") != std::string::npos);
  CHECK(text.output.find("rke2-server.service -> /usr/local/lib/systemd/system/rke2-server.service") != std::string::npos);
  CHECK(text.output.find("file 0600 root:root") != std::string::npos);
  CHECK(text.output.find("token (set)") != std::string::npos);
  CHECK(text.output.find("warnings: none") != std::string::npos);

  nlohmann::json j = inspect_json(image);
  CHECK(j.dump().find("K10inspect") == std::string::npos);
  CHECK(j["partition_table"]["kind"] == "MBR");
  CHECK(j["partition_table"]["disk_identifier"] == "5452574f");
  REQUIRE(j["partitions"].size() == 2);
  CHECK(j["partitions"][0]["filesystem"] == "FAT32");
  CHECK(j["partitions"][0]["label"] == "bootfs");
  CHECK(j["partitions"][0]["partuuid"] == "5452574f-01");
  CHECK(j["partitions"][0]["uuid"] == "B007-F5A7");
  CHECK(j["partitions"][1]["filesystem"] == "ext4");
  CHECK(j["partitions"][1]["label"] == "rootfs");
  CHECK(j["partitions"][1]["uuid"] == "8a438930-e8a5-4a6f-8bd6-5452574f0002");
  CHECK(j["partitions"][1]["free"].get<std::uint64_t>() > 0);
  CHECK(j["boot"]["root_partuuid"] == "5452574f-02");
  CHECK(j["boot"]["root_partuuid_matches"] == true);
  CHECK(j["boot"]["cgroup_memory_enabled"] == true);
  CHECK(j["boot"]["kernel8_img"] == true);
  CHECK(j["boot"]["kernel_2712_img"] == true);
  CHECK(j["first_boot"]["format"] == "firstrun.sh");
  CHECK(j["first_boot"]["started_by_cmdline"] == true);
  CHECK(j["first_boot"]["hostname"] == "n1");
  const auto& rke2 = j["rke2"];
  CHECK(rke2["present"] == true);
  CHECK(rke2["version"] == "v1.33.1+rke2r1");
  CHECK(rke2["role"] == "server");
  CHECK(rke2["preload_record"]["present"] == true);
  CHECK(rke2["preload_record"]["node"] == "n1");
  REQUIRE(rke2["image_archives"].size() == 2);
  for (const auto& archive : rke2["image_archives"]) {
    fs::path original = fixtures() / "rke2" / archive["name"].get<std::string>();
    CHECK(archive["size"].get<std::uint64_t>() == fs::file_size(original));
    CHECK(archive["sha256"].get<std::string>().size() == 64);
  }
  CHECK(rke2["config"]["mode"] == "0600");
  CHECK(rke2["config"]["uid"] == 0);
  CHECK(rke2["config"]["token"] == "set");
  CHECK(rke2["config"]["node_name"] == "n1");
  CHECK(rke2["binary"]["mode"] == "0755");
  CHECK(rke2["registries"]["present"] == false);
  CHECK(j["warnings"].empty());

  // Images built before preload.json existed (or by other tools): the facts come from the files.
  std::uint64_t root_offset = j["partitions"][1]["start"].get<std::uint64_t>();
  auto rm = test::run("debugfs -w -R 'rm /usr/local/share/aggrik8s/preload.json' '" + image.string() +
                      "?offset=" + std::to_string(root_offset) + "'");
  INFO(rm.output);
  REQUIRE(rm.exit_code == 0);
  nlohmann::json without_record = inspect_json(image);
  CHECK(without_record["rke2"]["preload_record"]["present"] == false);
  CHECK(without_record["rke2"]["version"] == "v1.33.1+rke2r1");
  CHECK(without_record["rke2"]["version_source"] == "/usr/local/bin/rke2");
  CHECK(without_record["rke2"]["role"] == "server");
  CHECK(without_record["rke2"]["image_archives"].size() == 2);
  CHECK(without_record["warnings"].empty());
}

TEST_CASE("inspect: a cloud-init agent image, and --strict on a config.yaml others can read", "[inspect]") {
  test::TempDir dir;
  fs::path image = build_node(dir, "cloudinit", "agent");
  nlohmann::json j = inspect_json(image);
  CHECK(j.dump().find("K10inspect") == std::string::npos);
  CHECK(j["first_boot"]["format"] == "cloud-init NoCloud");
  CHECK(j["first_boot"]["started_by_cmdline"] == true);
  CHECK(j["first_boot"]["hostname"] == "n1");
  CHECK(j["first_boot"]["instance_id"] == j["first_boot"]["cmdline_instance_id"]);
  CHECK(j["rke2"]["role"] == "agent");
  auto keys = j["rke2"]["config"]["keys"].get<std::vector<std::string>>();
  CHECK(std::find(keys.begin(), keys.end(), "server") != keys.end());
  CHECK(std::find(keys.begin(), keys.end(), "token") != keys.end());
  CHECK(j["warnings"].empty());

  // The same image with config.yaml made world-readable: a warning, exit 0, and 1 with --strict.
  std::uint64_t root_offset = j["partitions"][1]["start"].get<std::uint64_t>();
  auto chmod = test::run("debugfs -w -R 'set_inode_field /etc/rancher/rke2/config.yaml mode 0100644' '" +
                         image.string() + "?offset=" + std::to_string(root_offset) + "'");
  INFO(chmod.output);
  REQUIRE(chmod.exit_code == 0);
  auto loose = test::run(cli() + " inspect '" + image.string() + "'");
  INFO(loose.output);
  CHECK(loose.exit_code == 0);
  CHECK(loose.output.find("config.yaml is mode 0644, not 0600") != std::string::npos);
  CHECK(loose.output.find("K10inspect") == std::string::npos);
  CHECK(test::run(cli() + " inspect --strict '" + image.string() + "'").exit_code == 1);
}

TEST_CASE("inspect: the base image has no RKE2 preload, and a .zst copy reads the same", "[inspect]") {
  test::TempDir dir;
  fs::path base = fixtures() / "firstrun" / "raspios-lite-arm64.img";
  auto text = test::run(cli() + " inspect '" + base.string() + "'");
  INFO(text.output);
  REQUIRE(text.exit_code == 0);
  CHECK(text.output.find("no RKE2 preload") != std::string::npos);
  CHECK(text.output.find("init=/usr/lib/raspberrypi-sys-mods/firstboot") != std::string::npos);
  nlohmann::json raw = inspect_json(base);
  CHECK(raw["rke2"]["present"] == false);
  CHECK(raw["first_boot"]["format"] == "none");
  CHECK(raw["boot"]["cgroup_memory_enabled"] == false);
  CHECK(raw["root"]["hostname"] == "raspberrypi");

  REQUIRE(test::run("zstd -q -o '" + (dir / "base.img.zst").string() + "' '" + base.string() + "'").exit_code == 0);
  nlohmann::json compressed = inspect_json(dir / "base.img.zst");
  CHECK(compressed["image"]["input_format"] == "zstd");
  CHECK(compressed["partitions"] == raw["partitions"]);
  CHECK(compressed["boot"] == raw["boot"]);
  // The scratch copy is gone.
  auto scratch = test::run("ls \"${TMPDIR:-/tmp}\" | grep -c aggrik8s-inspect- || true");
  CHECK(scratch.output.find("base.img.zst") == std::string::npos);
  // Its output going to a pipe whose reader has gone (`inspect ... | head`, head done): the scratch copy
  // (which may hold a join token) is removed all the same, where SIGPIPE's default left it in $TMPDIR;
  // exit 141. The pipe's read end is closed before inspect starts, so that its first line, which names
  // the scratch copy it has just made, is the write that fails (head's own timing would be a race).
  fs::create_directories(dir / "tmp");
  auto piped = test::run("TMPDIR='" + (dir / "tmp").string() +
                         "' python3 -c 'import os, subprocess, sys; r, w = os.pipe(); os.close(r); "
                         "print(\"rc=%d\" % subprocess.run(sys.argv[1:], stdout=w, stderr=w).returncode)' '" +
                         cli() + "' inspect -v '" + (dir / "base.img.zst").string() + "'; ls -A '" + (dir / "tmp").string() + "'");
  INFO(piped.output);
  CHECK(piped.output.find("rc=141") != std::string::npos);
  CHECK(piped.output.find("aggrik8s-inspect-") == std::string::npos);
}

namespace {

// A copy of image with debugfs commands applied to its root filesystem (partition 2 at root_offset).
fs::path damaged_copy(const test::TempDir& dir, const fs::path& image, const std::string& name, std::uint64_t root_offset,
                      const std::string& debugfs_commands) {
  fs::path copy = dir / (name + ".img");
  REQUIRE(test::run("cp --sparse=always '" + image.string() + "' '" + copy.string() + "'").exit_code == 0);
  if (!debugfs_commands.empty()) {
    test::write_file(dir / (name + ".debugfs"), debugfs_commands);
    auto r = test::run("debugfs -w -f '" + (dir / (name + ".debugfs")).string() + "' '" + copy.string() + "?offset=" +
                       std::to_string(root_offset) + "'");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
  return copy;
}

std::vector<std::string> json_strings(const nlohmann::json& array) { return array.get<std::vector<std::string>>(); }

}  // namespace

// Found by users: an image whose /etc/hostname was a symlink to itself was reported as having no ext4
// root and no RKE2 preload (the ELOOP reading one file dropped the whole root filesystem).
TEST_CASE("inspect: one unreadable file is reported as such and the rest of the report stays right", "[inspect]") {
  test::TempDir dir;
  fs::path image = build_node(dir, "firstrun", "server");
  nlohmann::json good = inspect_json(image);
  REQUIRE(good["warnings"].empty());
  std::uint64_t root_offset = good["partitions"][1]["start"].get<std::uint64_t>();
  // What must not change whatever single file is damaged.
  // Free space is left out: debugfs' edits change it.
  auto partitions_without_free = [](nlohmann::json partitions) {
    for (auto& p : partitions) p.erase("free");
    return partitions;
  };
  auto check_intact = [&](const nlohmann::json& j) {
    CHECK(partitions_without_free(j["partitions"]) == partitions_without_free(good["partitions"]));
    CHECK(j["boot"] == good["boot"]);
    CHECK(j["first_boot"] == good["first_boot"]);
    CHECK(j["root"]["partition"] == 2);
    CHECK(j["root_error"].is_null());
    CHECK(j["rke2"]["present"] == true);
    CHECK(j["rke2"]["role"] == "server");
    CHECK(j["rke2"]["image_archives"] == good["rke2"]["image_archives"]);
    CHECK(j["rke2"]["config"] == good["rke2"]["config"]);
  };

  SECTION("/etc/hostname is a symlink to itself") {
    fs::path loop = damaged_copy(dir, image, "loop", root_offset, "rm /etc/hostname\nsymlink /etc/hostname /etc/hostname\n");
    auto text = test::run(cli() + " inspect '" + loop.string() + "'");
    INFO(text.output);
    CHECK(text.exit_code == 0);
    CHECK(text.output.find("/etc/hostname  unreadable (symlink loop: /etc/hostname -> /etc/hostname)") != std::string::npos);
    CHECK(text.output.find("root filesystem (partition 2)") != std::string::npos);
    CHECK(text.output.find("v1.33.1+rke2r1 (from preload.json)") != std::string::npos);
    CHECK(text.output.find("no ext4 root partition") == std::string::npos);
    CHECK(text.output.find("no RKE2 preload") == std::string::npos);
    CHECK(text.output.find("warnings (1)") != std::string::npos);

    nlohmann::json j = inspect_json(loop);
    check_intact(j);
    CHECK(j["root"]["hostname"].is_null());
    CHECK(j["root"]["os"] == good["root"]["os"]);
    CHECK(j["rke2"] == good["rke2"]);
    REQUIRE(j["unreadable"].size() == 1);
    CHECK(j["unreadable"][0]["partition"] == 2);
    CHECK(j["unreadable"][0]["path"] == "/etc/hostname");
    CHECK(j["unreadable"][0]["reason"] == "symlink loop: /etc/hostname -> /etc/hostname");
    CHECK(json_strings(j["warnings"]) ==
          std::vector<std::string>{"unreadable: /etc/hostname on partition 2 (symlink loop: /etc/hostname -> /etc/hostname)"});
  }

  SECTION("a dangling symlink: /etc/os-release's target is gone") {
    nlohmann::json j = inspect_json(damaged_copy(dir, image, "dangling", root_offset, "rm /usr/lib/os-release\n"));
    check_intact(j);
    CHECK(j["root"]["os"].is_null());
    CHECK(j["root"]["hostname"] == good["root"]["hostname"]);
    REQUIRE(j["unreadable"].size() == 1);
    CHECK(j["unreadable"][0]["path"] == "/etc/os-release");
    CHECK(j["unreadable"][0]["reason"] == "dangling symlink: /etc/os-release -> /usr/lib/os-release (does not exist)");
    CHECK(j["warnings"].size() == 1);
  }

  SECTION("directories where files are expected: preload.json on the root, cmdline.txt on the boot partition") {
    fs::path copy = damaged_copy(dir, image, "dirs", root_offset,
                                 "rm /usr/local/share/aggrik8s/preload.json\nmkdir /usr/local/share/aggrik8s/preload.json\n");
    auto mtools = test::run("mdel -i '" + copy.string() + "@@8M' ::cmdline.txt && mmd -i '" + copy.string() + "@@8M' ::cmdline.txt");
    INFO(mtools.output);
    REQUIRE(mtools.exit_code == 0);
    auto text = test::run(cli() + " inspect '" + copy.string() + "'");
    INFO(text.output);
    CHECK(text.output.find("cmdline.txt    unreadable (a directory, not a regular file)") != std::string::npos);
    CHECK(text.output.find("preload.json     unreadable (a directory, not a regular file)") != std::string::npos);
    nlohmann::json j = inspect_json(copy);
    CHECK(partitions_without_free(j["partitions"]) == partitions_without_free(good["partitions"]));
    CHECK(j["rke2"]["present"] == true);
    CHECK(j["rke2"]["version"] == "v1.33.1+rke2r1");
    CHECK(j["rke2"]["version_source"] == "/usr/local/bin/rke2");
    CHECK(j["boot"]["cmdline"].is_null());
    // Reported as unreadable, not as "no cmdline.txt" or as a firstrun.sh that nothing starts.
    CHECK(json_strings(j["warnings"]) ==
          std::vector<std::string>{"unreadable: /cmdline.txt on partition 1 (a directory, not a regular file)",
                                   "unreadable: /usr/local/share/aggrik8s/preload.json on partition 2 (a directory, not a regular file)"});
  }

  SECTION("a root superblock whose checksum does not match: the root is unreadable, not absent") {
    fs::path copy = damaged_copy(dir, image, "csum", root_offset, "");
    // One byte of the volume label (superblock offset 0x78), behind metadata_csum's back.
    REQUIRE(test::run("printf X | dd of='" + copy.string() + "' bs=1 seek=" + std::to_string(root_offset + 1024 + 0x78) +
                      " conv=notrunc status=none").exit_code == 0);
    auto text = test::run(cli() + " inspect '" + copy.string() + "'");
    INFO(text.output);
    CHECK(text.exit_code == 0);
    CHECK(text.output.find("unknown (the root filesystem cannot be read") != std::string::npos);
    CHECK(text.output.find("no ext4 root partition") == std::string::npos);
    CHECK(text.output.find("no RKE2 preload") == std::string::npos);
    nlohmann::json j = inspect_json(copy);
    CHECK(j["partitions"][1]["filesystem"] == "ext4");
    CHECK(j["boot"] == good["boot"]);
    CHECK(j["root"].is_null());
    CHECK(j["rke2"]["present"].is_null());
    REQUIRE(j["root_error"].is_string());
    CHECK(j["root_error"].get<std::string>().find("checksum") != std::string::npos);
    CHECK(j["warnings"].size() == 1);
  }
}

TEST_CASE("inspect: truncated, corrupt and missing images fail with a clear error", "[inspect]") {
  test::TempDir dir;
  fs::path base = fixtures() / "firstrun" / "raspios-lite-arm64.img";
  REQUIRE(test::run("head -c 90M '" + base.string() + "' >'" + (dir / "truncated.img").string() + "'").exit_code == 0);
  auto truncated = test::run(cli() + " inspect '" + (dir / "truncated.img").string() + "'");
  INFO(truncated.output);
  CHECK(truncated.exit_code == 1);
  CHECK(truncated.output.find("truncated.img") != std::string::npos);
  CHECK(truncated.output.find("partition 2") != std::string::npos);
  CHECK(truncated.output.find("not a complete disk image") != std::string::npos);

  test::write_file(dir / "garbage.img", std::string(4096, 'x'));
  auto garbage = test::run(cli() + " inspect '" + (dir / "garbage.img").string() + "'");
  INFO(garbage.output);
  CHECK(garbage.exit_code == 1);
  CHECK(garbage.output.find("garbage.img") != std::string::npos);

  test::write_file(dir / "broken.img.zst", "not zstd at all");
  auto broken = test::run(cli() + " inspect '" + (dir / "broken.img.zst").string() + "'");
  INFO(broken.output);
  CHECK(broken.exit_code == 1);
  CHECK(broken.output.find("broken.img.zst") != std::string::npos);

  auto missing = test::run(cli() + " inspect '" + (dir / "missing.img").string() + "'");
  CHECK(missing.exit_code == 1);
  CHECK(missing.output.find("no such file") != std::string::npos);
}
