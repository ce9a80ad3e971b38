#pragma once
// The ephemeral output of an rpi5-rke2 profile (output.ephemeral): what `serve` needs to boot the
// profile's nodes from the network into RAM, fresh on every boot, from the same prepared root the disk
// images start from (base image + RKE2 preload).
//
// Layout, under OUT/ephemeral/<profile>/ (read by netboot/service/ephemeral_pi_build.hpp):
//   current.json             {"build": "<id>"}, replaced atomically as the build's last step
//   <id>/ephemeral.json      the manifest: root, initramfs, boot files, per node (all with sha256)
//   <id>/root.squashfs       the shared root: the prepared root with the ephemeral edits below; no
//                            secrets, the same for every node
//   <id>/boot/               the boot partition's files (kernels, device trees, overlays/) and our
//                            initramfs_2712 / initramfs8 (builder/rpi/ephemeral_initramfs.hpp)
//   <id>/nodes/<node>/       config.txt (the node's managed block), cmdline.txt (its kernel arguments
//                            without the URLs serve adds), layer.tar (0600: hostname, RKE2 config.yaml
//                            with the token, overlays, first-boot files): what the disk image writes
//                            into the node's root, as a tar the initramfs unpacks over the RAM root;
//                            with output.http_boot also boot.img (0600) + boot.sig: the build's boot
//                            files, our initramfs, the node's config.txt and its cmdline.txt with
//                            serve's URLs (output.ephemeral.serve_url) for Pi 5 HTTP boot
// <id> is a digest of the manifest (without its "http_boot" entry: boot.img holds the id), which holds the sha256 of every file: a build never changes once
// written, a rebuild with other inputs gets a new directory, and nodes in the middle of a boot finish
// with the one they started (serve's URLs name it). Old builds are removed by serve once no node
// booted them within a lease time.
//
// The shared root's edits (nothing in the work image changes): /etc/fstab without the root and boot
// partition lines (ephemeral_fstab), no pre-made SSH host keys (each node gets its own from serve),
// Raspberry Pi OS's regenerate_ssh_host_keys.service not enabled (it would replace the node's keys at
// every boot), and, with image_archives: omit, no RKE2 image archives.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "builder/build_output.hpp"
#include "builder/profile.hpp"
#include "builder/rpi/pi_boot_signature.hpp"
#include "builder/rpi/rke2_release.hpp"

namespace aggrik8s::builder {

// The prepared work image the ephemeral output is made from.
struct EphemeralSource {
  std::filesystem::path image;
  std::uint64_t root_offset = 0;
  std::uint64_t root_size = 0;
  std::uint32_t boot_index = 0;
  std::string boot_mount = "/boot/firmware";
  bool network_manager = false;
  bool rootfs_has_cloud_init = false;
};

struct BuiltEphemeral {
  std::string id;
  std::filesystem::path directory;  // OUT/ephemeral/<profile>/<id>
  std::vector<BuiltFile> files;     // for SHA256SUMS: root, initramfs, node layers
  nlohmann::json report;            // manifest.json's "ephemeral" entry
};

BuiltEphemeral build_ephemeral_output(const Profile& profile, const std::vector<const Rpi5Node*>& nodes,
                                      const EphemeralSource& source, const Rke2Release& release,
                                      const BuildOptions& options, PartialOutputs& partial,
                                      const RsaPrivateKey* http_boot_key = nullptr);

// Points OUT/ephemeral/<profile>/current.json at the build: the build's last step, so serve never
// sees a build whose other outputs failed.
void publish_ephemeral_build(const Profile& profile, const BuildOptions& options, const BuiltEphemeral& built);

}  // namespace aggrik8s::builder
