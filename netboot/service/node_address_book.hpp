#pragma once
// Which client address each node is at. Per-node files (Talos machine configs, cloud-init user-data,
// RKE2 configs) carry secrets, so a request for them must name the node (MAC/UUID in the URL) and come
// from the address that node has. Where that address comes from, strongest first:
//   pinned  `address:` in the nodes file;
//   lease   the DHCP server's lease for the node's MAC — record_lease() is the hook the DHCP side
//           calls when it acknowledges a lease; it ties the node until the lease ends (expiry,
//           RELEASE, DECLINE, or the address leased to another client: address_ended());
//   seen    the address the node's boot script or Pi TFTP tree was last fetched from. Only a fallback:
//           without a pin or a lease, whoever fetches a node's boot script first becomes that node.
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace aggrik8s::netboot {

enum class NodeAddressSource { pinned, lease, seen };
const char* to_string(NodeAddressSource source);

struct NodeAddress {
  std::string address;
  NodeAddressSource source = NodeAddressSource::seen;
  std::chrono::system_clock::time_point since{};
  // A lease's end: past it the lease ties the node to nothing.
  std::optional<std::chrono::system_clock::time_point> expires;
  std::string lease_client;  // the DHCP lease's client key (its MAC or option 61), for renewals
};

enum class NodeAccess { allowed, wrong_address, address_unknown };

// The rule for secrets: the node's address must be known and equal to the client's.
NodeAccess check_node_access(const std::optional<NodeAddress>& expected, const std::string& client);
// The rule for boot scripts: a pinned or leased address must match; a "seen" one may be replaced (the
// node rebooted and got a new address), so anything is allowed and then recorded.
NodeAccess check_boot_script_access(const std::optional<NodeAddress>& expected, const std::string& client);

class NodeAddressBook {
 public:
  // Replaces all pinned addresses (on load and reload); leases and sightings are kept.
  void set_pinned(const std::map<std::string, std::string>& node_addresses);
  // A lease ties `node` to `address` until `expires`; any other node's lease or sighting at that
  // address ends (the address is the new client's now).
  void record_lease(const std::string& node, const std::string& address,
                    std::optional<std::chrono::system_clock::time_point> expires = std::nullopt,
                    const std::string& client = {});
  // The address was leased to a client the request did not show to be a node: the same DHCP client
  // as a node's lease there (a Pi's initramfs renewing, without the bootloader's serial) renews that
  // node's tie; any other ends every tie at the address (address_ended).
  void record_other_lease(const std::string& address, const std::string& client,
                          std::chrono::system_clock::time_point expires);
  // The address was released or declined: no node is there any more by lease or sighting (the next
  // holder of the address must not get a node's secrets).
  void address_ended(const std::string& address);
  void record_seen(const std::string& node, const std::string& address);
  std::optional<NodeAddress> address_of(const std::string& node) const;
  // The node at this address by the strongest source, if any.
  std::optional<std::string> node_at(const std::string& address) const;

 private:
  // Leases past their end are not there (with the lock held).
  bool live(const NodeAddress& entry) const;
  // Every lease and sighting at `address` ends, but `except`'s (with the lock held).
  void end_ties_at(const std::string& address, const std::string* except);

  mutable std::mutex mutex_;
  std::map<std::string, NodeAddress> pinned_, leases_, seen_;
};

}  // namespace aggrik8s::netboot
