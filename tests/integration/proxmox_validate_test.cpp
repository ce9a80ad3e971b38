// `validate` on a talos-iso profile (Talos for Proxmox VMs) runs what `build` checks before any work,
// by the same code (builder/talos_build_checks.hpp): config structure at file:line:col, patches that do
// not apply at the failing operation, node/field errors after patching, the netboot command line's
// 4096 bytes; and it never prints a config value.
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

  // The netboot command line over 4096 bytes: node/kernel_args.
  std::string long_arg = "x.pad=" + std::string(4100, 'a');
  test::write_file(dir / "long.yaml", head + "nodes:\n  - name: cp1\n    install_disk: /dev/sda\n    kernel_args: [" + long_arg + "]\n");
  auto too_long = test::run(cli() + " validate " + (dir / "long.yaml").string());
  INFO(too_long.output);
  CHECK(too_long.exit_code == 1);
  CHECK_THAT(too_long.output, Catch::Contains("cp1/kernel_args: netboot: the kernel command line is"));
  // For the ISO outputs, whose lines depend on the ISO, an estimate warns.
  CHECK_THAT(too_long.output, Catch::Contains("cp1/kernel_args: warning: iso: with Talos' default arguments for v1.12.0"));
}
