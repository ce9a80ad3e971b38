#pragma once
// The identity of an ephemeral (RAM-only, rebuilt-on-reboot) node: what its root filesystem cannot
// keep, because it starts fresh from the build on every boot, but what must stay the same so the
// cluster and its users see the same node return:
//   - the RKE2 node password (/etc/rancher/node/password): RKE2's server remembers it per node name
//     (secret <node>.node-password.rke2 in kube-system) and rejects the same name with another one
//     ("Node password rejected");
//   - the SSH host key (/etc/ssh/ssh_host_ed25519_key and .pub), so known_hosts stays valid;
//   - the machine-id (/etc/machine-id): systemd would make a new one per boot, and the journal's
//     directory and the DHCP client's DUID/IAID follow it.
// The server makes it on the node's first boot, keeps it in <state_dir>/identity/<node>.json and hands
// it to the node at every boot as a tar (identity_bundle_tar) that the initramfs extracts into the
// new root.
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/secret.hpp"
#include "netboot/service/openssh_ed25519_key.hpp"

namespace aggrik8s::netboot {

struct NodeIdentity {
  std::string node_name;
  Secret node_password;         // 32 lowercase hex characters (16 random bytes), as RKE2 makes it
  Ed25519KeyPair ssh_host_key;  // the node's ssh_host_ed25519_key
  std::string machine_id;       // 32 lowercase hex characters, a random (v4) 128-bit id as systemd makes it
  std::int64_t created_at = 0;  // seconds since the epoch; the bundle's mtime when no fixed time is given
};

// A new identity from OpenSSL's CSPRNG. `node_name` must be a DNS label (Error otherwise).
NodeIdentity generate_node_identity(const std::string& node_name, std::int64_t created_at);

// The store's file format (one JSON object, see docs/netboot.md) and its parser. `file` names the file
// in messages. Parsing checks every field (password and machine-id syntax, the public key against the
// private one) and throws Error naming the file and field; never regenerates.
std::string node_identity_json(const NodeIdentity& identity);
NodeIdentity parse_node_identity_json(std::string_view text, const std::string& file);

// <directory>/<node>.json, one file per node. The directory is created 0700 when missing (its parent
// must exist) and refused when it is not a directory owned by this user, or is accessible by group or
// others: it holds every node's password and host key.
//
// Files are written once, never replaced: a new file is written to a temporary name in the same
// directory (0600, fsync), linked to its final name (link(2) fails if the name exists, so a second
// server or thread racing for the same node reads the winner's identity instead of replacing it), and
// the directory is fsynced. A file that cannot be read or parsed is an error naming it, not a reason
// to make a new identity: RKE2 would reject the node under its old name. Secrets are never logged;
// the SSH key's fingerprint is.
//
// Thread-safe: serve answers requests on several threads.
class EphemeralIdentityStore {
 public:
  explicit EphemeralIdentityStore(std::filesystem::path directory);

  // The node's identity, made and stored on its first call. Error when `node_name` is not a DNS label
  // or the file cannot be written or read.
  NodeIdentity get_or_create(const std::string& node_name);
  // The stored identity, nullopt when the node has none yet.
  std::optional<NodeIdentity> find(const std::string& node_name) const;

  const std::filesystem::path& directory() const { return directory_; }
  std::filesystem::path file_of(const std::string& node_name) const;  // Error unless a DNS label

 private:
  std::filesystem::path directory_;
  std::mutex creating_;  // one identity made at a time in this process: nobody generates keys for nothing
};

// Paths of the generated files inside the bundle (relative: extracted with `tar -x -C /newroot`).
inline constexpr std::string_view identity_node_password_path = "etc/rancher/node/password";
inline constexpr std::string_view identity_ssh_host_key_path = "etc/ssh/ssh_host_ed25519_key";
inline constexpr std::string_view identity_ssh_host_public_key_path = "etc/ssh/ssh_host_ed25519_key.pub";
inline constexpr std::string_view identity_machine_id_path = "etc/machine-id";

// The node's identity bundle, a POSIX (pax) tar built in memory. Pure: the same arguments give the same
// bytes.
//   1. Every entry of `node_layer_tar` (the per-node files the builder wrote: hostname, RKE2
//      config.yaml with its token, overlays...), in order, headers and data unchanged; it may be empty.
//      An entry at one of the four generated paths is left out: the generated file overrides it.
//      Names that are absolute or contain ".." are refused (Error naming the entry): the bundle is
//      extracted as root into the node's new root.
//   2. Directories etc/, etc/rancher/, etc/rancher/node/, etc/ssh/ (0755, as RKE2 and OpenSSH make
//      them), each only when the layer has no entry for it.
//   3. etc/rancher/node/password (0600, "<password>\n"), etc/ssh/ssh_host_ed25519_key (0600),
//      etc/ssh/ssh_host_ed25519_key.pub (0644, "ssh-ed25519 AAAA... root@<hostname>"), etc/machine-id
//      (0444, "<id>\n"); all owned 0:0, by number (no user or group names).
// `mtime` (SOURCE_DATE_EPOCH) is the time of the generated entries; without it, the identity's
// created_at. `hostname` goes into the key comments; it must be a host name (letters, digits, '-',
// '.'), else Error.
std::string identity_bundle_tar(const NodeIdentity& identity, std::string_view node_layer_tar,
                                const std::string& hostname, std::optional<std::int64_t> mtime);

}  // namespace aggrik8s::netboot
