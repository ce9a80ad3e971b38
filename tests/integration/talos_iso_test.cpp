// Talos ISO outputs against real tools: the config ISO read back with xorriso and libarchive, the
// remaster's El Torito / MBR / GPT compared before and after, files extracted from the stand-in ISO
// (tests/fixtures/make-talos-iso), and `build` refusing bad input without leaving output behind.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <unistd.h>

#include "builder/talos_iso_image.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;
namespace fs = std::filesystem;

namespace {

// The stand-in ISO, made once per build tree and shared with the e2e scripts (same directory, lock and
// generator stamp as tests/e2e/talos_iso_qemu.sh).
fs::path talos_fixture() {
  static fs::path dir;
  if (!dir.empty()) return dir;
  fs::path fixtures = fs::path(AGGRIK8S_TEST_BINARY_DIR) / "e2e-work" / "fixtures";
  fs::create_directories(fixtures);
  std::string src = test::source_dir().string();
  std::string target = (fixtures / "talos").string();
  std::string script = "set -e; want=$(cat '" + src + "/tests/fixtures/make-talos-iso' '" + src +
                       "/tests/fixtures/lib.sh' | sha256sum | cut -d' ' -f1); ( flock 9; "
                       "if [ \"$(cat '" + target + "/.generator.sha256' 2>/dev/null)\" != \"$want\" ]; then rm -rf '" +
                       target + "'; '" + src + "/tests/fixtures/make-talos-iso' '" + target + "' --quiet && echo \"$want\" >'" +
                       target + "/.generator.sha256'; fi ) 9>'" + (fixtures / "talos.lock").string() + "'";
  fs::path script_file = fixtures / ("make-talos-fixture." + std::to_string(::getpid()) + ".sh");
  test::write_file(script_file, script);
  auto r = test::run("bash '" + script_file.string() + "'");
  fs::remove(script_file);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  dir = target;
  return dir;
}

std::string xorriso_report(const fs::path& iso, const std::string& what) {
  auto r = test::run("xorriso -indev '" + iso.string() + "' " + what + " 2>/dev/null");
  REQUIRE(r.exit_code == 0);
  return r.output;
}

std::vector<std::string> lines_starting(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(prefix)) out.push_back(line);
  }
  return out;
}

// "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4        2122" -> "1 BIOS y none 0x0000 0x00"
// (the load size and LBA change when files move; platform, emulation, segment and type must not).
std::vector<std::string> el_torito_entries(const std::string& report) {
  std::vector<std::string> out;
  for (const auto& line : lines_starting(report, "El Torito boot img :")) {
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    std::string kept;
    for (int i = 0; i < 6 && words >> w; ++i) kept += w + " ";
    out.push_back(kept);
  }
  return out;
}

std::string gpt_efi_partition_size(const std::string& report) {
  // The "EFI boot partition" entry's index, then its size.
  std::string index;
  for (const auto& line : lines_starting(report, "GPT partname local :")) {
    if (line.find("EFI boot partition") != std::string::npos) {
      std::istringstream words(line.substr(line.find(':') + 1));
      words >> index;
    }
  }
  REQUIRE_FALSE(index.empty());
  for (const auto& line : lines_starting(report, "GPT start and size :")) {
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string i, start, size;
    words >> i >> start >> size;
    if (i == index) return size;
  }
  FAIL("no size for the EFI partition");
  return "";
}

std::string cli() { return test::cli_path().string(); }

const char* worker_config = R"(version: v1alpha1
machine:
  type: worker
  token: SECRET-WORKER-TOKEN
  install: {disk: /dev/sda}
cluster:
  controlPlane: {endpoint: "https://10.0.20.10:6443"}
  clusterName: lab
)";

}  // namespace

TEST_CASE("talos: the config ISO has label metal-iso, Joliet, Rock Ridge and config.yaml 0400", "[talos][iso]") {
  test::TempDir dir;
  std::string config = "version: v1alpha1\nmachine: {type: worker}\n";
  write_config_iso(dir / "c.iso", config, {"metal-iso", 1767225600});
  auto toc = test::run("xorriso -indev '" + (dir / "c.iso").string() + "' -toc 2>&1").output;
  CHECK(toc.find("Volume id    : 'metal-iso'") != std::string::npos);
  CHECK(toc.find("ISO offers   : Rock_Ridge Joliet") != std::string::npos);
  auto listing = xorriso_report(dir / "c.iso", "-find / -exec lsdl");
  INFO(listing);
  CHECK(std::regex_search(listing, std::regex(R"(-r-------- +1 0 +0 +42 Jan  1  2026 '/config.yaml')")));
  auto extracted = test::run("cd '" + dir.path().string() + "' && xorriso -osirrox on -indev c.iso -extract /config.yaml out.yaml 2>/dev/null");
  REQUIRE(extracted.exit_code == 0);
  CHECK(test::read_file(dir / "out.yaml") == config);
  CHECK(fs::status(dir / "c.iso").permissions() == fs::perms(0600));
  // Our own reader agrees (libarchive reads the Rock Ridge name).
  CHECK(read_iso_volume_info(dir / "c.iso").volume_id == "metal-iso");
  CHECK(read_iso_volume_info(dir / "c.iso").joliet);
  CHECK(read_iso_text_file(dir / "c.iso", "config.yaml") == config);
  auto blkid = test::run("blkid -o value -s LABEL '" + (dir / "c.iso").string() + "'");
  CHECK(blkid.output == "metal-iso\n");
}

TEST_CASE("talos: config ISOs are reproducible and cost milliseconds", "[talos][iso]") {
  test::TempDir dir;
  std::string config(20000, 'x');
  write_config_iso(dir / "a.iso", config, {"metal-iso", 1767225600});
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) write_config_iso(dir / "b.iso", config, {"metal-iso", 1767225600});
  auto per_iso = (std::chrono::steady_clock::now() - start) / 20;
  CHECK(Sha256::of_file(dir / "a.iso") == Sha256::of_file(dir / "b.iso"));
  CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(per_iso).count() < 50);
}

TEST_CASE("talos: files come out of the stand-in ISO through libarchive", "[talos][iso]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  extract_iso_files(fixture / "metal-amd64.iso", {{"boot/vmlinuz", dir / "vmlinuz"}, {"boot/initramfs.xz", dir / "initramfs.xz"}});
  CHECK(Sha256::of_file(dir / "vmlinuz") == Sha256::of_file(fixture / "vmlinuz-amd64"));
  CHECK(Sha256::of_file(dir / "initramfs.xz") == Sha256::of_file(fixture / "initramfs-amd64.xz"));
  CHECK_THROWS_WITH(extract_iso_files(fixture / "metal-amd64.iso", {{"boot/nothere", dir / "x"}}),
                    Catch::Contains("has no /boot/nothere") && Catch::Contains("not look like a Talos ISO"));
  auto files = list_iso_files(fixture / "metal-amd64.iso");
  CHECK(std::find(files.begin(), files.end(), "boot/grub/grub.cfg") != files.end());
  IsoVolumeInfo info = read_iso_volume_info(fixture / "metal-amd64.iso");
  CHECK(info.volume_id == "TALOS_V1_12_0");
  CHECK(info.modification_date == "2025051500000000");
}

TEST_CASE("talos: a remastered ISO keeps El Torito, the hybrid MBR/GPT and the EFI partition", "[talos][iso]") {
  fs::path input = talos_fixture() / "metal-amd64.iso";
  test::TempDir dir;
  test::write_file(dir / "config.yaml", "version: v1alpha1\n");
  IsoRemaster request{input, dir / "out.iso", {{dir / "config.yaml", "/config.yaml", 0400}}, std::string("metal-iso"), 1767225600};
  remaster_iso(request);
  std::string before = xorriso_report(input, "-report_el_torito plain -report_system_area plain");
  std::string after = xorriso_report(dir / "out.iso", "-report_el_torito plain -report_system_area plain");
  INFO("before:\n" << before << "\nafter:\n" << after);
  CHECK(el_torito_entries(before) == el_torito_entries(after));
  CHECK(el_torito_entries(after).size() == 2);
  CHECK(lines_starting(after, "System area summary: MBR protective-msdos-label grub2-mbr cyl-align-off GPT").size() == 1);
  CHECK(gpt_efi_partition_size(before) == gpt_efi_partition_size(after));
  CHECK(lines_starting(before, "MBR partition      :   1   0x00  0xee").size() == 1);
  CHECK(lines_starting(after, "MBR partition      :   1   0x00  0xee").size() == 1);
  // GRUB finds its root by the volume's date (fs-uuid): it must survive.
  CHECK(read_iso_volume_info(dir / "out.iso").modification_date == "2025051500000000");
  CHECK(read_iso_volume_info(dir / "out.iso").volume_id == "metal-iso");
  CHECK(read_iso_text_file(dir / "out.iso", "config.yaml") == "version: v1alpha1\n");
  // The same inputs and epoch give the same bytes.
  remaster_iso({input, dir / "again.iso", request.files, request.volume_id, request.source_date_epoch});
  CHECK(Sha256::of_file(dir / "out.iso") == Sha256::of_file(dir / "again.iso"));
  // An input that is not an ISO fails with a message, not a crash, and leaves no output.
  test::write_file(dir / "junk.iso", std::string(100000, 'j'));
  CHECK_THROWS_AS(remaster_iso({dir / "junk.iso", dir / "bad.iso", {}, std::nullopt, std::nullopt}), Error);
  CHECK_FALSE(fs::exists(dir / "bad.iso"));
}

TEST_CASE("talos: build refuses bad Talos input with a clear error and writes nothing", "[talos][cli]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  std::string iso_sha = Sha256::of_file(fixture / "metal-amd64.iso").hex();
  auto profile = [&](const std::string& talos_extra, const std::string& nodes) {
    return "kind: talos-iso\nname: bad\ntalos:\n  iso: {path: " + (fixture / "metal-amd64.iso").string() +
           ", sha256: " + iso_sha + "}\n  config: {file: worker.yaml}\n  outputs: [config-iso, iso]\n" + talos_extra +
           "nodes:\n" + nodes;
  };
  auto build_fails = [&](const std::string& name, const std::string& text, const std::string& message) {
    test::write_file(dir / (name + ".yaml"), text);
    fs::path out = dir / ("out-" + name);
    auto r = test::run(cli() + " build --cache-dir '" + (dir / "cache").string() + "' --out '" + out.string() + "' '" +
                       (dir / (name + ".yaml")).string() + "'");
    INFO(name << ": " << r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find(message) != std::string::npos);
    CHECK(r.output.find("SECRET-WORKER-TOKEN") == std::string::npos);
    bool empty = !fs::exists(out) || fs::is_empty(out);
    CHECK(empty);
  };
  build_fails("checksum",
              "kind: talos-iso\nname: c\ntalos:\n  iso: {path: " + (fixture / "metal-amd64.iso").string() +
                  ", sha256: " + std::string(64, '0') + "}\n  config: {file: worker.yaml}\n  outputs: [iso]\nnodes:\n  - name: w1\n",
              "sha256");
  build_fails("patch", profile("", "  - name: w1\n    patches:\n      - json6902: [{op: remove, path: /machine/kubelet}]\n"),
              "patch.yaml:10:20: node w1: ");
  build_fails("patch", profile("", "  - name: w1\n    patches:\n      - json6902: [{op: remove, path: /machine/kubelet}]\n"),
              "json6902[0] (remove /machine/kubelet): no key 'kubelet' in /machine");
  build_fails("type", profile("", "  - name: w1\n    patches:\n      - merge: {machine: {type: controlplane}}\n"),
              "w1/machine.type: patches change machine.type from 'worker' to 'controlplane'");
  std::string long_arg = "x=" + std::string(4000, 'a');
  build_fails("cmdline", profile("", "  - name: w1\n    kernel_args: [" + long_arg + "]\n"),
              "w1/kernel_args: iso: the kernel command line is");
  // A config ISO is an ISO but not a Talos ISO.
  write_config_iso(dir / "notalos.iso", worker_config, {"metal-iso", 1767225600});
  build_fails("notalos",
              "kind: talos-iso\nname: n\ntalos:\n  version: v1.12.0\n  iso: {path: notalos.iso}\n  config: {file: worker.yaml}\n"
              "  outputs: [iso]\nnodes:\n  - name: w1\n",
              "no /boot/vmlinuz in the ISO: this is not a Talos ISO");
}

TEST_CASE("talos: netboot from a kernel + initramfs pair needs no ISO", "[talos][cli]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  auto profile = [&](const std::string& version) {
    return "kind: talos-iso\nname: nb\ntalos:\n" + version + "  kernel: {path: " + (fixture / "vmlinuz-amd64").string() +
           "}\n  initramfs: {path: " + (fixture / "initramfs-amd64.xz").string() +
           "}\n  config: {file: worker.yaml}\n  outputs: [netboot]\n  netboot_url: http://10.0.0.2:8080/t/\n"
           "nodes:\n  - name: w1\n    uuid: 7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51\n";
  };
  test::write_file(dir / "noversion.yaml", profile(""));
  auto r = test::run(cli() + " build --out '" + (dir / "out0").string() + "' '" + (dir / "noversion.yaml").string() + "'");
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("the Talos version is unknown (no ISO to read it from): set 'talos.version'") != std::string::npos);

  test::write_file(dir / "nb.yaml", profile("  version: v1.13.0\n"));
  r = test::run(cli() + " build --out '" + (dir / "out").string() + "' '" + (dir / "nb.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  fs::path node = dir / "out" / "netboot" / "w1";
  CHECK(Sha256::of_file(node / "vmlinuz") == Sha256::of_file(fixture / "vmlinuz-amd64"));
  CHECK(fs::hard_link_count(fixture / "vmlinuz-amd64") == 1);  // the input is not linked into the output
  CHECK(fs::status(node / "config.yaml").permissions() == fs::perms(0600));
  std::string script = test::read_file(node / "boot.ipxe");
  CHECK(script.find(" module.sig_enforce=1 proc_mem.force_override=never talos.config=http://10.0.0.2:8080/t/w1/config.yaml "
                    "initrd=initramfs.xz\n") != std::string::npos);
  CHECK(test::read_file(node / "config.yaml").find("hostname: \"w1\"") != std::string::npos);
  auto manifest = nlohmann::json::parse(test::read_file(dir / "out" / "manifest.json"));
  CHECK(manifest["nodes"][0]["uuid"] == "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51");
  CHECK(manifest["talos_version"]["version"] == "v1.13.0");
}

TEST_CASE("talos: an input ISO that already has talos.config=metal-iso is the shared boot ISO", "[talos][cli]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  // An ISO as Image Factory makes it with extraKernelArgs: [talos.config=metal-iso].
  std::string grub = read_iso_text_file(fixture / "metal-amd64.iso", "boot/grub/grub.cfg");
  grub = std::regex_replace(grub, std::regex("(linux /boot/vmlinuz [^\\n]*)"), "$1 talos.config=metal-iso");
  test::write_file(dir / "grub.cfg", grub);
  remaster_iso({fixture / "metal-amd64.iso", dir / "factory.iso", {{dir / "grub.cfg", "/boot/grub/grub.cfg", 0444}},
                std::nullopt, 1767225600});
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: f\ntalos:\n  iso: {path: factory.iso}\n  config: {file: worker.yaml}\n"
                                   "  outputs: [config-iso]\nnodes:\n  - name: w1\n  - name: w2\n");
  auto r = test::run(cli() + " build --out '" + (dir / "out").string() + "' '" + (dir / "p.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_FALSE(fs::exists(dir / "out" / "talos-metal-iso.iso"));
  CHECK(fs::exists(dir / "out" / "w1-config.iso"));
  CHECK(fs::exists(dir / "out" / "w2-config.iso"));
  auto manifest = nlohmann::json::parse(test::read_file(dir / "out" / "manifest.json"));
  CHECK_FALSE(manifest.contains("shared_boot_iso"));
  CHECK(test::read_file(dir / "out" / "SHA256SUMS").find("w2-config.iso") != std::string::npos);
}

TEST_CASE("talos: an ISO that boots UEFI through a UKI gets a warning about its command line", "[talos][cli]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  test::write_file(dir / "uki.efi", "MZ stand-in UKI");
  remaster_iso({fixture / "metal-amd64.iso", dir / "sdboot.iso", {{dir / "uki.efi", "/EFI/Linux/Talos-v1.12.0.efi", 0444}},
                std::nullopt, 1767225600});
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: u\ntalos:\n  iso: {path: sdboot.iso}\n  config: {file: worker.yaml}\n"
                                   "  outputs: [iso]\nnodes:\n  - name: w1\n");
  auto r = test::run(cli() + " build --out '" + (dir / "out").string() + "' '" + (dir / "p.yaml").string() + "'");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("warning: the ISO boots UEFI through systemd-boot and a UKI") != std::string::npos);
}
