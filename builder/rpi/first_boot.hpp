#pragma once
// First-boot settings (hostname, users, SSH keys, timezone, network) in the form the base image acts
// on. Raspberry Pi OS has used two: Bookworm runs a `firstrun.sh` from the boot partition through
// `systemd.run=` on the kernel command line (rpi-imager's format); later Trixie images read cloud-init
// NoCloud files (user-data, meta-data, network-config) from the boot partition, selected by
// `ds=nocloud;i=<instance-id>`. Writing the wrong one is the classic "customisation silently not
// applied", so the format is detected from the image and the result is read back and checked.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "core/secret.hpp"

namespace aggrik8s::builder {

enum class FirstBootFormat { firstrun_script, cloud_init };
const char* to_string(FirstBootFormat format);

// cloud-init when the boot partition already carries NoCloud files or the root filesystem has
// cloud-init installed; firstrun.sh otherwise.
FirstBootFormat detect_first_boot_format(bool boot_has_nocloud_files, bool rootfs_has_cloud_init);

struct FirstBootPlan {
  FirstBootFormat format = FirstBootFormat::firstrun_script;
  std::map<std::string, std::string> boot_files;  // name on the boot partition -> content
  std::vector<std::string> cmdline_remove;         // argument keys to drop first (an earlier build's)
  std::vector<std::string> cmdline_add;
  std::string instance_id;                         // cloud-init only
};

// The users' password hashes (secrets named by the profile), read now: what plan_first_boot takes.
std::map<std::string, Secret> load_user_password_hashes(const Rpi5Node& node);

// `boot_mount` is where the running system mounts the boot partition (/boot/firmware on Bookworm,
// read from the image's /etc/fstab): firstrun.sh is started by that path.
FirstBootPlan plan_first_boot(FirstBootFormat format, const Rpi5Node& node,
                              const std::map<std::string, Secret>& password_hashes, const std::string& boot_mount);

// Reads back what was written (boot files as found on the partition, the final cmdline) and returns
// every way it would not be applied; empty when it is right.
std::vector<std::string> verify_first_boot(const FirstBootPlan& plan, const std::map<std::string, std::string>& boot_files,
                                           const std::string& cmdline);

// The boot partition's mount point from an fstab: the entry whose type is vfat and mount point is
// /boot or /boot/firmware. Default /boot/firmware.
std::string boot_mount_point_from_fstab(const std::string& fstab);

// Single-quotes a value for sh.
std::string shell_quote(const std::string& value);

}  // namespace aggrik8s::builder
