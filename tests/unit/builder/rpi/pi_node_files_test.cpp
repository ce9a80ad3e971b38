// The pure pieces of a Raspberry Pi node's customisation: cmdline.txt, config.txt, RKE2 files, and
// first-boot settings in both formats.
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>

#include "builder/rpi/first_boot.hpp"
#include "builder/rpi/pi_boot_files.hpp"
#include "builder/rpi/rke2_node_files.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

const char* stock_cmdline =
    "console=serial0,115200 console=tty1 root=PARTUUID=5452574f-02 rootfstype=ext4 fsck.repair=yes rootwait quiet "
    "init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

Rpi5Node sample_node() {
  Rpi5Node node;
  node.name = "cp1";
  node.system.hostname = "cp1";
  node.system.timezone = "Europe/Berlin";
  node.system.users.push_back({"ops", std::nullopt, {"ssh-ed25519 AAAAC3Nza ops@x"}, true});
  node.rke2.role = "server";
  Diagnostics d;
  node.rke2.config = load_yaml_string("write-kubeconfig-mode: \"0600\"\ntls-san: [a.example, 10.0.0.1]\n", "t", d);
  return node;
}

}  // namespace

TEST_CASE("cmdline.txt: arguments added once, in place, on one line", "[pi-boot]") {
  std::string once = add_cmdline_arguments(stock_cmdline, {"cgroup_enable=memory", "rootwait"});
  CHECK(once.ends_with(" cgroup_enable=memory\n"));
  CHECK(std::count(once.begin(), once.end(), '\n') == 1);
  CHECK(add_cmdline_arguments(once, {"cgroup_enable=memory"}) == once);
  CHECK(add_cmdline_arguments("a cgroup_enable=cpuset\n", {"cgroup_enable=memory"}) ==
        "a cgroup_enable=cpuset cgroup_enable=memory\n");
  CHECK(add_cmdline_arguments("rootfstype=ext4 quiet", {"rootfstype=btrfs"}) == "rootfstype=btrfs quiet\n");
  CHECK(remove_cmdline_arguments("a systemd.run=/x b systemd.unit=y\n", {"systemd.run", "systemd.unit"}) == "a b\n");
  CHECK(cmdline_root_partuuid(stock_cmdline) == "5452574f-02");
  CHECK_FALSE(cmdline_root_partuuid("root=/dev/mmcblk0p2"));
}

TEST_CASE("config.txt: one managed block, replaced on rebuild, other lines untouched", "[pi-boot]") {
  std::string stock = "dtparam=audio=on\n[cm5]\ndtoverlay=dwc2,dr_mode=host\n\n[all]\narm_boost=1\n";
  PiBootSettings boot;
  CHECK(apply_config_txt(stock, boot) == stock);  // nothing to manage
  boot.storage = PiBootSettings::Storage::nvme;
  boot.pcie_gen = 3;
  boot.kernel_page_size_kib = 4;
  boot.config_txt = {"dtoverlay=disable-wifi"};
  std::string once = apply_config_txt(stock, boot);
  CHECK(once.starts_with(stock));
  CHECK(once.find("[all]\ndtparam=pciex1\ndtparam=pciex1_gen=3\nkernel=kernel8.img\ndtoverlay=disable-wifi\n") !=
        std::string::npos);
  CHECK(apply_config_txt(once, boot) == once);
  boot.pcie_gen.reset();
  std::string changed = apply_config_txt(once, boot);
  CHECK(changed.find("pciex1_gen") == std::string::npos);
  CHECK(changed.find("dtparam=pciex1\n") != std::string::npos);
  CHECK(apply_config_txt(changed, PiBootSettings{}) == stock);
}

TEST_CASE("RKE2 node files: config with token 0600, unit enabled, canal fix only with NetworkManager", "[rke2]") {
  Rpi5Node node = sample_node();
  node.rke2.role = "agent";
  node.rke2.server = "https://10.0.0.10:9345";
  Secret token("12345\n");
  RootfsChanges changes = rke2_node_changes(node, token, RootfsFacts{true});
  const ImageFile& config = changes.files.front();
  CHECK(config.path == "/etc/rancher/rke2/config.yaml");
  CHECK(config.permissions == 0600);
  CHECK(config.contains_secret);
  YAML::Node parsed = YAML::Load(config.content);
  CHECK(parsed["token"].as<std::string>() == "12345");
  CHECK(parsed["token"].Tag() == "!");  // quoted: stays a string
  CHECK(parsed["server"].as<std::string>() == "https://10.0.0.10:9345");
  CHECK(parsed["node-name"].as<std::string>() == "cp1");
  CHECK(parsed["write-kubeconfig-mode"].as<std::string>() == "0600");
  CHECK(parsed["tls-san"][1].as<std::string>() == "10.0.0.1");
  REQUIRE(changes.symlinks.size() == 1);
  CHECK(changes.symlinks[0].path == "/etc/systemd/system/multi-user.target.wants/rke2-agent.service");
  CHECK(changes.symlinks[0].target == "/usr/local/lib/systemd/system/rke2-agent.service");
  auto has_file = [&](const RootfsChanges& c, const std::string& path) {
    return std::any_of(c.files.begin(), c.files.end(), [&](const ImageFile& f) { return f.path == path; });
  };
  CHECK(has_file(changes, "/etc/NetworkManager/conf.d/rke2-canal.conf"));
  CHECK(has_file(changes, "/etc/modules-load.d/rke2.conf"));
  CHECK_FALSE(has_file(rke2_node_changes(node, token, RootfsFacts{false}), "/etc/NetworkManager/conf.d/rke2-canal.conf"));
  CHECK(rke2_config_yaml(sample_node(), std::nullopt).find("token") == std::string::npos);
}

TEST_CASE("first boot: format detection and the firstrun.sh plan", "[first-boot]") {
  CHECK(detect_first_boot_format(false, false) == FirstBootFormat::firstrun_script);
  CHECK(detect_first_boot_format(true, false) == FirstBootFormat::cloud_init);
  CHECK(detect_first_boot_format(false, true) == FirstBootFormat::cloud_init);
  CHECK(boot_mount_point_from_fstab("proc /proc proc defaults 0 0\nPARTUUID=x-01  /boot/firmware  vfat  defaults 0 2\n") ==
        "/boot/firmware");
  CHECK(boot_mount_point_from_fstab("PARTUUID=x-01 /boot vfat defaults 0 2\n") == "/boot");

  Rpi5Node node = sample_node();
  std::map<std::string, Secret> hashes;
  hashes.emplace("ops", Secret("$6$salt$hash'quote\n"));
  FirstBootPlan plan = plan_first_boot(FirstBootFormat::firstrun_script, node, hashes, "/boot/firmware");
  const std::string& script = plan.boot_files.at("firstrun.sh");
  CHECK(script.starts_with("#!/bin/bash\n"));
  CHECK(script.find("NEW_HOSTNAME='cp1'") != std::string::npos);
  CHECK(script.find("usermod -p '$6$salt$hash'\\''quote' 'ops'") != std::string::npos);
  CHECK(script.find("ssh-ed25519 AAAAC3Nza ops@x") != std::string::npos);
  CHECK(script.find("rm -f '/boot/firmware/firstrun.sh'") != std::string::npos);
  CHECK(plan.cmdline_add.front() == "systemd.run=/boot/firmware/firstrun.sh");

  std::string cmdline = add_cmdline_arguments(remove_cmdline_arguments(stock_cmdline, plan.cmdline_remove), plan.cmdline_add);
  CHECK(verify_first_boot(plan, plan.boot_files, cmdline).empty());
  CHECK_FALSE(verify_first_boot(plan, {}, cmdline).empty());
  CHECK_FALSE(verify_first_boot(plan, plan.boot_files, stock_cmdline).empty());
}

TEST_CASE("first boot: cloud-init NoCloud plan with a settings-derived instance id", "[first-boot]") {
  Rpi5Node node = sample_node();
  node.network.mode = NetworkSettings::Mode::static_address;
  node.network.addresses = {"10.0.0.11/24"};
  node.network.gateways = {"10.0.0.1"};
  node.network.dns = {"10.0.0.1"};
  FirstBootPlan plan = plan_first_boot(FirstBootFormat::cloud_init, node, {}, "/boot/firmware");
  YAML::Node user_data = YAML::Load(plan.boot_files.at("user-data"));
  CHECK(plan.boot_files.at("user-data").starts_with("#cloud-config\n"));
  CHECK(user_data["hostname"].as<std::string>() == "cp1");
  CHECK(user_data["preserve_hostname"].as<bool>() == false);
  CHECK(user_data["users"][1]["ssh_authorized_keys"][0].as<std::string>() == "ssh-ed25519 AAAAC3Nza ops@x");
  YAML::Node net = YAML::Load(plan.boot_files.at("network-config"));
  CHECK(net["network"]["ethernets"]["eth0"]["addresses"][0].as<std::string>() == "10.0.0.11/24");
  CHECK(net["network"]["ethernets"]["eth0"]["routes"][0]["via"].as<std::string>() == "10.0.0.1");
  CHECK(plan.cmdline_add == std::vector<std::string>{"ds=nocloud;i=" + plan.instance_id});
  node.system.hostname = "cp9";
  CHECK(plan_first_boot(FirstBootFormat::cloud_init, node, {}, "/boot").instance_id != plan.instance_id);

  std::string cmdline = add_cmdline_arguments(stock_cmdline, plan.cmdline_add);
  CHECK(verify_first_boot(plan, plan.boot_files, cmdline).empty());
  auto tampered = plan.boot_files;
  tampered["meta-data"] = "instance-id: other\n";
  CHECK_FALSE(verify_first_boot(plan, tampered, cmdline).empty());
}

namespace {
// The NetworkManager keyfile firstrun.sh writes for the node, cut out of its here-document.
std::string keyfile_in(const std::string& script) {
  const std::string start = ".nmconnection <<'AGGRIK8S_NET'\n";
  std::size_t from = script.find(start);
  if (from == std::string::npos) return {};
  from += start.size();
  return script.substr(from, script.find("AGGRIK8S_NET\n", from) - from);
}
}  // namespace

TEST_CASE("first boot: static IPv4, IPv6 and dual-stack networks in NetworkManager's keyfile and cloud-init", "[first-boot]") {
  Rpi5Node node = sample_node();
  node.network.mode = NetworkSettings::Mode::static_address;
  auto plan_for = [&](FirstBootFormat format) { return plan_first_boot(format, node, {}, "/boot/firmware"); };

  SECTION("IPv4 only: IPv6 keeps router advertisements") {
    node.network.addresses = {"10.0.0.11/24"};
    node.network.gateways = {"10.0.0.1"};
    node.network.dns = {"10.0.0.53", "10.0.0.54"};
    CHECK(keyfile_in(plan_for(FirstBootFormat::firstrun_script).boot_files.at("firstrun.sh")) ==
          "[connection]\nid=aggrik8s-eth0\ntype=ethernet\ninterface-name=eth0\nautoconnect-priority=100\n\n"
          "[ipv4]\nmethod=manual\naddress1=10.0.0.11/24,10.0.0.1\ndns=10.0.0.53;10.0.0.54;\n\n"
          "[ipv6]\nmethod=auto\n");
  }
  SECTION("IPv6 only: no DHCPv4 beside the chosen address") {
    node.network.addresses = {"fd00:10::11/64"};
    node.network.gateways = {"fd00:10::1"};
    node.network.dns = {"fd00:10::53"};
    CHECK(keyfile_in(plan_for(FirstBootFormat::firstrun_script).boot_files.at("firstrun.sh")) ==
          "[connection]\nid=aggrik8s-eth0\ntype=ethernet\ninterface-name=eth0\nautoconnect-priority=100\n\n"
          "[ipv4]\nmethod=disabled\n\n"
          "[ipv6]\nmethod=manual\naddress1=fd00:10::11/64,fd00:10::1\ndns=fd00:10::53;\n");
    YAML::Node net = YAML::Load(plan_for(FirstBootFormat::cloud_init).boot_files.at("network-config"))["network"]["ethernets"]["eth0"];
    CHECK(net["dhcp4"].as<bool>() == false);
    CHECK(net["addresses"][0].as<std::string>() == "fd00:10::11/64");
    REQUIRE(net["routes"].size() == 1);
    CHECK(net["routes"][0]["to"].as<std::string>() == "::/0");
    CHECK(net["routes"][0]["via"].as<std::string>() == "fd00:10::1");
    CHECK(net["nameservers"]["addresses"][0].as<std::string>() == "fd00:10::53");
  }
  SECTION("dual stack: each family its addresses, gateway and DNS servers") {
    node.network.addresses = {"fd00:10::11/64", "10.0.0.11/24", "10.0.1.11/24"};
    node.network.gateways = {"10.0.0.1", "fd00:10::1"};
    node.network.dns = {"fd00:10::53", "10.0.0.53"};
    CHECK(keyfile_in(plan_for(FirstBootFormat::firstrun_script).boot_files.at("firstrun.sh")) ==
          "[connection]\nid=aggrik8s-eth0\ntype=ethernet\ninterface-name=eth0\nautoconnect-priority=100\n\n"
          "[ipv4]\nmethod=manual\naddress1=10.0.0.11/24,10.0.0.1\naddress2=10.0.1.11/24\ndns=10.0.0.53;\n\n"
          "[ipv6]\nmethod=manual\naddress1=fd00:10::11/64,fd00:10::1\ndns=fd00:10::53;\n");
    YAML::Node net = YAML::Load(plan_for(FirstBootFormat::cloud_init).boot_files.at("network-config"))["network"]["ethernets"]["eth0"];
    REQUIRE(net["addresses"].size() == 3);
    REQUIRE(net["routes"].size() == 2);
    CHECK(net["routes"][0]["to"].as<std::string>() == "default");
    CHECK(net["routes"][0]["via"].as<std::string>() == "10.0.0.1");
    CHECK(net["routes"][1]["to"].as<std::string>() == "::/0");
    CHECK(net["routes"][1]["via"].as<std::string>() == "fd00:10::1");
  }
}

TEST_CASE("cmdline.txt longer than the kernel keeps is refused, naming its last argument, and near it warned about", "[cmdline]") {
  // The kernel kept 2047 bytes and cut aggrik8s.identity= (the last argument) off, silently.
  std::string line = "console=serial0,115200 root=PARTUUID=a1b2c3d4-02 x.pad=" + std::string(1990, 'a') + " last=1\n";
  REQUIRE(line.size() - 1 > 2047);
  CHECK_THROWS_WITH(check_pi_cmdline_length(line, "node w1"),
                    Catch::Contains("node w1: cmdline.txt is " + std::to_string(line.size() - 1) +
                                    " bytes; the kernel keeps 2047") && Catch::Contains("its last argument is last=1"));
  std::string near = "x=" + std::string(1600, 'a') + "\n";
  auto warning = check_pi_cmdline_length(near, "node w1");
  REQUIRE(warning);
  CHECK_THAT(*warning, Catch::Contains("the firmware adds its own arguments"));
  CHECK_FALSE(check_pi_cmdline_length("console=serial0,115200 root=PARTUUID=a1b2c3d4-02 rootwait\n", "node w1"));
  CHECK_FALSE(check_pi_cmdline_length(std::string(1536, 'a'), "node w1"));
}
