#pragma once
// Per-node touches made at flash time, so one built image can be flashed onto many cards that differ
// only in hostname, SSH keys or a few files: `aggrik8s-image flash --hostname pi-07 --ssh-key
// id.pub --file wifi.conf:wifi.conf`.
//
// They go into the FAT boot partition (partition 1), written in-process without mounting, in the
// first-boot format the image already carries (builder/rpi/first_boot.hpp writes one of the two):
//  - firstrun.sh (Bookworm): the `NEW_HOSTNAME=` line is replaced; SSH keys are added to every
//    authorized_keys block the script writes (the `<<'AGGRIK8S_KEYS'` here-documents).
//  - cloud-init NoCloud (Trixie): user-data's `hostname` is set and the keys appended to each named
//    user's `ssh_authorized_keys` (or to the top-level list when no user is named); meta-data's
//    `local-hostname` follows. Because cloud-init applies per-instance settings only once per
//    instance id, a new id is made ("aggrik8s-<hostname>-<sha256 of user-data + network-config,
//    12 hex>", the builder's scheme) and written to meta-data and to cmdline.txt's ds=nocloud;i=.
// An image with neither cannot take a hostname or keys: that is an error, not a silent no-op (the
// top rpi-imager complaint is customisation silently not applied).
//
// Every file written is read back from the card after the flash's commit and compared.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"

namespace aggrik8s::builder {

struct BootPartitionCustomization {
  std::optional<std::string> hostname;
  std::vector<std::string> ssh_keys;                     // public key lines
  std::vector<std::pair<std::string, std::string>> files;  // path on the boot partition -> content

  bool empty() const { return !hostname && ssh_keys.empty() && files.empty(); }
};

// Pure edits (unit-tested). Each throws Error when the input lacks what it must change.
std::string set_firstrun_hostname(const std::string& script, const std::string& hostname);
std::string add_firstrun_ssh_keys(const std::string& script, const std::vector<std::string>& keys);
std::string edit_cloud_init_user_data(const std::string& user_data, const std::optional<std::string>& hostname,
                                      const std::vector<std::string>& keys);
std::string cloud_init_instance_id(const std::string& hostname, const std::string& user_data,
                                   const std::string& network_config);
std::string set_meta_data(const std::string& meta_data, const std::string& instance_id,
                          const std::optional<std::string>& hostname);

// Path on the boot partition -> the content it must have afterwards.
using BootPartitionFiles = std::map<std::string, std::string>;

// Applies the customization to the FAT filesystem of partition 1 of `image` and returns what was
// written, for check_boot_partition_files.
BootPartitionFiles apply_boot_partition_customization(BlockDevice& image, const BootPartitionCustomization& customization);
// Reads the files back from partition 1 of `image`; throws Error listing every difference.
void check_boot_partition_files(BlockDevice& image, const BootPartitionFiles& expected);

}  // namespace aggrik8s::builder
