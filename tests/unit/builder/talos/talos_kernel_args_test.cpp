// Talos kernel command lines and boot files: version defaults, the kernel's limit with each loader's bytes, grub.cfg edits,
// iPXE scripts (and ${...} handling), the newc archive of an embedded config, ISO volume descriptors.
#include <catch2/catch.hpp>

#include "builder/talos/talos_boot_files.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "builder/talos_kernel_args.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

bool has(const std::vector<std::string>& args, const std::string& arg) {
  return std::find(args.begin(), args.end(), arg) != args.end();
}

TalosVersion v(const char* text) {
  auto version = TalosVersion::parse(text);
  REQUIRE(version);
  return *version;
}

const char* talos_grub_cfg = R"(set default=0
set timeout=3

menuentry "Talos ISO" {
	set gfxmode=auto
	linux /boot/vmlinuz talos.platform=metal console=tty0 selinux=1
	initrd /boot/initramfs.xz
}
menuentry "Reset Talos installation" {
	linux /boot/vmlinuz talos.platform=metal console=tty0 selinux=1 talos.experimental.wipe=system
	initrd /boot/initramfs.xz
}
)";

}  // namespace

TEST_CASE("talos: Talos versions parse from tags and ISO volume ids", "[talos][cmdline]") {
  CHECK(v("v1.12.0").str() == "v1.12.0");
  CHECK(v("1.9.5").minor == 9);
  CHECK(v("v1.13.0-beta.1").str() == "v1.13.0");
  CHECK_FALSE(TalosVersion::parse("v1.12"));
  CHECK_FALSE(TalosVersion::parse("latest"));
  REQUIRE(TalosVersion::from_volume_id("TALOS_V1_12_0"));
  CHECK(TalosVersion::from_volume_id("TALOS_V1_12_0")->str() == "v1.12.0");
  CHECK_FALSE(TalosVersion::from_volume_id("metal-iso"));
  CHECK(v("v1.12.0").at_least(1, 12));
  CHECK_FALSE(v("v1.11.9").at_least(1, 12));
  CHECK(v("v2.0.0").at_least(1, 14));
}

TEST_CASE("talos: default kernel arguments follow Talos' version steps", "[talos][cmdline]") {
  auto v17 = talos_default_kernel_args(v("v1.7.6"));
  CHECK(v17.front() == "talos.platform=metal");
  for (const char* a : {"slab_nomerge", "pti=on", "console=ttyS0", "console=tty0", "init_on_alloc=1", "consoleblank=0",
                        "nvme_core.io_timeout=4294967295", "printk.devkmsg=on", "ima_template=ima-ng",
                        "ima_appraise=fix", "ima_hash=sha512"}) {
    CHECK(has(v17, a));
  }
  CHECK_FALSE(has(v17, "selinux=1"));
  CHECK_FALSE(has(talos_default_kernel_args(v("v1.8.0")), "console=ttyS0"));
  CHECK(has(talos_default_kernel_args(v("v1.7.0"), "arm64"), "console=ttyAMA0"));
  CHECK(has(talos_default_kernel_args(v("v1.10.0")), "selinux=1"));
  CHECK(has(talos_default_kernel_args(v("v1.10.0")), "ima_hash=sha512"));
  CHECK_FALSE(has(talos_default_kernel_args(v("v1.11.0")), "ima_hash=sha512"));
  auto v12 = talos_default_kernel_args(v("v1.12.0"));
  CHECK_FALSE(has(v12, "module.sig_enforce=1"));
  CHECK(has(v12, "init_on_alloc=1"));
  auto v13 = talos_default_kernel_args(v("v1.13.0"));
  CHECK(has(v13, "module.sig_enforce=1"));
  CHECK(has(v13, "proc_mem.force_override=never"));
  auto v14 = talos_default_kernel_args(v("v1.14.0"));
  CHECK_FALSE(has(v14, "init_on_alloc=1"));
  CHECK_FALSE(has(v14, "nvme_core.io_timeout=4294967295"));
  CHECK(has(v14, "selinux=1"));
}

TEST_CASE("talos: kernel arguments append without duplicates", "[talos][cmdline]") {
  auto args = append_kernel_args({"a=1", "b"}, {"b", "c=3", "a=1"});
  CHECK(join_kernel_args(args) == "a=1 b c=3");
  CHECK(split_kernel_args("  a=1   b\tc=3\n") == std::vector<std::string>{"a=1", "b", "c=3"});
}

TEST_CASE("talos: a command line fits when the loader's bytes and the arguments are within cmdline_size",
          "[talos][cmdline]") {
  const KernelCommandLineLimit limit{2047, "setup header cmdline_size at 0x238, boot protocol 2.15"};
  const KernelCommandLineLoader grub = grub_loader("/boot/vmlinuz");
  // "BOOT_IMAGE=/boot/vmlinuz " is 25 bytes; " talos.config=metal-iso" 23: the pad makes 2047 in all.
  auto line = [](std::size_t pad) {
    return std::vector<std::string>{"x.pad=" + std::string(pad, 'a'), "talos.config=metal-iso"};
  };
  std::size_t exact = 2047 - 25 - 23 - 6;
  CHECK(kernel_command_line_bytes(line(exact), grub) == 2047);
  CHECK_FALSE(check_kernel_command_line("node cp1", line(exact), grub, limit, "t.iso:/boot/vmlinuz"));
  auto over = check_kernel_command_line("iso: kernel command line for node cp1", line(exact + 1), grub, limit,
                                        "t.iso:/boot/vmlinuz");
  REQUIRE(over);
  INFO(*over);
  CHECK(over->starts_with("iso: kernel command line for node cp1 is 2,048 bytes with GRUB's prefix "
                          "'BOOT_IMAGE=/boot/vmlinuz '; the kernel in t.iso:/boot/vmlinuz keeps at most 2,047 "
                          "(setup header cmdline_size at 0x238, boot protocol 2.15): 1 bytes too many"));
  CHECK(over->find("'talos.config=metal-iso' would be lost") != std::string::npos);

  // The issue's case: 2,956 bytes, the end lost.
  auto issue = check_kernel_command_line("n", line(exact + 909), grub, limit, "k");
  REQUIRE(issue);
  CHECK(issue->find("is 2,956 bytes") != std::string::npos);

  // An early argument that crosses the limit takes those after it along.
  auto early = check_kernel_command_line("n", {"a", std::string(3000, 'b'), "c", "d"}, uki_loader(), limit, "k");
  REQUIRE(early);
  CHECK(early->find("through systemd-stub (UKI .cmdline)") != std::string::npos);
  CHECK(early->find("and the 2 argument(s) after it would be lost") != std::string::npos);

  // GRUB writes \ ' " escaped and an argument with a blank in quotes.
  CHECK(kernel_command_line_bytes({"a='b'"}, grub) == 25 + 7);
  CHECK(kernel_command_line_bytes({"a=b c"}, grub) == 25 + 7);
  CHECK(kernel_command_line_bytes({"a='b'"}, uki_loader()) == 5);
}

TEST_CASE("talos: iPXE adds its image name under UEFI and keeps one byte fewer under BIOS", "[talos][cmdline]") {
  const KernelCommandLineLimit limit{2047, "b"};
  std::vector<std::string> args{std::string(2039, 'x')};  // "vmlinuz " + 2039 = 2047
  CHECK(kernel_command_line_bytes(args, ipxe_efi_loader("vmlinuz")) == 2047);
  CHECK_FALSE(check_kernel_command_line("n", args, ipxe_efi_loader("vmlinuz"), limit, "k"));
  args[0].push_back('x');
  auto efi = check_kernel_command_line("n", args, ipxe_efi_loader("vmlinuz"), limit, "k");
  REQUIRE(efi);
  CHECK(efi->find("with iPXE (UEFI)'s prefix 'vmlinuz '") != std::string::npos);
  // BIOS: snprintf into cmdline_size bytes keeps cmdline_size - 1 characters.
  CHECK_FALSE(check_kernel_command_line("n", {std::string(2046, 'x')}, ipxe_bios_loader(), limit, "k"));
  auto bios = check_kernel_command_line("n", {std::string(2047, 'x')}, ipxe_bios_loader(), limit, "k");
  REQUIRE(bios);
  CHECK(bios->find("iPXE (BIOS) keeps 1 fewer") != std::string::npos);
}

TEST_CASE("talos: grub.cfg edits touch every linux and initrd line of a Talos config", "[talos][grub]") {
  GrubConfigEdit edit{{"console=ttyS0", "talos.config=metal-iso", "console=tty0", "x=${uuid}"},
                      {"/boot/embedded-config.cpio"}};
  EditedGrubConfig edited = edit_grub_config(talos_grub_cfg, edit);
  INFO(edited.text);
  CHECK(edited.text.find("\tlinux /boot/vmlinuz talos.platform=metal console=tty0 selinux=1 console=ttyS0 "
                         "talos.config=metal-iso 'x=${uuid}'\n") != std::string::npos);
  CHECK(edited.text.find("talos.experimental.wipe=system console=ttyS0 talos.config=metal-iso") != std::string::npos);
  CHECK(edited.text.find("\tinitrd /boot/initramfs.xz /boot/embedded-config.cpio\n") != std::string::npos);
  REQUIRE(edited.command_lines.size() == 2);
  CHECK(edited.command_lines[0] ==
        "talos.platform=metal console=tty0 selinux=1 console=ttyS0 talos.config=metal-iso x=${uuid}");
  CHECK(edited.text.find("set timeout=3\n") != std::string::npos);
  CHECK_THROWS_AS(edit_grub_config("menuentry x {\n linux /vmlinuz-6.1\n}\n", edit), Error);

  // Reading back what was written (inspect, or a remaster of our own ISO): GRUB's quotes are not part
  // of the command line the kernel gets, and are not doubled on the way out.
  EditedGrubConfig again = edit_grub_config(edited.text, {});
  CHECK(again.command_lines[0] == edited.command_lines[0]);
  CHECK(again.text == edited.text);
  EditedGrubConfig quoted = edit_grub_config("linux /boot/vmlinuz 'ip=[fd00:55::12]::[fd00:55::1]:64:n-2:eth0:none' "
                                             "\"a b\" c\\ d 'it'\\''s'\n", {});
  REQUIRE(quoted.command_lines.size() == 1);
  CHECK(quoted.command_lines[0] == "ip=[fd00:55::12]::[fd00:55::1]:64:n-2:eth0:none a b c d it's");
}

TEST_CASE("talos: iPXE scripts load files relative to themselves and fill in Talos' URL variables", "[talos][ipxe]") {
  std::string script = ipxe_script({"cp1", {"talos.platform=metal", "talos.config=http://s/cp1/config.yaml"}});
  CHECK(script.starts_with("#!ipxe\n"));
  CHECK(script.find("\nkernel vmlinuz talos.platform=metal talos.config=http://s/cp1/config.yaml initrd=initramfs.xz\n"
                    "initrd initramfs.xz\nboot\n") != std::string::npos);
  CHECK(substitute_talos_url_variables("http://s/c?u=${uuid}&m=${mac}&h=${hostname}", "cp1",
                                       std::string("7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51"),
                                       std::string("bc:24:11:00:20:11"), "cp1") ==
        "http://s/c?u=7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51&m=bc:24:11:00:20:11&h=cp1");
  CHECK_THROWS_WITH(substitute_talos_url_variables("http://s/?u=${uuid}", "cp1", std::nullopt, std::nullopt, "cp1"),
                    Catch::Contains("cp1/uuid") && Catch::Contains("the node needs 'uuid'"));
  CHECK_THROWS_WITH(substitute_talos_url_variables("http://s/?s=${serial}", "cp1", std::nullopt, std::nullopt, "cp1"),
                    Catch::Contains("${serial} cannot be passed through iPXE"));
}

TEST_CASE("talos: the embedded config archive is a newc cpio with parent directories", "[talos][cpio]") {
  std::string cpio = newc_cpio({{talos_embedded_config_path, "version: v1alpha1\n", 0400}}, 1767225600);
  CHECK(cpio.size() % 512 == 0);
  CHECK(cpio.starts_with("070701"));
  for (const char* name : {"usr\0", "usr/local\0", "usr/local/etc\0", "usr/local/etc/talos\0",
                           "usr/local/etc/talos/config.yaml\0", "TRAILER!!!\0"}) {
    CHECK(cpio.find(std::string(name) + '\0') != std::string::npos);
  }
  // The file's header: mode 0100400, mtime, size 18.
  auto at = cpio.find("usr/local/etc/talos/config.yaml");
  std::string header = cpio.substr(at - 110, 110);
  CHECK(header.substr(14, 8) == "00008100");
  CHECK(header.substr(46, 8) == "6955B900");
  CHECK(header.substr(54, 8) == "00000012");
  CHECK(cpio.find("version: v1alpha1\n") != std::string::npos);
}

TEST_CASE("talos: ISO volume descriptors give label, uuid date and Joliet", "[talos][iso]") {
  std::string descriptors(3 * 2048, '\0');
  descriptors[0] = 1;
  descriptors.replace(1, 5, "CD001");
  descriptors.replace(40, 32, "TALOS_V1_12_0                   ");
  descriptors.replace(830, 17, std::string("2025051500000000") + '\0');
  descriptors[2048] = 2;
  descriptors.replace(2048 + 1, 5, "CD001");
  descriptors.replace(2048 + 88, 3, "%/E");
  descriptors[4096] = static_cast<char>(255);
  descriptors.replace(4096 + 1, 5, "CD001");
  IsoVolumeInfo info = parse_iso_volume_descriptors(descriptors);
  CHECK(info.volume_id == "TALOS_V1_12_0");
  CHECK(info.modification_date == "2025051500000000");
  CHECK(info.joliet);
  CHECK_THROWS_AS(parse_iso_volume_descriptors(std::string(4096, '\0')), Error);
}
