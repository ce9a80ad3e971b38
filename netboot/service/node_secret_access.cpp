#include "netboot/service/node_secret_access.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <sstream>

#include "core/identifiers.hpp"
#include "netboot/tftp/tftp_path.hpp"

namespace aggrik8s::netboot {

const char* to_string(NodeSecretProof proof) {
  switch (proof) {
    case NodeSecretProof::bound: return "bound";
    case NodeSecretProof::neighbour: return "neighbour";
    case NodeSecretProof::last_asker: return "last-asker";
  }
  return "bound";
}

std::optional<NodeSecretProof> parse_node_secret_proof(std::string_view text) {
  for (auto proof : {NodeSecretProof::bound, NodeSecretProof::neighbour, NodeSecretProof::last_asker}) {
    if (text == to_string(proof)) return proof;
  }
  return std::nullopt;
}

namespace {

std::optional<unsigned> parse_hex_field(std::string_view text) {
  if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

constexpr unsigned arphrd_ether = 1;
constexpr unsigned atf_com = 0x2;   // the entry is resolved
constexpr unsigned atf_publ = 0x8;  // published: we answer ARP for it (proxy ARP), it is not a peer

}  // namespace

std::vector<NeighbourEntry> parse_proc_net_arp(std::string_view text) {
  // "IP address       HW type     Flags       HW address            Mask     Device"
  // "10.0.0.21        0x1         0x2         52:54:00:12:34:56     *        eth1"
  std::vector<NeighbourEntry> out;
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string address, type, flags, mac, mask, device;
    if (!(fields >> address >> type >> flags >> mac >> mask >> device)) continue;  // the header, or junk
    if (!is_ipv4_address(address)) continue;
    auto type_value = parse_hex_field(type);
    auto flag_bits = parse_hex_field(flags);
    if (!type_value || !flag_bits || *type_value != arphrd_ether) continue;
    if ((*flag_bits & atf_com) == 0 || (*flag_bits & atf_publ) != 0) continue;
    auto normalized = normalize_mac(mac);
    if (!normalized || *normalized == "00:00:00:00:00:00") continue;
    out.push_back({address, *normalized, device});
  }
  return out;
}

NodeSecretDecision decide_node_secret_access(const NodeSecretRequest& request,
                                             const std::function<std::vector<NeighbourEntry>()>& neighbours) {
  const auto& expected = request.expected;
  if (expected && expected->source != NodeAddressSource::seen) {
    const char* source = expected->source == NodeAddressSource::pinned ? "pinned address" : "DHCP lease";
    if (check_node_access(expected, request.client) == NodeAccess::allowed) return {true, source};
    return {false, "the node is at " + expected->address + " (" + source + ")"};
  }
  std::string why = "no pinned address or DHCP lease for node " + request.node;
  if (request.proof == NodeSecretProof::bound) return {false, why + " (node_secrets.proof: bound)"};

  if (!request.node_mac) {
    why += ", and it has no match.mac to check the neighbour table against";
  } else {
    std::vector<NeighbourEntry> table = neighbours();
    std::vector<const NeighbourEntry*> entries;
    for (const auto& entry : table) {
      if (entry.address == request.client) entries.push_back(&entry);
    }
    // Every entry must agree: the same address resolved to another MAC on another interface is
    // someone else, and the request may have come from that one.
    bool all_match = !entries.empty() && std::all_of(entries.begin(), entries.end(), [&](const NeighbourEntry* entry) {
      return entry->mac == *request.node_mac;
    });
    if (all_match) {
      return {true, "neighbour table: " + request.client + " is at the node's MAC " + *request.node_mac + " on " +
                        entries.front()->device};
    }
    if (entries.empty()) {
      why += ", and the neighbour table has no entry for " + request.client +
             " (not on a directly attached subnet, or not resolved yet)";
    } else {
      std::string macs;
      for (const auto* entry : entries) {
        if (entry->mac == *request.node_mac) continue;
        macs += (macs.empty() ? "" : ", ") + entry->mac + " on " + entry->device;
      }
      why += ", and the neighbour table has " + request.client + " at " + macs + ", not the node's MAC " +
             *request.node_mac;
    }
  }
  if (request.proof == NodeSecretProof::last_asker) {
    if (expected && expected->address == request.client) {
      return {true, "it fetched the node's boot script last (node_secrets.proof: last-asker, no proof)"};
    }
    why += expected ? "; the last asker was " + expected->address : "; nothing has fetched its boot script";
  }
  return {false, why};
}

bool is_secret_boot_partition_file(std::string_view name) {
  TftpRelativePath relative = normalize_tftp_request_path(name);
  // A name that does not normalise is refused before any file is looked up; treat it as secret anyway.
  if (!relative.ok()) return true;
  auto slash = relative.path.rfind('/');
  std::string last = slash == std::string::npos ? relative.path : relative.path.substr(slash + 1);
  std::transform(last.begin(), last.end(), last.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (last.find('~') != std::string::npos) return true;
  return last == "firstrun.sh" || last == "user-data" || last == "network-config";
}

}  // namespace aggrik8s::netboot
