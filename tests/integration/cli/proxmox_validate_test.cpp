// `validate` on a talos-iso profile (Talos for Proxmox VMs) runs what `build` checks before any work,
// by the same code (builder/talos/talos_build_checks.hpp): config structure at file:line:col, patches that do
// not apply at the failing operation, node/field errors after patching, command lines against the
// kernel's 2,047 bytes with the loader's prefix; and it never prints a config value.
#include <catch2/catch.hpp>

#include "tests/test_support.hpp"

using namespace aggrik8s;

namespace {

std::string cli() { return test::cli_path().string(); }

const char* config_text = R"(version: v1alpha1
machine:
  type: controlplane
  token: SECRET-validate-machine-token
cluster:
  controlPlane:
    endpoint: https://10.0.20.10:6443
  clusterName: lab
)";

}  // namespace

TEST_CASE("validate: talos-iso profiles get the build's config, patch and command line checks", "[proxmox][cli]") {
  test::TempDir dir;
  test::write_file(dir / "cp.yaml", config_text);
  test::write_file(dir / "bad-type.yaml", "version: v1alpha1\nmachine:\n  type: router\ncluster:\n  clusterName: x\n");
  test::run("chmod 600 " + (dir / "cp.yaml").string() + " " + (dir / "bad-type.yaml").string());
  std::string head = "kind: talos-iso\nname: t\ntalos:\n  version: v1.12.0\n  kernel: {path: k}\n  initramfs: {path: i}\n"
                     "  config: {file: cp.yaml}\n  outputs: [config-iso, netboot]\n  netboot_url: http://10.0.0.2:8080\n";

  test::write_file(dir / "good.yaml", head + "nodes:\n  - name: cp1\n    install_disk: /dev/sda\n");
  auto good = test::run(cli() + " validate " + (dir / "good.yaml").string());
  INFO(good.output);
  CHECK(good.exit_code == 0);

  // Line 12, column 9: the failing JSON patch operation; cp2 has no install disk after its patches.
  test::write_file(dir / "patch.yaml", head +
                                           "nodes:\n"
                                           "  - name: cp1\n"
                                           "    install_disk: /dev/sda\n"
                                           "    patches:\n"
                                           "      - json6902:\n"
                                           "          - {op: remove, path: /machine/nothing}\n"
                                           "  - name: cp2\n");
  auto patch = test::run(cli() + " validate " + (dir / "patch.yaml").string());
  INFO(patch.output);
  CHECK(patch.exit_code == 1);
  CHECK_THAT(patch.output, Catch::Contains("patch.yaml:15:13: node cp1: json6902[0] (remove /machine/nothing)"));
  CHECK_THAT(patch.output, Catch::Contains("cp2/machine.install.disk"));
  CHECK_THAT(patch.output, !Catch::Contains("SECRET-validate"));

  // A config of the wrong structure: its own file:line:col.
  test::write_file(dir / "type.yaml", head + "nodes:\n  - name: cp1\n    install_disk: /dev/sda\n    config: {file: bad-type.yaml}\n");
  auto type = test::run(cli() + " validate --json " + (dir / "type.yaml").string());
  INFO(type.output);
  CHECK(type.exit_code == 1);
  CHECK_THAT(type.output, Catch::Contains("bad-type.yaml"));
  CHECK_THAT(type.output, Catch::Contains("\"line\": 3"));
  CHECK_THAT(type.output, Catch::Contains("machine.type"));

  // A netboot command line of ~2,060 bytes (under the 4,096 once assumed): the kernel is not readable
  // here, so validate checks against the 2,047 bytes of every x86-64/arm64 kernel, counting the image
  // name ipxe.efi puts in front.
  std::string long_arg = "x.pad=" + std::string(1850, 'a');
  test::write_file(dir / "long.yaml", head + "nodes:\n  - name: cp1\n    install_disk: /dev/sda\n    kernel_args: [" + long_arg + "]\n");
  auto too_long = test::run(cli() + " validate " + (dir / "long.yaml").string());
  INFO(too_long.output);
  CHECK(too_long.exit_code == 1);
  CHECK_THAT(too_long.output, Catch::Contains("cp1/kernel_args: netboot: kernel command line for node cp1 is "));
  CHECK_THAT(too_long.output, Catch::Contains("is 2,079 bytes with iPXE (UEFI)'s prefix 'vmlinuz '; the kernel in "));
  CHECK_THAT(too_long.output, Catch::Contains("/k keeps at most 2,047 (COMMAND_LINE_SIZE 2048"));
  CHECK_THAT(too_long.output, Catch::Contains("'talos.config=http://10.0.0.2:8080/cp1/config.yaml' and the 1 argument(s) after it would be lost"));
  // For the iso output with a downloaded ISO: Talos' default arguments and the node's are a lower bound.
  std::string iso_head = "kind: talos-iso\nname: t\ntalos:\n  version: v1.12.0\n"
                         "  iso: {url: 'http://127.0.0.1:9/metal-amd64.iso', sha256: " + std::string(64, 'a') + "}\n"
                         "  config: {file: cp.yaml}\n  outputs: [iso]\n";
  test::write_file(dir / "long-iso.yaml", iso_head + "nodes:\n  - name: cp1\n    install_disk: /dev/sda\n    kernel_args: [" + long_arg + "]\n");
  auto iso_long = test::run(cli() + " validate " + (dir / "long-iso.yaml").string());
  INFO(iso_long.output);
  CHECK(iso_long.exit_code == 1);
  CHECK_THAT(iso_long.output, Catch::Contains("cp1/kernel_args: iso: kernel command line for node cp1 (at least: Talos' default "
                                              "arguments for v1.12.0) is "));
  CHECK_THAT(iso_long.output, Catch::Contains("with GRUB's prefix 'BOOT_IMAGE=/boot/vmlinuz '"));
  // Without talos.version, what the build adds is the lower bound: a 3,000-byte argument is still refused.
  std::string unversioned = iso_head;
  unversioned.replace(unversioned.find("  version: v1.12.0\n"), std::string("  version: v1.12.0\n").size(), "");
  test::write_file(dir / "long-unversioned.yaml", unversioned + "nodes:\n  - name: cp1\n    install_disk: /dev/sda\n"
                                                  "    kernel_args: [x=" + std::string(3000, 'a') + "]\n");
  auto unversioned_long = test::run(cli() + " validate " + (dir / "long-unversioned.yaml").string());
  INFO(unversioned_long.output);
  CHECK(unversioned_long.exit_code == 1);
  CHECK_THAT(unversioned_long.output, Catch::Contains("cp1/kernel_args: iso: kernel command line for node cp1 (at least: the "
                                                      "arguments the build adds; set talos.version to count Talos' own) is "));
}
