#pragma once
// Who may receive a node's secrets: its Talos machine config (the cluster's PKI), cloud-init user-data,
// RKE2 config (join token), and the files on a Raspberry Pi's boot partition that carry password
// hashes, keys and Wi-Fi passwords. Naming the node (MAC/UUID/serial in the URL or TFTP path) is no
// proof: anyone can type a MAC. The requesting address must be tied to the node by one of, strongest
// first:
//   pinned     `address:` in the nodes file;
//   lease      the DHCP lease the server granted the node (full mode);
//   neighbour  the kernel's IPv4 neighbour (ARP) table maps the requesting address to the node's
//              `match.mac`. Only for directly attached subnets (behind a router or DHCP relay the table
//              holds the router's MAC, so this proof never succeeds there) and only as good as ARP:
//              a machine on the same L2 segment can answer ARP for another's address or use its MAC.
//              The same holds for a DHCP lease, which is also granted on the MAC a client claims.
//   last-asker the address that last fetched the node's boot script (or, for a Pi, any file of its
//              TFTP tree). Not a proof: whoever asks last becomes the node. Opt-in only
//              (node_secrets.proof: last-asker), warned about at start.
// A pinned or leased address is final: a client elsewhere is refused whatever else it could show.
// decide_node_secret_access is pure; the service feeds it the address book and /proc/net/arp.
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "netboot/service/node_address_book.hpp"

namespace aggrik8s::netboot {

// node_secrets.proof in netboot.yaml: the weakest proof accepted. Each level accepts the ones above.
enum class NodeSecretProof {
  bound,       // pinned address or DHCP lease only
  neighbour,   // ... or the neighbour table (default)
  last_asker,  // ... or the last address to fetch the node's boot script (insecure)
};
const char* to_string(NodeSecretProof proof);  // "bound", "neighbour", "last-asker"
std::optional<NodeSecretProof> parse_node_secret_proof(std::string_view text);

// One complete IPv4 neighbour entry: the kernel has resolved `address` to `mac` on `device`.
struct NeighbourEntry {
  std::string address;  // dotted quad
  std::string mac;      // lowercase colon form
  std::string device;
};

// The text of /proc/net/arp -> its complete Ethernet entries. Incomplete entries (flags without
// ATF_COM 0x2: resolution pending or failed) and published proxy-ARP entries (ATF_PUBL 0x8) are left
// out; STALE entries are complete and kept (the MAC that last answered for the address). Lines that do
// not parse are skipped. Pure.
std::vector<NeighbourEntry> parse_proc_net_arp(std::string_view text);

struct NodeSecretRequest {
  std::string node;                     // for messages
  std::optional<NodeAddress> expected;  // the address book's strongest entry for the node
  std::optional<std::string> node_mac;  // the node's match.mac, normalised
  std::string client;                   // the requesting address
  NodeSecretProof proof = NodeSecretProof::neighbour;
};

struct NodeSecretDecision {
  bool allowed = false;
  std::string why;  // the proof that was accepted, or why none was; names addresses and MACs, no secrets
};

// `neighbours` is called at most once, and only when no pinned or leased address decides.
NodeSecretDecision decide_node_secret_access(const NodeSecretRequest& request,
                                             const std::function<std::vector<NeighbourEntry>()>& neighbours);

// Files of a Raspberry Pi boot partition that can carry secrets: firstrun.sh (password hash, SSH keys,
// Wi-Fi PSK), cloud-init user-data (password hashes, keys, tokens) and network-config (Wi-Fi
// passwords). meta-data (instance id, host name) is not among them. `name` is the path inside the
// partition; compared case-insensitively, as FAT looks names up. A name with '~' in its last component
// is treated as secret too: FAT also finds a file by its 8.3 alias (USER-D~1 for user-data), and the
// Pi firmware never asks for such names.
bool is_secret_boot_partition_file(std::string_view name);

}  // namespace aggrik8s::netboot
