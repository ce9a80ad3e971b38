// Flash-time per-node edits of first-boot files, on the files builder/rpi/first_boot.cpp writes.
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>

#include "builder/rpi/boot_partition_customization.hpp"
#include "builder/rpi/first_boot.hpp"
#include "flash/image_flasher.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

Rpi5Node node_with_user() {
  Rpi5Node node;
  node.name = "pi-01";
  node.system.hostname = "pi-01";
  UserAccount user;
  user.name = "ops";
  user.ssh_authorized_keys = {"ssh-ed25519 AAAAold ops@laptop"};
  node.system.users.push_back(user);
  return node;
}

}  // namespace

TEST_CASE("flash customization: firstrun.sh hostname and keys", "[flash]") {
  auto plan = plan_first_boot(FirstBootFormat::firstrun_script, node_with_user(), {}, "/boot/firmware");
  std::string script = plan.boot_files.at("firstrun.sh");
  std::string renamed = set_firstrun_hostname(script, "pi-07");
  CHECK(renamed.find("NEW_HOSTNAME='pi-07'\n") != std::string::npos);
  CHECK(renamed.find("NEW_HOSTNAME='pi-01'") == std::string::npos);
  CHECK(renamed.size() == script.size());

  std::string keyed = add_firstrun_ssh_keys(renamed, {"ssh-ed25519 AAAAnew admin@desk"});
  CHECK(keyed.find("ssh-ed25519 AAAAold ops@laptop\nssh-ed25519 AAAAnew admin@desk\nAGGRIK8S_KEYS\n") != std::string::npos);
  // Adding the same key again changes nothing.
  CHECK(add_firstrun_ssh_keys(keyed, {"ssh-ed25519 AAAAnew admin@desk"}) == keyed);
  // A "key" that would end the here-document and run the rest as root at first boot is refused.
  CHECK_THROWS_WITH(add_firstrun_ssh_keys(keyed, {"ssh-ed25519 AAAAx c\nAGGRIK8S_KEYS\ntouch /root/pwned"}),
                    Catch::Contains("not an SSH public key line"));
  CHECK_THROWS_WITH(add_firstrun_ssh_keys(keyed, {"AGGRIK8S_KEYS"}), Catch::Contains("not an SSH public key line"));

  CHECK_THROWS_WITH(set_firstrun_hostname("#!/bin/bash\necho hi\n", "x"), Catch::Contains("NEW_HOSTNAME"));
  Rpi5Node keyless = node_with_user();
  keyless.system.users.clear();
  auto keyless_plan = plan_first_boot(FirstBootFormat::firstrun_script, keyless, {}, "/boot/firmware");
  CHECK_THROWS_WITH(add_firstrun_ssh_keys(keyless_plan.boot_files.at("firstrun.sh"), {"ssh-ed25519 A b"}),
                    Catch::Contains("no authorized_keys"));
}

TEST_CASE("flash customization: cloud-init user-data, meta-data and a new instance id", "[flash]") {
  auto plan = plan_first_boot(FirstBootFormat::cloud_init, node_with_user(), {}, "/boot/firmware");
  std::string user_data = edit_cloud_init_user_data(plan.boot_files.at("user-data"), std::string("pi-07"),
                                                    {"ssh-ed25519 AAAAnew admin@desk"});
  CHECK(user_data.starts_with("#cloud-config\n"));
  YAML::Node parsed = YAML::Load(user_data);
  CHECK(parsed["hostname"].as<std::string>() == "pi-07");
  CHECK(parsed["preserve_hostname"].as<bool>() == false);
  YAML::Node keys = parsed["users"][1]["ssh_authorized_keys"];
  REQUIRE(keys.size() == 2);
  CHECK(keys[1].as<std::string>() == "ssh-ed25519 AAAAnew admin@desk");

  std::string id = cloud_init_instance_id("pi-07", user_data, plan.boot_files.at("network-config"));
  CHECK(id.starts_with("aggrik8s-pi-07-"));
  CHECK(id.size() == std::string("aggrik8s-pi-07-").size() + 12);
  CHECK(id != plan.instance_id);
  std::string meta = set_meta_data(plan.boot_files.at("meta-data"), id, std::string("pi-07"));
  CHECK(meta == "instance-id: " + id + "\nlocal-hostname: pi-07\n");

  // No named user: keys go to the top level (the image's default user).
  std::string plain = edit_cloud_init_user_data("#cloud-config\nhostname: a\n", std::nullopt, {"ssh-rsa AAAA k"});
  CHECK(YAML::Load(plain)["ssh_authorized_keys"][0].as<std::string>() == "ssh-rsa AAAA k");
  CHECK_THROWS_WITH(edit_cloud_init_user_data("- a list\n", std::nullopt, {}), Catch::Contains("not a #cloud-config map"));
}

TEST_CASE("flash: I/O errors are described for someone holding a card", "[flash]") {
  CHECK(describe_target_io_error("/dev/sdb", "open", 0, EACCES, true).find("permission denied") == 0);
  CHECK(describe_target_io_error("/dev/sdb", "write", 4096, ENODEV, false).find("/dev/sdb vanished") == 0);
  CHECK(describe_target_io_error("/dev/sdb", "write", 4096, EIO, false).find("vanished") != std::string::npos);
  auto io = describe_target_io_error("/dev/sdb", "write", 4096, EIO, true);
  CHECK(io.find("I/O error") == 0);
  CHECK(io.find("offset 4096") != std::string::npos);
  CHECK(describe_target_io_error("/dev/sdb", "write", 0, EROFS, true).find("write-protect") != std::string::npos);
}

TEST_CASE("flash customization: a comments-only user-data (as Raspberry Pi OS ships it) takes edits", "[flash]") {
  std::string edited = edit_cloud_init_user_data("#cloud-config\n\n# hostname: raspberrypi\n", std::string("pi-09"), {});
  CHECK(YAML::Load(edited)["hostname"].as<std::string>() == "pi-09");
}
