// `aggrik8s-image build` with output.http_boot, from the stand-in fixtures: every node gets a boot.img
// that fsck.fat finds clean and that holds its disk image's boot partition byte for byte (read with
// mtools from both), and a boot.sig that openssl verifies as the Pi bootloader does; the same
// SOURCE_DATE_EPOCH gives the same bytes; a missing or wrong key and a too-small image_size fail with
// the reason and leave nothing behind.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <sstream>

#include "tests/test_support.hpp"

namespace fs = std::filesystem;
namespace test = aggrik8s::test;
using Catch::Matchers::Contains;

namespace {

std::string cli() { return test::cli_path().string(); }
std::string quoted(const fs::path& path) { return "'" + path.string() + "'"; }

// The stand-in fixtures, made once per build tree (under a lock: ctest may run cases in parallel).
fs::path fixtures() {
  fs::path dir = fs::path(AGGRIK8S_TEST_BINARY_DIR) / "test-fixtures-http-boot";
  fs::create_directories(dir);
  const std::string make = (test::source_dir() / "tests/fixtures").string();
  const std::string d = dir.string();
  auto r = test::run("flock '" + d + ".lock' sh -c '"
                     "{ [ -f \"" + d + "/firstrun/raspios-lite-arm64.img\" ] || " + make + "/make-rpi-os-image \"" + d +
                     "/firstrun\" --formats img --quiet; } && "
                     "{ [ -f \"" + d + "/rke2/sha256sum-arm64.txt\" ] || " + make + "/make-rke2-release \"" + d +
                     "/rke2\" --quiet; }'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return dir;
}

std::string checked(const std::string& command) {
  auto r = test::run(command);
  INFO(command << "\n" << r.output);
  REQUIRE(r.exit_code == 0);
  return r.output;
}

void write_profile(const test::TempDir& dir, const std::string& http_boot, const std::string& more_output = "") {
  const fs::path f = fixtures();
  test::write_file(dir / "token", "K10httpboot-secret-token::server:c0ffee\n");
  fs::permissions(dir / "token", fs::perms::owner_read | fs::perms::owner_write);
  test::write_file(dir / "profile.yaml",
                   "kind: rpi5-rke2\nname: httpboot\nbase: {path: " + (f / "firstrun" / "raspios-lite-arm64.img").string() +
                       "}\nrke2:\n  version: v1.33.1+rke2r1\n  release_dir: " + (f / "rke2").string() +
                       "\n  images: [rke2-images-core]\n  role: server\n  token: {file: token}\n"
                       "system:\n  users: [{name: ops, ssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaHTTP test@x\"]}]\n"
                       "output: {root_free_space: 16MiB, bmap: false, http_boot: " + http_boot + more_output + "}\n"
                       "nodes:\n  - name: n1\n  - name: n2\n    rke2: {role: agent, server: \"https://10.0.0.1:9345\"}\n");
}

test::CommandResult build(const test::TempDir& dir, const fs::path& out) {
  return test::run("SOURCE_DATE_EPOCH=1767225600 " + cli() + " build -q --cache-dir " + quoted(dir / "cache") + " --out " +
                   quoted(out) + " " + quoted(dir / "profile.yaml"));
}

void make_key(const fs::path& path, int bits) {
  checked("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:" + std::to_string(bits) + " -out " + quoted(path) +
          " 2>&1 && chmod 600 " + quoted(path));
}

// Every file (not directory) of a FAT, as mtools lists it: "::/overlays/x.dtbo" per line.
std::vector<std::string> fat_files(const std::string& mtools_image) {
  std::istringstream listing(checked("MTOOLS_SKIP_CHECK=1 mdir -i " + mtools_image + " -/ -b ::"));
  std::vector<std::string> files;
  for (std::string line; std::getline(listing, line);) {
    if (!line.empty() && line.back() != '/') files.push_back(line);
  }
  return files;
}

// What is in `out` besides the build record, for "nothing left behind".
std::vector<std::string> leftovers(const fs::path& out) {
  std::vector<std::string> names;
  if (!fs::exists(out)) return names;
  for (const auto& entry : fs::directory_iterator(out)) names.push_back(entry.path().filename().string());
  return names;
}

}  // namespace

TEST_CASE("build writes a signed boot.img per node holding its boot partition", "[http_boot][integration]") {
  test::TempDir dir;
  make_key(dir / "boot.pem", 2048);
  checked("openssl pkey -in " + quoted(dir / "boot.pem") + " -pubout -out " + quoted(dir / "pub.pem"));
  write_profile(dir, "{key: {file: boot.pem}}");
  const fs::path out = dir / "out";
  auto r = build(dir, out);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);

  for (const std::string node : {"n1", "n2"}) {
    INFO("node " << node);
    const fs::path image = out / (node + ".img");
    const fs::path boot_img = out / (node + ".boot.img");
    const fs::path boot_sig = out / (node + ".boot.sig");
    struct stat st {};
    REQUIRE(::stat(boot_img.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(::stat(boot_sig.c_str(), &st) == 0);
    CHECK((st.st_mode & 0133) == 0);  // 0644 less the umask: readable, writable by the owner only

    auto fsck = test::run("fsck.fat -n -V " + quoted(boot_img));
    INFO(fsck.output);
    CHECK(fsck.exit_code == 0);
    CHECK_THAT(fsck.output, !Contains("differ") && !Contains("Free cluster summary"));
    CHECK_THAT(checked("file -b " + quoted(boot_img)), Contains("FAT (16 bit)") && Contains("label: \"BOOTFS     \""));

    // The node image's boot partition starts at sector N (partition 1).
    const std::string start = checked("partx -g -o START -n 1 " + quoted(image));
    const std::string partition = quoted(image) + "@@" + std::to_string(std::stoull(start) * 512);
    const std::vector<std::string> expected = fat_files(partition);
    CHECK(fat_files(quoted(boot_img)) == expected);
    REQUIRE(expected.size() > 5);
    bool has_first_boot_file = false;
    for (const std::string& file : expected) {
      INFO(file);
      fs::remove(dir / "a");
      fs::remove(dir / "b");
      checked("MTOOLS_SKIP_CHECK=1 mcopy -i " + partition + " '" + file + "' " + quoted(dir / "a"));
      checked("MTOOLS_SKIP_CHECK=1 mcopy -i " + quoted(boot_img) + " '" + file + "' " + quoted(dir / "b"));
      CHECK(test::run("cmp " + quoted(dir / "a") + " " + quoted(dir / "b")).exit_code == 0);
      if (file == "::/firstrun.sh") has_first_boot_file = true;
    }
    CHECK(has_first_boot_file);  // the node's own first-boot settings, hence 0600

    // The bootloader's check: sha256 line, then the RSA-2048 PKCS#1 v1.5 SHA-256 signature.
    const std::string sig = test::read_file(boot_sig);
    const std::string sha = checked("sha256sum " + quoted(boot_img)).substr(0, 64);
    CHECK(sig.starts_with(sha + "\nts: 1767225600\nrsa2048: "));
    checked("sed -n 's/^rsa2048: //p' " + quoted(boot_sig) + " | xxd -r -p > " + quoted(dir / "sig.bin"));
    CHECK_THAT(checked("openssl dgst -sha256 -verify " + quoted(dir / "pub.pem") + " -signature " + quoted(dir / "sig.bin") +
                       " " + quoted(boot_img)),
               Contains("Verified OK"));
  }

  checked("cd " + quoted(out) + " && sha256sum -c --quiet SHA256SUMS");
  const std::string sums = test::read_file(out / "SHA256SUMS");
  CHECK_THAT(sums, Contains("n1.boot.img") && Contains("n1.boot.sig") && Contains("n2.boot.img"));
  const std::string manifest_text = test::read_file(out / "manifest.json");
  const auto manifest = nlohmann::json::parse(manifest_text);
  CHECK(manifest["nodes"][0]["boot_img"]["size"].get<std::uint64_t>() == fs::file_size(out / "n1.boot.img"));
  CHECK(manifest["nodes"][1]["boot_sig"]["sha256"].get<std::string>().size() == 64);
  // The key stays out of every output.
  const std::string key_text = test::read_file(dir / "boot.pem");
  const std::string key_line = key_text.substr(key_text.find('\n') + 1, 64);
  CHECK_THAT(manifest_text, !Contains("PRIVATE KEY") && !Contains(key_line));
  CHECK(test::run("grep -rqF '" + key_line + "' " + quoted(out)).exit_code == 1);

  // The same inputs and SOURCE_DATE_EPOCH: the same bytes.
  auto again = build(dir, dir / "out2");
  INFO(again.output);
  REQUIRE(again.exit_code == 0);
  for (const std::string name : {"n1.boot.img", "n1.boot.sig", "n2.boot.img", "n2.boot.sig"}) {
    INFO(name);
    CHECK(test::run("cmp " + quoted(out / name) + " " + quoted(dir / "out2" / name)).exit_code == 0);
  }

  // Built again into the same directory without HTTP boot: the earlier boot.img files (the node's
  // first-boot secrets inside) do not stay behind outside SHA256SUMS.
  write_profile(dir, "null");
  test::write_file(out / "n2.img.xz.partial.partial", "left by a build that was killed");
  auto without = build(dir, out);
  INFO(without.output);
  REQUIRE(without.exit_code == 0);
  for (const std::string name : {"n1.boot.img", "n1.boot.sig", "n2.boot.img", "n2.boot.sig"}) {
    INFO(name);
    CHECK_FALSE(fs::exists(out / name));
  }
  CHECK(fs::exists(out / "n1.img"));
  CHECK_FALSE(fs::exists(out / "n2.img.xz.partial.partial"));
  checked("cd " + quoted(out) + " && sha256sum -c --quiet SHA256SUMS");
}

TEST_CASE("build refuses a missing or wrong key and a too-small boot.img, leaving nothing", "[http_boot][integration]") {
  test::TempDir dir;
  const fs::path out = dir / "out";

  // A bad key is refused before any work: the output directory stays empty.
  auto expect_refused_at_start = [&](const std::string& http_boot, const std::vector<std::string>& reasons) {
    write_profile(dir, http_boot);
    auto r = build(dir, out);
    INFO(r.output);
    CHECK(r.exit_code != 0);
    for (const auto& reason : reasons) CHECK_THAT(r.output, Contains(reason));
    CHECK(leftovers(out).empty());
  };
  expect_refused_at_start("{key: {file: missing.pem}}", {"missing.pem"});
  make_key(dir / "big.pem", 4096);
  expect_refused_at_start("{key: {file: big.pem}}", {"big.pem", "4096", "2048"});

  make_key(dir / "boot.pem", 2048);
  write_profile(dir, "{key: {file: boot.pem}, image_size: 8MiB}");
  auto small = build(dir, out);
  INFO(small.output);
  CHECK(small.exit_code != 0);
  CHECK_THAT(small.output, Contains("node n1") && Contains("image_size is 8.00 MiB") && Contains("need a boot.img of"));
  const auto left = leftovers(out);
  CHECK(std::none_of(left.begin(), left.end(), [](const std::string& name) {
    return name.find(".img") != std::string::npos || name.find(".sig") != std::string::npos || name.find("partial") != std::string::npos;
  }));
}

TEST_CASE("build writes a signed boot.img per ephemeral node with serve's URLs in its cmdline", "[http_boot][integration]") {
  test::TempDir dir;
  make_key(dir / "boot.pem", 2048);
  checked("openssl pkey -in " + quoted(dir / "boot.pem") + " -pubout -out " + quoted(dir / "pub.pem"));
  write_profile(dir, "{key: {file: boot.pem}}",
                ", disk_images: false, ephemeral: {memory: 1GiB, runtime_reserve: 256MiB, "
                "serve_url: \"http://10.0.0.2:8080\", serve_profile: pi-workers}");
  const fs::path out = dir / "out";
  auto r = build(dir, out);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const fs::path builds = out / "ephemeral" / "httpboot";
  const std::string id = nlohmann::json::parse(test::read_file(builds / "current.json"))["build"].get<std::string>();
  const fs::path build_dir = builds / id;
  const auto manifest = nlohmann::json::parse(test::read_file(build_dir / "ephemeral.json"));
  const std::string root_sha256 = manifest["root"]["sha256"].get<std::string>();

  for (const std::string node : {"n1", "n2"}) {
    INFO("node " << node);
    const fs::path node_dir = build_dir / "nodes" / node;
    const fs::path boot_img = node_dir / "boot.img";
    struct stat st {};
    REQUIRE(::stat(boot_img.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto fsck = test::run("fsck.fat -n " + quoted(boot_img));
    INFO(fsck.output);
    CHECK(fsck.exit_code == 0);

    // The build's boot files (boot/: the partition's without the node-specific ones, our initramfs),
    // then the node's config.txt and its cmdline.txt with the URLs serve would give it over TFTP.
    std::vector<std::string> expected;
    for (const auto& entry : fs::recursive_directory_iterator(build_dir / "boot")) {
      if (entry.is_regular_file()) expected.push_back("::/" + fs::relative(entry.path(), build_dir / "boot").string());
    }
    expected.push_back("::/cmdline.txt");
    expected.push_back("::/config.txt");
    std::vector<std::string> in_image = fat_files(quoted(boot_img));
    std::sort(expected.begin(), expected.end());
    std::sort(in_image.begin(), in_image.end());
    CHECK(in_image == expected);
    for (const std::string& file : expected) {
      INFO(file);
      fs::remove(dir / "b");
      checked("MTOOLS_SKIP_CHECK=1 mcopy -i " + quoted(boot_img) + " '" + file + "' " + quoted(dir / "b"));
      const std::string name = file.substr(3);
      if (name == "cmdline.txt") {
        const std::string url = "http://10.0.0.2:8080/ephemeral/pi-workers/" + id;
        CHECK(test::read_file(dir / "b") == manifest["nodes"][node]["cmdline"].get<std::string>() + " aggrik8s.root=" + url +
                                                "/root.squashfs aggrik8s.root_sha256=" + root_sha256 +
                                                " aggrik8s.identity=" + url + "/identity/" + node + "\n");
      } else if (name == "config.txt") {
        CHECK(test::read_file(dir / "b") == test::read_file(node_dir / "config.txt"));
      } else {
        CHECK(test::read_file(dir / "b") == test::read_file(build_dir / "boot" / name));
      }
    }

    checked("sed -n 's/^rsa2048: //p' " + quoted(node_dir / "boot.sig") + " | xxd -r -p > " + quoted(dir / "sig.bin"));
    CHECK_THAT(checked("openssl dgst -sha256 -verify " + quoted(dir / "pub.pem") + " -signature " + quoted(dir / "sig.bin") +
                       " " + quoted(boot_img)),
               Contains("Verified OK"));
    CHECK(manifest["http_boot"][node]["boot_img"]["sha256"].get<std::string>() ==
          checked("sha256sum " + quoted(boot_img)).substr(0, 64));
  }
  const std::string sums = test::read_file(out / "SHA256SUMS");
  CHECK_THAT(sums, Contains("nodes/n1/boot.img") && Contains("nodes/n2/boot.sig"));
  checked("cd " + quoted(out) + " && sha256sum -c --quiet SHA256SUMS");
}
