#pragma once
// Talos' `embedded-config` system extension, packed the way Talos' imager packs it for Talos >= 1.12
// (pkg/imager/embed.go, pkg/imager/extensions, internal/app/init):
//   - the extension's rootfs holds usr/local/etc/talos/config.yaml (0400, root-owned), made into a
//     squashfs image `<n>.sqsh` (all root-owned, zstd level 18, as Talos >= 1.8 makes it with
//     mksquashfs; here libsquashfs writes it in memory);
//   - /extensions.yaml lists the layers (image + metadata: name embedded-config, version = the
//     config's sha256, author Imager);
//   - both go into a newc archive, zstd-compressed, appended to the initramfs. Talos' init reads
//     /extensions.yaml, mounts each layer's squashfs and overlays them onto its root filesystem, where
//     the config then is at /usr/local/etc/talos/config.yaml.
// What is not reproduced: the SELinux label Talos' imager sets on config.yaml (security.selinux). See
// docs/proxmox.md.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::builder {

// Where a remastered ISO keeps that archive for GRUB, which loads it as a second initrd after
// /boot/initramfs.xz (the kernel unpacks both, as it would the single file Talos' imager writes).
inline constexpr const char* talos_extension_initrd_iso_path = "/boot/embedded-config.cpio.zst";

struct TalosExtensionLayer {
  std::string image;  // "0.sqsh", relative to the initramfs root
  std::string name;
  std::string version;
  std::string author;
  std::string description;
  std::string talos_version;  // the compatibility constraint, ">= 1.0.0"
};

// The layer Talos' imager writes for an embedded config: version = sha256 of the config.
TalosExtensionLayer embedded_config_layer(const std::string& config_yaml, const std::string& image);

// /extensions.yaml as Talos' extensions.Config serialises it. Pure.
std::string talos_extensions_yaml(const std::vector<TalosExtensionLayer>& layers);

// The layers an initramfs already lists in its /extensions.yaml (the last one, as the kernel keeps the
// last copy of a file): an Image Factory ISO with extensions has them. Walks the concatenated
// segments as the kernel does (newc archives, xz streams, zstd frames, zero padding) without keeping
// more than one file's data. Throws Error naming the offset of a segment it cannot read, because
// guessing would silently drop the node's other extensions.
// `name` is for messages ("metal-amd64.iso:/boot/initramfs.xz").
std::vector<TalosExtensionLayer> initramfs_extension_layers(std::string_view initramfs, const std::string& name);

// Parses an /extensions.yaml. Throws Error naming what is missing.
std::vector<TalosExtensionLayer> parse_talos_extensions_yaml(const std::string& text);

struct EmbeddedConfigExtension {
  TalosExtensionLayer layer;
  std::string initramfs_segment;  // zstd(newc{<image>, extensions.yaml}), to append to an initramfs
};

// Builds the squashfs in memory with libsquashfs (disk/squashfs_writer.hpp; every time `epoch`, so the
// bytes are reproducible) and the archive around it. `existing_layers` (initramfs_extension_layers of
// the ISO's initramfs) stay listed first, as Talos' imager lists the embedded config after the user's
// extensions; an existing `embedded-config` layer is replaced.
EmbeddedConfigExtension build_embedded_config_extension(const std::string& config_yaml, std::int64_t epoch,
                                                        const std::vector<TalosExtensionLayer>& existing_layers = {});

}  // namespace aggrik8s::builder
