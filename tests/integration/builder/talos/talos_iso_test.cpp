// Talos ISO outputs against real tools: the config ISO read back with xorriso and libarchive, the
// remaster's El Torito / MBR / GPT compared before and after, files extracted from the stand-in ISO
// (tests/fixtures/make-talos-iso, a dual-boot ISO), the edited UKI read back with objcopy/objdump from
// the ISO tree and with mtools from the EFI partition, the embedded-config extension unpacked with
// zstd/cpio/unsquashfs, and `build` refusing bad input without leaving output behind.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <unistd.h>

#include "builder/talos/iso_variant.hpp"
#include "builder/talos/pe_image.hpp"
#include "builder/talos/talos_extension_image.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "builder/talos/uki_image.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
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

// "start size" of the GPT entry of type EFI System (as xorriso prints the GUID's bytes).
std::string gpt_efi_partition(const std::string& report, bool with_start = false) {
  std::string index;
  for (const auto& line : lines_starting(report, "GPT type GUID      :")) {
    if (line.find("28732ac11ff8d211ba4b00a0c93ec93b") != std::string::npos) {
      std::istringstream words(line.substr(line.find(':') + 1));
      words >> index;
    }
  }
  REQUIRE_FALSE(index.empty());
  for (const auto& line : lines_starting(report, "GPT start and size :")) {
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string i, start, size;
    words >> i >> start >> size;
    if (i == index) return with_start ? start + " " + size : size;
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

// worker.yaml (0600) and p.yaml: the stand-in ISO's `iso` output with console=ttyS0, for `nodes`.
void write_iso_profile(const test::TempDir& dir, const fs::path& input, const std::string& nodes) {
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: v\ntalos:\n  iso: {path: " + input.string() +
                                       "}\n  config: {file: worker.yaml}\n  outputs: [iso]\n  kernel_args: [console=ttyS0]\n"
                                       "nodes:\n" + nodes);
}

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

TEST_CASE("talos: a config ISO replaces a leftover file or symlink of its name, never writing through it", "[talos][iso]") {
  // A 0644 .partial left by another run kept its mode under O_TRUNC (the PKI world-readable), and a
  // symlink there was followed out of the output directory.
  test::TempDir dir;
  std::string config = "version: v1alpha1\nmachine: {type: worker, token: secret}\n";
  test::write_file(dir / "left.iso.partial", "old");
  fs::permissions(dir / "left.iso.partial", fs::perms(0644));
  write_config_iso(dir / "left.iso.partial", config, {"metal-iso", 1767225600});
  CHECK(fs::status(dir / "left.iso.partial").permissions() == fs::perms(0600));
  test::write_file(dir / "outside", "not yours");
  fs::create_symlink(dir / "outside", dir / "link.iso.partial");
  write_config_iso(dir / "link.iso.partial", config, {"metal-iso", 1767225600});
  CHECK(test::read_file(dir / "outside") == "not yours");
  CHECK_FALSE(fs::is_symlink(dir / "link.iso.partial"));
  CHECK(fs::status(dir / "link.iso.partial").permissions() == fs::perms(0600));
  CHECK(read_iso_text_file(dir / "link.iso.partial", "config.yaml") == config);
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
  // Read whole as bytes (the libarchive fallback of TalosIsoUkis::read), a file of several MiB.
  std::vector<std::uint8_t> kernel = read_iso_file(fixture / "metal-amd64.iso", "boot/vmlinuz");
  CHECK(Sha256::of(std::span<const std::uint8_t>(kernel)) == Sha256::of_file(fixture / "vmlinuz-amd64"));
  CHECK_THROWS_WITH(read_iso_file(fixture / "metal-amd64.iso", "boot/nothere"), Catch::Contains("has no /boot/nothere"));
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
  CHECK(gpt_efi_partition(before) == gpt_efi_partition(after));
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
  // A FIFO as the ISO: refused as fetch refuses it, not read (and blocked on) before fetch looks at it.
  REQUIRE(::mkfifo((dir / "iso.fifo").c_str(), 0600) == 0);
  build_fails("fifo",
              "kind: talos-iso\nname: f\ntalos:\n  iso: {path: " + (dir / "iso.fifo").string() +
                  "}\n  config: {file: worker.yaml}\n  outputs: [iso]\nnodes:\n  - name: w1\n",
              "not a regular file");
  build_fails("patch", profile("", "  - name: w1\n    patches:\n      - json6902: [{op: remove, path: /machine/kubelet}]\n"),
              "patch.yaml:10:20: node w1: ");
  build_fails("patch", profile("", "  - name: w1\n    patches:\n      - json6902: [{op: remove, path: /machine/kubelet}]\n"),
              "json6902[0] (remove /machine/kubelet): no key 'kubelet' in /machine");
  build_fails("type", profile("", "  - name: w1\n    patches:\n      - merge: {machine: {type: controlplane}}\n"),
              "w1/machine.type: patches change machine.type from 'worker' to 'controlplane'");
  // The issue's node: a ~2,900-byte line fits the 4,096 bytes once assumed, but the stand-in's kernel
  // (Debian's, like Talos') keeps 2,047 and would have lost talos.config=metal-iso. Build and validate
  // (which reads a local ISO) refuse it with the byte counts.
  std::string long_arg = "x=" + std::string(2600, 'a');
  std::string long_profile = profile("", "  - name: w1\n    kernel_args: [" + long_arg + "]\n");
  const std::string expected = "w1/kernel_args: iso: kernel command line for node w1 (GRUB menu entry 1) is ";
  build_fails("cmdline", long_profile, expected);
  build_fails("cmdline", long_profile,
              "bytes with GRUB's prefix 'BOOT_IMAGE=/boot/vmlinuz '; the kernel in " + (fixture / "metal-amd64.iso").string() +
                  ":/boot/vmlinuz keeps at most 2,047 (setup header cmdline_size at 0x238, boot protocol 2.");
  build_fails("cmdline", long_profile, "and the 1 argument(s) after it would be lost");
  // The UKI's kernel (its .linux section) is read too.
  build_fails("cmdline", long_profile, "w1/kernel_args: iso: kernel command line for node w1 (UKI) is ");
  build_fails("cmdline", long_profile, "through systemd-stub (UKI .cmdline); the kernel in " + (fixture / "metal-amd64.iso").string() +
                                           ":/EFI/Linux/Talos-v1.12.0.efi (.linux) keeps at most 2,047");
  auto validated = test::run(cli() + " validate '" + (dir / "cmdline.yaml").string() + "'");
  INFO(validated.output);
  CHECK(validated.exit_code == 1);
  CHECK_THAT(validated.output, Catch::Contains(expected));
  CHECK_THAT(validated.output, Catch::Contains("keeps at most 2,047 (setup header cmdline_size at 0x238"));
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
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: f\ntalos:\n  iso: {path: factory.iso}\n  config: {file: worker.yaml}\n"
                                   "  outputs: [config-iso]\nnodes:\n  - name: w1\n  - name: w2\n");
  IsoRemaster factory{fixture / "metal-amd64.iso", dir / "factory.iso", {{dir / "grub.cfg", "/boot/grub/grub.cfg", 0444}},
                      std::nullopt, 1767225600};

  // GRUB's entries have the argument, the UKI (UEFI boots) does not: a shared boot ISO is still needed.
  remaster_iso(factory);
  auto r = test::run(cli() + " build --out '" + (dir / "out-grub-only").string() + "' '" + (dir / "p.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(dir / "out-grub-only" / "talos-metal-iso.iso"));

  // With the UKI's command line edited too (in the tree and in the EFI partition, with mtools).
  std::string uki = read_iso_text_file(fixture / "metal-amd64.iso", "EFI/Linux/Talos-v1.12.0.efi");
  EditedUki edited = edit_uki(std::vector<std::uint8_t>(uki.begin(), uki.end()), {{"talos.config=metal-iso"}, {}});
  test::write_file(dir / "uki.efi", std::string(edited.image.begin(), edited.image.end()));
  factory.files.push_back({dir / "uki.efi", "/EFI/Linux/Talos-v1.12.0.efi", 0444});
  factory.efi_partition = find_iso_efi_partition(fixture / "metal-amd64.iso");
  REQUIRE(factory.efi_partition);
  factory.efi_partition_image = dir / "esp.img";
  extract_iso_efi_partition(fixture / "metal-amd64.iso", *factory.efi_partition, factory.efi_partition_image);
  auto mcopy = test::run("MTOOLS_SKIP_CHECK=1 mcopy -o -i '" + factory.efi_partition_image.string() + "' '" +
                         (dir / "uki.efi").string() + "' ::/EFI/Linux/Talos-v1.12.0.efi");
  REQUIRE(mcopy.exit_code == 0);
  remaster_iso(factory);
  r = test::run(cli() + " build --out '" + (dir / "out").string() + "' '" + (dir / "p.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_FALSE(fs::exists(dir / "out" / "talos-metal-iso.iso"));
  CHECK(fs::exists(dir / "out" / "w1-config.iso"));
  CHECK(fs::exists(dir / "out" / "w2-config.iso"));
  auto manifest = nlohmann::json::parse(test::read_file(dir / "out" / "manifest.json"));
  CHECK_FALSE(manifest.contains("shared_boot_iso"));
  CHECK(test::read_file(dir / "out" / "SHA256SUMS").find("w2-config.iso") != std::string::npos);
}

TEST_CASE("talos: a dual-boot ISO's UKI gets the node's arguments in the tree and in the EFI partition", "[talos][cli][uki]") {
  fs::path fixture = talos_fixture();
  fs::path input = fixture / "metal-amd64.iso";
  test::TempDir dir;
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: u\ntalos:\n  iso: {path: " + input.string() +
                                       "}\n  config: {file: worker.yaml}\n  outputs: [iso]\nnodes:\n  - name: w1\n"
                                       "    kernel_args: [console=ttyS0, uki.test=w1]\n");
  auto r = test::run("SOURCE_DATE_EPOCH=1767225600 " + cli() + " build --out '" + (dir / "out").string() + "' '" +
                     (dir / "p.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  fs::path iso = dir / "out" / "w1.iso";
  const std::string want = " console=ttyS0 uki.test=w1 talos.config=metal-iso";

  // The copy in the ISO tree, read back with binutils (objcopy's own PE reader).
  std::string tree_uki = read_iso_text_file(iso, "EFI/Linux/Talos-v1.12.0.efi");
  test::write_file(dir / "tree.efi", tree_uki);
  REQUIRE(test::run("objcopy -O binary --only-section=.cmdline '" + (dir / "tree.efi").string() + "' '" +
                    (dir / "tree.cmdline").string() + "'").exit_code == 0);
  std::string tree_cmdline = test::read_file(dir / "tree.cmdline");
  CHECK(tree_cmdline.starts_with("talos.platform=metal "));
  CHECK(tree_cmdline.ends_with(want));
  auto headers = test::run("objdump -h '" + (dir / "tree.efi").string() + "'");
  CHECK(headers.exit_code == 0);
  CHECK(headers.output.find("pei-x86-64") != std::string::npos);

  // The copy systemd-boot boots: in the appended EFI partition, read with mtools.
  auto esp = find_iso_efi_partition(iso);
  REQUIRE(esp);
  std::string image = "'" + iso.string() + "@@" + std::to_string(esp->offset) + "'";
  REQUIRE(test::run("MTOOLS_SKIP_CHECK=1 mcopy -n -i " + image + " ::/EFI/Linux/Talos-v1.12.0.efi '" + (dir / "esp.efi").string() + "'").exit_code == 0);
  CHECK(test::read_file(dir / "esp.efi") == tree_uki);
  CHECK(test::run("MTOOLS_SKIP_CHECK=1 mtype -i " + image + " ::/loader/loader.conf").output.find("timeout") != std::string::npos);
  extract_iso_efi_partition(iso, *esp, dir / "esp.img");
  auto check = test::run("fsck.vfat -n '" + (dir / "esp.img").string() + "'");
  INFO(check.output);
  CHECK(check.exit_code == 0);
  // The embedded config (>= 1.12): the `embedded-config` extension archive, appended to the UKI's
  // initramfs as GRUB loads it second; unpacked here with zstd and cpio, the squashfs read with unsquashfs.
  std::vector<std::uint8_t> bytes(tree_uki.begin(), tree_uki.end());
  std::string initrd;
  for (const auto& s : parse_pe(bytes).sections) {
    if (s.name == ".initrd") {
      auto c = pe_section_contents(bytes, s);
      initrd.assign(c.begin(), c.end());
    }
  }
  std::string original = test::read_file(fixture / "initramfs-amd64.xz");
  REQUIRE(initrd.starts_with(original));
  std::string grub_segment = read_iso_text_file(iso, "boot/embedded-config.cpio.zst");
  // GRUB's file is the archive zero-padded to whole ISO blocks; the UKI's section is padded further,
  // to 4 bytes short of whole 4 KiB (the kernel skips zeros between archives).
  CHECK(grub_segment.size() % 2048 == 0);
  std::string appended = initrd.substr((original.size() + 3) / 4 * 4);
  CHECK(appended.substr(0, grub_segment.size()) == grub_segment);
  CHECK(appended.find_first_not_of('\0', grub_segment.size()) == std::string::npos);
  CHECK((initrd.size() + 4) % 4096 == 0);
  test::write_file(dir / "segment.zst", grub_segment);
  fs::create_directories(dir / "unpacked");
  auto unpack = test::run("cd '" + (dir / "unpacked").string() + "' && zstd -dc ../segment.zst | cpio -id --quiet && ls -l && cat extensions.yaml && "
                          "unsquashfs -lln 0.sqsh && unsquashfs -d root -no-progress 0.sqsh >/dev/null");
  INFO(unpack.output);
  REQUIRE(unpack.exit_code == 0);
  auto manifest_json = nlohmann::json::parse(test::read_file(dir / "out" / "manifest.json"));
  std::string sha = manifest_json["nodes"][0]["config_sha256"];
  CHECK(unpack.output.find("    - image: '0.sqsh'\n      metadata:\n        name: 'embedded-config'\n        version: '" + sha + "'") !=
        std::string::npos);
  CHECK(std::regex_search(unpack.output, std::regex(R"(-r-------- 0/0 +[0-9]+ [^\n]* squashfs-root/usr/local/etc/talos/config.yaml)")));
  CHECK(Sha256::of_file(dir / "unpacked" / "root/usr/local/etc/talos/config.yaml").hex() == sha);
  CHECK(manifest_json["nodes"][0]["outputs"]["iso"]["embedded_config"]["version"] == sha);

  // The boot set-up: the El Torito UEFI entry still boots the (rewritten) EFI partition.
  std::string before = xorriso_report(input, "-report_el_torito plain -report_system_area plain");
  std::string after = xorriso_report(iso, "-report_el_torito plain -report_system_area plain");
  INFO("before:\n" << before << "\nafter:\n" << after);
  CHECK(el_torito_entries(before) == el_torito_entries(after));
  CHECK(gpt_efi_partition(before) == gpt_efi_partition(after));
  std::istringstream words(gpt_efi_partition(after, true));
  std::uint64_t start = 0;
  words >> start;
  CHECK(start * 512 == esp->offset);
  bool uefi_entry_at_partition = false;
  for (const auto& line : lines_starting(after, "El Torito boot img :")) {
    std::istringstream w(line.substr(line.find(':') + 1));
    std::string n, platform, b, emul, seg, hdpt, size, lba;
    w >> n >> platform >> b >> emul >> seg >> hdpt >> size >> lba;
    if (platform == "UEFI") uefi_entry_at_partition = std::stoull(lba) * 2048 == esp->offset;
  }
  CHECK(uefi_entry_at_partition);
  auto manifest = nlohmann::json::parse(test::read_file(dir / "out" / "manifest.json"));
  auto uefi = manifest["nodes"][0]["outputs"]["iso"]["uefi"];
  CHECK(uefi["bootloader"] == "systemd-boot");
  CHECK(uefi["secure_boot_signature"] == "none");
  CHECK(uefi["kernel_args"].get<std::string>().ends_with(want));
  CHECK(r.output.find("SECRET-WORKER-TOKEN") == std::string::npos);
}

TEST_CASE("talos: inspect reads a Talos ISO as one: version, every boot entry's command line, the config's size only",
          "[talos][cli][inspect]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: i\ntalos:\n  iso: {path: " + (fixture / "metal-amd64.iso").string() +
                                       "}\n  config: {file: worker.yaml}\n  outputs: [iso, config-iso]\nnodes:\n"
                                       "  - name: w1\n    kernel_args: [console=ttyS0, inspect.test=w1]\n  - name: w2\n");
  auto r = test::run("SOURCE_DATE_EPOCH=1767225600 " + cli() + " build --out '" + (dir / "out").string() + "' '" +
                     (dir / "p.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);

  // The input ISO: Talos' four boot entries (two GRUB entries, the UKI in the tree and in the EFI
  // partition), no config, and none of the Pi image's checks (no FAT boot partition, no ext4 root).
  auto input = test::run(cli() + " inspect --strict '" + (fixture / "metal-amd64.iso").string() + "'");
  INFO(input.output);
  CHECK(input.exit_code == 0);
  CHECK_THAT(input.output, Catch::Contains("Talos ISO") && Catch::Contains("version          v1.12.0") &&
                               Catch::Contains("boot entries (4)") && Catch::Contains("GRUB menu entry 2: ") &&
                               Catch::Contains("EFI partition 2:/EFI/Linux/Talos-v1.12.0.efi: ") &&
                               Catch::Contains("config.yaml      absent") && Catch::Contains("warnings: none"));
  CHECK_THAT(input.output, !Catch::Contains("ext4") && !Catch::Contains("cmdline.txt"));

  // A node's ISO: its arguments in every entry, the config's size (the machine config, never shown).
  auto node = test::run(cli() + " inspect --json '" + (dir / "out" / "w1.iso").string() + "'");
  INFO(node.output);
  REQUIRE(node.exit_code == 0);
  CHECK(node.output.find("SECRET-WORKER-TOKEN") == std::string::npos);
  auto report = nlohmann::json::parse(node.output);
  CHECK(report["image"]["kind"] == "talos-iso");
  CHECK(report["talos"]["version"] == "v1.12.0 (from /EFI/Linux/Talos-v1.12.0.efi)");
  REQUIRE(report["boot_entries"].size() == 4);
  for (const auto& entry : report["boot_entries"]) {
    std::string line = entry["command_line"];
    CHECK_THAT(line, Catch::EndsWith(" console=ttyS0 inspect.test=w1 talos.config=metal-iso"));
    CHECK(entry["bytes"] == line.size());
    CHECK(entry["kernel_keeps"] == 2047);
  }
  CHECK(report["config"]["config_yaml_bytes"] == read_iso_text_file(dir / "out" / "w1.iso", "config.yaml").size());
  CHECK(report["config"]["embedded_config_bytes"].is_number());
  CHECK(report["warnings"].empty());

  // The shared boot ISO asks for a config ISO beside it: said as a warning (--strict fails on it).
  auto shared = test::run(cli() + " inspect --strict '" + (dir / "out" / "talos-metal-iso.iso").string() + "'");
  INFO(shared.output);
  CHECK(shared.exit_code == 1);
  CHECK_THAT(shared.output, Catch::Contains("has talos.config=metal-iso but this ISO has no /config.yaml: the node needs a "
                                            "config ISO (volume label metal-iso) attached beside it"));
  CHECK(test::run(cli() + " inspect --deep '" + (dir / "out" / "w1.iso").string() + "'").exit_code == 2);

  // The config ISO beside it: the metal-iso volume, its config.yaml's size.
  auto config = test::run(cli() + " inspect --json '" + (dir / "out" / "w2-config.iso").string() + "'");
  INFO(config.output);
  REQUIRE(config.exit_code == 0);
  CHECK(config.output.find("SECRET-WORKER-TOKEN") == std::string::npos);
  auto config_report = nlohmann::json::parse(config.output);
  CHECK(config_report["image"]["kind"] == "talos-config-iso");
  CHECK(config_report["talos"]["volume_id"] == "metal-iso");
  CHECK(config_report["boot_entries"].empty());
  CHECK(config_report["config"]["config_yaml_bytes"] == read_iso_text_file(dir / "out" / "w2-config.iso", "config.yaml").size());

  // An ISO with Talos' file names but neither a kernel nor a GRUB entry inspect can read: reported,
  // each problem a warning, not a failure.
  fs::create_directories(dir / "odd" / "boot" / "grub");
  test::write_file(dir / "odd" / "boot" / "vmlinuz", "not a kernel");
  test::write_file(dir / "odd" / "boot" / "grub" / "grub.cfg", "menuentry x {\n}\n");
  REQUIRE(test::run("xorriso -as mkisofs -quiet -R -o '" + (dir / "odd.iso").string() + "' '" + (dir / "odd").string() + "'")
              .exit_code == 0);
  auto odd = test::run(cli() + " inspect '" + (dir / "odd.iso").string() + "'");
  INFO(odd.output);
  CHECK(odd.exit_code == 0);
  CHECK_THAT(odd.output, Catch::Contains("boot entries (0)") && Catch::Contains("warnings (1)") &&
                             Catch::Contains("GRUB (/boot/grub/grub.cfg, /boot/vmlinuz): "));
}

TEST_CASE("talos: extensions already in the ISO's initramfs stay listed next to the embedded config", "[talos][cli][extensions]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  // An initramfs as Talos' imager rebuilds it with an extension: an uncompressed archive first (early
  // microcode), Talos' initramfs.xz, then zstd(newc{0.sqsh, extensions.yaml}); made with the real tools.
  std::string d = dir.path().string();
  auto made = test::run("set -e; cd '" + d + "'; mkdir -p ext/rootfs/usr/local/lib/containers/qemu-guest-agent ucode/kernel/x86/microcode seg;"
                        "echo agent >ext/rootfs/usr/local/lib/containers/qemu-guest-agent/README;"
                        "mksquashfs ext/rootfs seg/0.sqsh -all-root -noappend -no-progress -quiet -comp zstd >/dev/null;"
                        "printf 'layers:\\n    - image: 0.sqsh\\n      metadata:\\n        name: qemu-guest-agent\\n        version: 10.0.2\\n"
                        "        author: Sidero Labs\\n        description: agent\\n        compatibility:\\n            talos:\\n"
                        "                version: \">= v1.0.0\"\\n' >seg/extensions.yaml;"
                        "(cd seg && printf '0.sqsh\\nextensions.yaml\\n' | cpio -H newc -o --quiet -R +0:+0 | zstd -q -19 -c) >ext.cpio.zst;"
                        "echo ucode >ucode/kernel/x86/microcode/GenuineIntel.bin;"
                        "(cd ucode && find kernel | cpio -H newc -o --quiet -R +0:+0) >ucode.cpio;"
                        "cat ucode.cpio '" + (fixture / "initramfs-amd64.xz").string() + "' ext.cpio.zst >initramfs.xz");
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
  std::string initramfs = test::read_file(dir / "initramfs.xz");
  auto layers = initramfs_extension_layers(initramfs, "initramfs.xz");
  REQUIRE(layers.size() == 1);
  CHECK(layers[0].name == "qemu-guest-agent");
  CHECK(layers[0].image == "0.sqsh");
  CHECK(layers[0].talos_version == ">= v1.0.0");
  CHECK(initramfs_extension_layers(test::read_file(fixture / "initramfs-amd64.xz"), "plain").empty());
  CHECK_THROWS_WITH(initramfs_extension_layers(initramfs.substr(0, initramfs.size() - 20), "cut.xz"),
                    Catch::Contains("cannot read the initramfs cut.xz at offset"));
  CHECK_THROWS_WITH(initramfs_extension_layers(initramfs + "garbage", "junk.xz"),
                    Catch::Contains("cannot read the initramfs junk.xz at offset " + std::to_string(initramfs.size()) +
                                    ": neither a newc archive nor xz nor zstd data"));

  remaster_iso({fixture / "metal-amd64.iso", dir / "factory.iso", {{dir / "initramfs.xz", "/boot/initramfs.xz", 0444}},
                std::nullopt, 1767225600});
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: x\ntalos:\n  iso: {path: factory.iso}\n  config: {file: worker.yaml}\n"
                                   "  outputs: [iso]\nnodes:\n  - name: w1\n");
  auto r = test::run(cli() + " build --out '" + (dir / "out").string() + "' '" + (dir / "p.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("the ISO's initramfs has system extension qemu-guest-agent 10.0.2: kept") != std::string::npos);
  test::write_file(dir / "segment.zst", read_iso_text_file(dir / "out" / "w1.iso", "boot/embedded-config.cpio.zst"));
  fs::create_directories(dir / "unpacked");
  auto unpack = test::run("cd '" + (dir / "unpacked").string() + "' && zstd -dc ../segment.zst | cpio -id --quiet && ls && cat extensions.yaml");
  INFO(unpack.output);
  REQUIRE(unpack.exit_code == 0);
  auto listed = parse_talos_extensions_yaml(test::read_file(dir / "unpacked" / "extensions.yaml"));
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].name == "qemu-guest-agent");
  CHECK(listed[0].image == "0.sqsh");
  CHECK(listed[1].name == "embedded-config");
  CHECK(listed[1].image == "1.sqsh");
  CHECK(fs::exists(dir / "unpacked" / "1.sqsh"));
  CHECK_FALSE(fs::exists(dir / "unpacked" / "0.sqsh"));  // the ISO's own 0.sqsh is not overwritten

  // The list is kept in the cache by the ISO's SHA-256; a later build takes it from there, and writes
  // the same ISO.
  std::string factory_sha = test::run("sha256sum '" + (dir / "factory.iso").string() + "' | cut -c1-64").output.substr(0, 64);
  fs::path record = dir / "cache" / "talos-extensions" / (factory_sha + ".json");
  for (const std::string out : {"cached1", "cached2"}) {
    auto built = test::run("SOURCE_DATE_EPOCH=1767225600 " + cli() + " build --cache-dir '" + (dir / "cache").string() + "' --out '" +
                           (dir / out).string() + "' '" + (dir / "p.yaml").string() + "'");
    INFO(built.output);
    REQUIRE(built.exit_code == 0);
    CHECK(built.output.find("system extension qemu-guest-agent 10.0.2: kept") != std::string::npos);
    REQUIRE(fs::exists(record));
  }
  auto kept = nlohmann::json::parse(test::read_file(record));
  CHECK(kept["layers"][0]["name"] == "qemu-guest-agent");
  CHECK(kept["layers"][0]["talos_version"] == ">= v1.0.0");
  CHECK(test::read_file(dir / "cached1" / "w1.iso") == test::read_file(dir / "cached2" / "w1.iso"));
  // A pinned sha256 the ISO does not have: the build fails at fetch, and nothing is recorded under it.
  std::string wrong(64, 'a');
  test::write_file(dir / "pinned.yaml", "kind: talos-iso\nname: x\ntalos:\n  iso: {path: factory.iso, sha256: " + wrong +
                                            "}\n  config: {file: worker.yaml}\n  outputs: [iso]\nnodes:\n  - name: w1\n");
  auto refused = test::run(cli() + " build --cache-dir '" + (dir / "cache").string() + "' --out '" + (dir / "pinned").string() +
                           "' '" + (dir / "pinned.yaml").string() + "' 2>&1");
  INFO(refused.output);
  CHECK(refused.exit_code != 0);
  CHECK_FALSE(fs::exists(dir / "cache" / "talos-extensions" / (wrong + ".json")));
}

TEST_CASE("talos: a signed UKI is written unsigned with a warning, and the manifest says so", "[talos][cli][uki]") {
  fs::path fixture = talos_fixture();
  test::TempDir dir;
  // The fixture's UKI with an Authenticode-shaped certificate table at its end (data directory 4).
  std::string uki = read_iso_text_file(fixture / "metal-amd64.iso", "EFI/Linux/Talos-v1.12.0.efi");
  std::vector<std::uint8_t> bytes(uki.begin(), uki.end());
  PeLayout layout = parse_pe(bytes);
  auto cert_at = static_cast<std::uint32_t>(bytes.size());
  bytes.resize(bytes.size() + 0x400, 0x5a);
  std::size_t directory = layout.optional_offset + 112 + 4 * 8;
  for (int i = 0; i < 4; ++i) {
    bytes[directory + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(cert_at >> (8 * i));
    bytes[directory + 4 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(0x400 >> (8 * i));
  }
  REQUIRE(parse_pe(bytes).signed_image());
  test::write_file(dir / "signed.efi", std::string(bytes.begin(), bytes.end()));
  remaster_iso({fixture / "metal-amd64.iso", dir / "signed.iso", {{dir / "signed.efi", "/EFI/Linux/Talos-v1.12.0.efi", 0444}},
                std::nullopt, 1767225600});
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: s\ntalos:\n  iso: {path: signed.iso}\n  config: {file: worker.yaml}\n"
                                   "  outputs: [iso]\nnodes:\n  - name: w1\n");
  auto r = test::run(cli() + " build --out '" + (dir / "out").string() + "' '" + (dir / "p.yaml").string() + "'");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("warning: the ISO's UKI is signed for Secure Boot; editing its command line voids the signature") !=
        std::string::npos);
  std::string out = read_iso_text_file(dir / "out" / "w1.iso", "EFI/Linux/Talos-v1.12.0.efi");
  test::write_file(dir / "out.efi", out);
  CHECK_FALSE(parse_pe(std::vector<std::uint8_t>(out.begin(), out.end())).signed_image());
  auto headers = test::run("objdump -p '" + (dir / "out.efi").string() + "'");
  CHECK(std::regex_search(headers.output, std::regex("Entry 4 0+ 0+ Security Directory")));
  auto manifest = nlohmann::json::parse(test::read_file(dir / "out" / "manifest.json"));
  CHECK(manifest["nodes"][0]["outputs"]["iso"]["uefi"]["secure_boot_signature"] == "removed");
}

TEST_CASE("talos: nodes' ISOs written as variants of the first are byte for byte their own builds", "[talos][cli][variant]") {
  fs::path input = talos_fixture() / "metal-amd64.iso";
  test::TempDir dir;
  // w2 differs from w1 only in its config (a variant: the template with its files and the archive
  // slots of its UKIs patched in); w3's own long argument makes grub.cfg need another block, so it is
  // remastered from scratch. w4-w6 are variants again. w7's own short argument changes its UKIs'
  // command lines: a variant whose UKIs and EFI partition are edited whole.
  // With two hashes in flight, the edits reuse every EFI partition and UKI buffer a settled hash gave back.
  write_iso_profile(dir, input,
                    "  - name: w1\n    hostname: w1\n  - name: w2\n    hostname: w2-longer-name\n"
                    "  - name: w3\n    kernel_args: [variant.test=" + std::string(1200, 'x') + "]\n"
                    "  - name: w4\n  - name: w5\n    hostname: w5-a-much-longer-host-name\n  - name: w6\n"
                    "  - name: w7\n    kernel_args: [variant.own=1]\n");
  // Each build with a cache of its own, so every first node is remastered (no template kept by an
  // earlier build: see the template cache's test below).
  auto build = [&](const std::string& out, const std::string& nodes) {
    fs::path cache = dir / ("cache-" + out);
    auto r = test::run("SOURCE_DATE_EPOCH=1767225600 " + cli() + " build -v " + nodes + " --cache-dir '" + cache.string() +
                       "' --out '" + (dir / out).string() + "' '" + (dir / "p.yaml").string() + "' 2>&1");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    fs::remove_all(cache);
    return r.output;
  };
  std::string all = build("all", "");
  CHECK(all.find("w3.iso: remastering the input ISO") != std::string::npos);
  for (const std::string node : {"w2", "w4", "w5", "w6"}) {
    CHECK(all.find(node + ".iso: a copy of w1.iso with this node's files and UKI archives") != std::string::npos);
  }
  CHECK(all.find("w7.iso: a copy of w1.iso with this node's files (") != std::string::npos);
  auto manifest = nlohmann::json::parse(test::read_file(dir / "all" / "manifest.json"));
  for (const std::string node : {"w1", "w2", "w3", "w4", "w5", "w6", "w7"}) {
    // Built alone, a node is the first and only one: remastered from scratch.
    build("alone-" + node, "--node " + node);
    INFO(node);
    fs::path variant = dir / "all" / (node + ".iso");
    CHECK(test::read_file(variant) == test::read_file(dir / ("alone-" + node) / (node + ".iso")));
    CHECK((fs::status(variant).permissions() & fs::perms::all) == fs::perms(0600));
    // The manifest's digest, taken on a hash thread, is the file's.
    std::size_t index = static_cast<std::size_t>(node[1] - '1');
    CHECK(manifest["nodes"][index]["outputs"]["iso"]["sha256"] ==
          test::run("sha256sum '" + variant.string() + "' | cut -c1-64").output.substr(0, 64));
  }
  // The input ISO (a local path, no sha256 pinned: hashed beside the nodes) is listed with its digest.
  REQUIRE(manifest["inputs"].size() == 1);
  CHECK(manifest["inputs"][0]["role"] == "talos-iso");
  CHECK(manifest["inputs"][0]["sha256"] == test::run("sha256sum '" + input.string() + "' | cut -c1-64").output.substr(0, 64));
  auto sums = test::run("cd '" + (dir / "all").string() + "' && sha256sum -c SHA256SUMS");
  INFO(sums.output);
  CHECK(sums.exit_code == 0);
  // Talos 1.11 (no embedded config, so no archive in the UKIs): a node with the first node's arguments
  // keeps its UKIs as they are, one with its own has them edited whole; both are their own builds.
  std::string profile_text = test::read_file(dir / "p.yaml");
  test::write_file(dir / "p.yaml", "kind: talos-iso\nname: v\ntalos:\n  version: v1.11.0\n  iso: {path: " + input.string() +
                                       "}\n  config: {file: worker.yaml}\n  outputs: [iso]\n  kernel_args: [console=ttyS0]\n"
                                       "nodes:\n  - name: w1\n  - name: w2\n    hostname: w2-longer-name\n"
                                       "  - name: w3\n    kernel_args: [variant.own=1]\n");
  std::string v111 = build("v111", "");
  CHECK(v111.find("w2.iso: a copy of w1.iso with this node's files, the first node's UKIs (") != std::string::npos);
  CHECK(v111.find("w3.iso: a copy of w1.iso with this node's files (") != std::string::npos);
  for (const std::string node : {"w2", "w3"}) {
    build("v111-" + node, "--node " + node);
    INFO("v1.11 " << node);
    CHECK(test::read_file(dir / "v111" / (node + ".iso")) == test::read_file(dir / ("v111-" + node) / (node + ".iso")));
  }
  CHECK(test::run("cd '" + (dir / "v111").string() + "' && sha256sum -c SHA256SUMS").exit_code == 0);
  test::write_file(dir / "p.yaml", profile_text);

  std::string w2_config = read_iso_text_file(dir / "all" / "w2.iso", "config.yaml");
  CHECK(w2_config.find("w2-longer-name") != std::string::npos);
  // The node's files fill whole blocks (the config with newlines) and come after the input's files, so
  // two nodes' ISOs first differ inside the UKI, at its appended archive: every byte before it is
  // hashed once for all nodes.
  CHECK(w2_config.size() % 2048 == 0);
  CHECK(w2_config.find_last_not_of('\n') < w2_config.size() - 1);
  std::string w1_iso = test::read_file(dir / "all" / "w1.iso");
  std::string w2_iso = test::read_file(dir / "all" / "w2.iso");
  REQUIRE(w1_iso.size() == w2_iso.size());
  auto first_difference = static_cast<std::uint64_t>(std::mismatch(w1_iso.begin(), w1_iso.end(), w2_iso.begin()).first - w1_iso.begin());
  std::span<const std::uint8_t> w1_bytes(reinterpret_cast<const std::uint8_t*>(w1_iso.data()), w1_iso.size());
  auto placements = locate_iso_files(w1_bytes, {"EFI/Linux/Talos-v1.12.0.efi", "config.yaml", "boot/grub/grub.cfg", "boot/initramfs.xz"});
  CHECK(first_difference > placements[0].data_offset + placements[0].size / 2);
  CHECK(first_difference < placements[0].data_offset + placements[0].size);
  CHECK(placements[1].data_offset > placements[0].data_offset);  // the small files after the UKI
  CHECK(placements[2].data_offset > placements[0].data_offset);
  CHECK(placements[3].data_offset < placements[0].data_offset);  // the input's files before it
}

TEST_CASE("talos: a template kept in the cache makes the next build's first node a variant, byte for byte, without secrets",
          "[talos][cli][variant][template-cache]") {
  fs::path input = talos_fixture() / "metal-amd64.iso";
  test::TempDir dir;
  write_iso_profile(dir, input, "  - name: w1\n  - name: w2\n    hostname: w2-host\n  - name: w3\n");
  fs::path cache = dir / "cache";
  fs::path templates = cache / "talos-templates";
  auto build = [&](const std::string& out, const std::string& extra = "", const std::string& env = "SOURCE_DATE_EPOCH=1767225600") {
    return test::run(env + " " + cli() + " build -v " + extra + " --cache-dir '" + cache.string() + "' --out '" +
                     (dir / out).string() + "' '" + (dir / "p.yaml").string() + "' 2>&1");
  };
  auto the_template = [&]() {
    std::vector<fs::path> isos;
    for (const auto& e : fs::directory_iterator(templates)) {
      if (e.path().extension() == ".iso") isos.push_back(e.path());
    }
    REQUIRE(isos.size() == 1);
    return isos.front();
  };

  // First build: w1 remastered, then kept (scrubbed) as the template.
  auto first = build("first");
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  CHECK(first.output.find("w1.iso: remastering the input ISO") != std::string::npos);
  CHECK(first.output.find("w1.iso: kept in the cache as the node ISO template") != std::string::npos);
  fs::path kept = the_template();
  CHECK(fs::exists(kept.string() + ".checked"));
  auto record = nlohmann::json::parse(test::read_file(fs::path(kept).replace_extension(".json")));
  CHECK(record["sha256"] == test::run("sha256sum '" + kept.string() + "' | cut -c1-64").output.substr(0, 64));
  CHECK(record["source_date_epoch"] == 1767225600);
  CHECK(record["input_iso_sha256"] == test::run("sha256sum '" + input.string() + "' | cut -c1-64").output.substr(0, 64));

  // The template is w1.iso with w1's own bytes zeroed: no token, no embedded-config archive (zstd), its
  // config.yaml, grub.cfg and archive file all zeros; everything else w1.iso's.
  std::string w1 = test::read_file(dir / "first" / "w1.iso");
  std::string t = test::read_file(kept);
  REQUIRE(t.size() == w1.size());
  CHECK(w1.find("SECRET-WORKER-TOKEN") != std::string::npos);
  CHECK(t.find("SECRET-WORKER-TOKEN") == std::string::npos);
  const std::string zstd_magic("\x28\xb5\x2f\xfd", 4);
  CHECK(w1.find(zstd_magic) != std::string::npos);
  CHECK(t.find(zstd_magic) == std::string::npos);
  std::span<const std::uint8_t> t_bytes(reinterpret_cast<const std::uint8_t*>(t.data()), t.size());
  for (const auto& p : locate_iso_files(t_bytes, {"config.yaml", "boot/grub/grub.cfg", "boot/embedded-config.cpio.zst"})) {
    INFO(p.path);
    auto bytes = iso_file_bytes(t_bytes, p);
    CHECK(std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0; }));
  }
  std::size_t differing = 0;
  for (std::size_t i = 0; i < t.size(); ++i) differing += t[i] != w1[i];
  CHECK(differing > 0);
  CHECK(differing < 64 * 1024);

  // Second build: every node, w1 too, a variant of the cached template; the same bytes as the first's.
  auto second = build("second");
  INFO(second.output);
  REQUIRE(second.exit_code == 0);
  CHECK(second.output.find("remastering") == std::string::npos);
  CHECK(second.output.find("w1.iso: a copy of " + kept.filename().string() + " with this node's files and UKI archives") !=
        std::string::npos);
  for (const std::string node : {"w1", "w2", "w3"}) {
    INFO(node);
    CHECK(test::read_file(dir / "second" / (node + ".iso")) == test::read_file(dir / "first" / (node + ".iso")));
  }
  CHECK(test::read_file(dir / "second" / "SHA256SUMS") == test::read_file(dir / "first" / "SHA256SUMS"));
  CHECK(test::run("cd '" + (dir / "second").string() + "' && sha256sum -c SHA256SUMS").exit_code == 0);
  // One node alone (a --node rebuild) from the template too.
  auto alone = build("alone", "--node w2");
  REQUIRE(alone.exit_code == 0);
  CHECK(alone.output.find("remastering") == std::string::npos);
  CHECK(test::read_file(dir / "alone" / "w2.iso") == test::read_file(dir / "first" / "w2.iso"));

  // A template whose bytes changed with its stamp unchanged (bit rot): found only after the nodes
  // were written from it, so the build warns, naming the template, removes it and builds again
  // without it: the outputs are the first build's and a good template is kept again.
  auto stamped = fs::last_write_time(kept);
  {
    std::fstream f(kept, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000000);
    f.put(static_cast<char>(t[1000000] ^ 1));
  }
  fs::last_write_time(kept, stamped);
  auto rotten = build("rotten");
  INFO(rotten.output);
  REQUIRE(rotten.exit_code == 0);
  CHECK(rotten.output.find("warning: the node ISO template in the cache (" + kept.string() +
                           ") does not have the SHA-256 recorded when it was stored") != std::string::npos);
  CHECK(rotten.output.find("it was removed; building the ISOs again without it") != std::string::npos);
  CHECK(rotten.output.find("w1.iso: remastering the input ISO") != std::string::npos);
  for (const std::string node : {"w1", "w2", "w3"}) {
    INFO(node);
    CHECK(test::read_file(dir / "rotten" / (node + ".iso")) == test::read_file(dir / "first" / (node + ".iso")));
  }
  CHECK(test::read_file(dir / "rotten" / "SHA256SUMS") == test::read_file(dir / "first" / "SHA256SUMS"));
  auto names = [](const fs::path& d) {
    std::set<std::string> found;
    for (const auto& e : fs::directory_iterator(d)) found.insert(e.path().filename().string());
    return found;
  };
  CHECK(names(dir / "rotten") == names(dir / "first"));  // nothing of the first run left: no .partial, no work directory
  CHECK(test::read_file(the_template()) == t);
  // The next build uses it again; one edited visibly (its stamp no longer matching) is removed and
  // remastered around without an error.
  auto again = build("again");
  REQUIRE(again.exit_code == 0);
  CHECK(again.output.find("remastering") == std::string::npos);
  test::write_file(the_template(), "not an ISO");
  auto edited = build("edited");
  REQUIRE(edited.exit_code == 0);
  CHECK(edited.output.find("w1.iso: remastering the input ISO") != std::string::npos);
  CHECK(test::read_file(dir / "edited" / "w3.iso") == test::read_file(dir / "first" / "w3.iso"));

  // Without a fixed time every build is stamped with its own: no template is looked up or kept.
  fs::remove_all(cache);
  auto unfixed = build("unfixed", "", "env -u SOURCE_DATE_EPOCH");
  REQUIRE(unfixed.exit_code == 0);
  CHECK_FALSE(fs::exists(templates));
}

namespace {

// dir/p.yaml: ISOs for 40 nodes from the fixture ISO (a build long enough to be interrupted midway).
void write_forty_node_iso_profile(const test::TempDir& dir) {
  test::write_file(dir / "worker.yaml", worker_config);
  fs::permissions(dir / "worker.yaml", fs::perms(0600));
  std::string profile = "kind: talos-iso\nname: i\ntalos:\n  iso: {path: " + (talos_fixture() / "metal-amd64.iso").string() +
                        "}\n  config: {file: worker.yaml}\n  outputs: [iso]\nnodes:\n";
  for (int i = 1; i <= 40; ++i) profile += "  - name: n" + std::to_string(i) + "\n";
  test::write_file(dir / "p.yaml", profile);
}

}  // namespace

TEST_CASE("talos: Ctrl-C after the first node's remaster removes every output and the work directory", "[talos][cli][interrupt]") {
  // libburn installs signal handlers at its start-up unless told not to; they outlived the remaster
  // and ended the build with exit 1, leaving ISOs, a .partial and .work-talos-* behind.
  test::TempDir dir;
  write_forty_node_iso_profile(dir);
  // The signal goes when node 3 starts: node 1 has been remastered (libburn has run), node 2 copied.
  auto r = test::run("cd '" + dir.path().string() + "' || exit 1; (" + cli() +
                     " build -v --out out p.yaml >log 2>&1 & echo $! >pid; wait $!; echo $? >rc) & "
                     "for i in $(seq 1 6000); do grep -q 'node n3: writing the ISO' log 2>/dev/null && break; sleep 0.01; done; "
                     "kill -INT $(cat pid); wait; echo rc=$(cat rc); ls -A out; tail -n 2 log");
  INFO(r.output);
  CHECK(r.output.find("rc=130") != std::string::npos);
  CHECK(r.output.find("interrupted by SIGINT") != std::string::npos);
  CHECK(r.output.find(".iso") == std::string::npos);
  CHECK(r.output.find(".work-talos") == std::string::npos);
}

TEST_CASE("talos: Ctrl-C during a rebuild into the same directory leaves the earlier build whole", "[talos][cli][interrupt]") {
  // The rebuild had replaced n1's and n2's ISOs when the signal came; its cleanup removed them, and
  // the earlier build's SHA256SUMS and manifest, still in place, listed files that were gone.
  test::TempDir dir;
  write_forty_node_iso_profile(dir);
  auto first = test::run("cd '" + dir.path().string() + "' && " + cli() + " build --out out p.yaml >/dev/null 2>&1 && "
                         "cd out && sha256sum -c --quiet SHA256SUMS && sha256sum n1.iso n2.iso >../first.sums && echo built");
  REQUIRE(first.output.find("built") != std::string::npos);
  // Another config: every node's ISO differs from the first build's.
  test::write_file(dir / "worker.yaml", std::string(worker_config) + "# second build\n");
  auto r = test::run("cd '" + dir.path().string() + "' || exit 1; (" + cli() +
                     " build -v --out out p.yaml >log 2>&1 & echo $! >pid; wait $!; echo $? >rc) & "
                     "for i in $(seq 1 6000); do grep -q 'node n3: writing the ISO' log 2>/dev/null && break; sleep 0.01; done; "
                     "kill -INT $(cat pid); wait; echo rc=$(cat rc); cd out && sha256sum -c --quiet SHA256SUMS && echo sums-ok; "
                     "sha256sum -c --quiet ../first.sums && echo earlier-isos; ls -A");
  INFO(r.output);
  CHECK(r.output.find("rc=130") != std::string::npos);
  CHECK(r.output.find("sums-ok") != std::string::npos);
  CHECK(r.output.find("earlier-isos") != std::string::npos);
  CHECK(r.output.find(".previous-") == std::string::npos);
  CHECK(r.output.find(".partial") == std::string::npos);
  CHECK(r.output.find(".work-talos") == std::string::npos);
}

TEST_CASE("talos: a build whose output pipe closes early (| head) removes every output and the work directory", "[talos][cli][interrupt]") {
  // SIGPIPE's default ended the build at the log line after head had gone, leaving .work-talos-*,
  // ISOs and a .partial behind, with no message.
  test::TempDir dir;
  write_forty_node_iso_profile(dir);
  auto r = test::run("cd '" + dir.path().string() + "' || exit 1; { " + cli() +
                     " build -v --out out p.yaml 2>&1; echo $? >rc; } | head -c 1 >/dev/null; echo rc=$(cat rc); ls -A out");
  INFO(r.output);
  CHECK(r.output.find("rc=141") != std::string::npos);
  CHECK(r.output.find(".iso") == std::string::npos);
  CHECK(r.output.find(".work-talos") == std::string::npos);
  CHECK(r.output.find(".partial") == std::string::npos);
}

TEST_CASE("talos: a build into a directory another build is writing into fails at once and touches nothing", "[talos][cli]") {
  // Found running two builds into one directory: each wrote the same *.partial names, one's cleanup
  // removed the other's files, and the one that succeeded published a SHA256SUMS its ISOs did not match.
  test::TempDir dir;
  write_forty_node_iso_profile(dir);
  fs::create_directories(dir / "out");
  test::write_file(dir / "out" / "n1.iso", "an earlier build's ISO");
  {
    // The other build: its lock on the directory (builder/build_output.hpp OutputDirectoryLock).
    FileDescriptor other(::open((dir / "out").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(other);
    REQUIRE(::flock(other.get(), LOCK_EX | LOCK_NB) == 0);
    auto r = test::run("cd '" + dir.path().string() + "' && " + cli() + " build --out out p.yaml; echo rc=$?; ls -A out");
    INFO(r.output);
    CHECK(r.output.find("rc=1") != std::string::npos);
    CHECK(r.output.find("out: another build is writing into this directory; wait for it to end, or build into another --out") !=
          std::string::npos);
    CHECK(r.output.find(".work-talos") == std::string::npos);
    CHECK(r.output.find(".partial") == std::string::npos);
  }
  CHECK(test::read_file(dir / "out" / "n1.iso") == "an earlier build's ISO");
  // The other build gone, this one runs.
  auto again = test::run("cd '" + dir.path().string() + "' && " + cli() + " build -q --out out p.yaml");
  INFO(again.output);
  CHECK(again.exit_code == 0);
  CHECK(test::run("cd '" + (dir / "out").string() + "' && sha256sum -c --quiet SHA256SUMS").exit_code == 0);
}
