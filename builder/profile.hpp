#pragma once
// Build profiles: what to build, from which inputs, for which nodes (docs/profiles.md is the user's
// reference; keep the two in step). A profile is read in three steps:
//   1. load the YAML file and every file it `extends:`, merging maps (core/config_node.hpp),
//   2. for each node, overlay the node's own settings on the profile,
//   3. read the merged trees into the typed structs below, collecting every error with its file:line:col.
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/artifact_source.hpp"
#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "core/secret.hpp"

namespace aggrik8s::builder {

enum class ProfileKind { rpi5_rke2, talos_iso };

const char* to_string(ProfileKind kind);

struct Rke2Settings {
  std::string version;             // e.g. v1.33.1+rke2r1
  std::string release;             // URL or absolute directory holding the release files
  std::optional<Sha256Digest> checksums_sha256;  // pins sha256sum-<arch>.txt itself
  std::vector<std::string> images;  // image archive names without suffix, e.g. rke2-images-core
  std::string role;                // server | agent
  std::optional<std::string> server;  // https://host:9345; agents and joining servers
  std::optional<SecretReference> token;
  ConfigNode config;               // more config.yaml keys, passed through as written
  std::optional<ConfigNode> registries;  // registries.yaml content
  SourceLocation where;
};

struct UserAccount {
  std::string name;
  std::optional<SecretReference> password_hash;  // a crypt(3) hash, still kept out of the profile
  std::vector<std::string> ssh_authorized_keys;
  bool sudo = true;
};

struct SystemSettings {
  std::string hostname;
  std::optional<std::string> timezone;
  std::optional<std::string> locale;
  std::optional<std::string> keyboard;
  std::vector<UserAccount> users;
  bool ssh = true;
  bool ssh_password_authentication = false;
};

struct NetworkSettings {
  enum class Mode { dhcp, static_address };
  Mode mode = Mode::dhcp;
  std::string interface = "eth0";
  std::vector<std::string> addresses;  // static: CIDR, IPv4 and/or IPv6 ("10.0.0.11/24", "fd00:10::11/64")
  std::vector<std::string> gateways;   // static: default routes, at most one IPv4 and one IPv6
  std::vector<std::string> dns;        // IPv4 and/or IPv6
};

struct PiBootSettings {
  enum class Storage { sd, nvme };
  Storage storage = Storage::sd;
  std::optional<int> pcie_gen;           // 1..3; 3 is uncertified but common for NVMe
  int kernel_page_size_kib = 16;         // 16 (kernel_2712.img) or 4 (kernel8.img)
  std::vector<std::string> config_txt;   // extra config.txt lines, appended in an [all] section
  std::vector<std::string> cmdline;      // extra kernel arguments
};

// The ephemeral output of an rpi5-rke2 profile: nodes that netboot from `serve` and run from RAM
// (docs/profiles.md, "Ephemeral output").
struct EphemeralSettings {
  std::string compression = "zstd";  // the squashfs root's compressor: zstd, xz, gzip, lz4
  // Where the RKE2 image archives live: in the RAM root (`root`), or left out of it (`omit`) for nodes
  // that pull images from a registry mirror (rke2.registries) instead.
  enum class ImageArchives { root, omit };
  ImageArchives image_archives = ImageArchives::root;
  std::uint64_t memory = 4ull << 30;           // the nodes' RAM: a root that cannot fit fails the build
  std::uint64_t runtime_reserve = 1ull << 30;  // RAM the running system needs beyond root and images
  std::vector<std::string> modules;            // more kernel modules for the initramfs
  std::optional<std::filesystem::path> busybox;  // a static arm64 busybox (binary or busybox-static .deb)
  // Where `serve` answers (http://10.0.0.2:8080) and the nodes-file profile that serves this build
  // (default: the build profile's name): the URLs in the cmdline.txt of each node's HTTP boot.img.
  std::optional<std::string> serve_url;
  std::optional<std::string> serve_profile;
};

// Raspberry Pi 5 HTTP boot (docs/profiles.md, "HTTP boot"): a signed boot.img per node for `serve`.
struct HttpBootSettings {
  SecretReference key;                      // the RSA-2048 private key (PEM) boot.sig is signed with
  std::optional<std::uint64_t> image_size;  // boot.img's size; default: sized to fit the boot files
};

struct OutputSettings {
  std::optional<std::uint64_t> image_size;  // grow the image to this; default: just enough
  std::uint64_t root_free_space = 512ull << 20;  // at least this much free in the root fs after preload
  std::vector<std::string> compress;        // zstd, xz
  bool bmap = true;
  bool grow_root = true;  // false: never grow the root partition/filesystem; the base must have room
  bool disk_images = true;  // rpi5-rke2: write <node>.img (false: only the ephemeral output)
  std::optional<EphemeralSettings> ephemeral;  // rpi5-rke2: also write the ephemeral (netboot, RAM) output
  std::optional<HttpBootSettings> http_boot;  // rpi5-rke2: also write <node>.boot.img and .boot.sig
};

struct Rpi5Node {
  std::string name;
  SystemSettings system;
  NetworkSettings network;
  Rke2Settings rke2;
  PiBootSettings boot;
  std::vector<std::filesystem::path> overlays;
};

struct TalosPatch {
  enum class Kind { merge, json6902 };
  Kind kind = Kind::merge;
  ConfigNode content;  // a merge patch map, or a list of RFC 6902 operations
  SourceLocation where;
};

struct TalosNode {
  std::string name;
  std::optional<std::string> mac;    // aa:bb:cc:dd:ee:ff
  std::optional<std::string> uuid;   // SMBIOS UUID
  std::string hostname;              // a DNS name (a label, or a FQDN as Talos takes); default: the name
  bool hostname_given = false;       // nodes[].hostname was set: it wins over a patch's hostname
  std::vector<std::string> addresses;  // CIDR, IPv4 and/or IPv6 ("10.0.20.11/24", "fd00:55::12/64")
  std::vector<std::string> gateways;   // default routes: at most one IPv4 and one IPv6
  std::optional<std::string> install_disk;
  std::vector<TalosPatch> patches;   // profile-wide patches first, then the node's
  std::vector<std::string> kernel_args;
  std::optional<SecretReference> config;  // overrides the profile's config (e.g. controlplane vs worker)
};

struct TalosSettings {
  std::optional<std::string> version;
  std::optional<ArtifactSource> iso;
  std::optional<ArtifactSource> kernel;
  std::optional<ArtifactSource> initramfs;
  std::optional<SecretReference> config;
  std::vector<std::string> outputs;  // config-iso, iso, netboot
  std::optional<std::string> netboot_url;  // base URL of `aggrik8s-image serve` for talos.config=
};

// Where `upload` (and `build --upload`) put the ISO outputs: a Proxmox VE storage, through its API.
struct ProxmoxSettings {
  std::string api_url;   // normalised: https://HOST:PORT/api2/json
  std::string token_id;  // USER@REALM!TOKENID
  SecretReference token_secret;
  std::string node;
  std::string storage;
  bool verify_tls = true;
  std::optional<std::filesystem::path> ca_file;  // CA bundle instead of the system's
  std::optional<std::string> fingerprint;        // pinned SHA-256 certificate fingerprint, lowercase hex
};

struct Profile {
  std::filesystem::path file;
  std::string name;
  ProfileKind kind = ProfileKind::rpi5_rke2;
  std::string description;
  std::vector<std::filesystem::path> extends;  // every file merged in, outermost first
  OutputSettings output;
  // rpi5-rke2
  std::optional<ArtifactSource> base;
  std::vector<Rpi5Node> rpi_nodes;
  // talos-iso
  TalosSettings talos;
  std::vector<TalosNode> talos_nodes;
  std::optional<ProxmoxSettings> proxmox;

  // Every input a build downloads or reads, for `fetch` and the manifest.
  std::vector<ArtifactSource> inputs() const;
  std::vector<std::string> node_names() const;
};

struct ProfileCheckOptions {
  bool check_secrets = true;  // secret files readable / variables set
  bool check_paths = true;    // overlay directories exist (inputs are checked when fetched)
};

// Reads and checks a profile. Returns nullopt when there were errors; every error is in `diagnostics`.
std::optional<Profile> load_profile(const std::filesystem::path& path, Diagnostics& diagnostics,
                                    const ProfileCheckOptions& options = {});

// The same with the profile's `nodes:` replaced by what `nodes_for` returns, given the profile's merged
// tree (extends applied): how a site inventory builds its machines with a profile (site/). The nodes'
// own locations (in the site file) are where their errors point.
// A profile's merged tree (its `extends:` applied), unchecked: for callers that need a setting before
// the nodes it will be read with exist (a site checks kinds and outputs against its machines first).
// A null node when the files cannot be read (the diagnostics say why).
ConfigNode load_profile_tree(const std::filesystem::path& path, Diagnostics& diagnostics);

using NodesFromProfileTree = std::function<ConfigNode(const ConfigNode& profile_tree)>;
std::optional<Profile> load_profile_with_nodes(const std::filesystem::path& path, const NodesFromProfileTree& nodes_for,
                                               Diagnostics& diagnostics, const ProfileCheckOptions& options = {});

}  // namespace aggrik8s::builder
