#pragma once
// Syntax checks for the names and addresses that appear in profiles, inventories and packets. The
// builder validates them in profiles; the server matches nodes by them, so both use one definition.
#include <optional>
#include <string>
#include <string_view>

namespace aggrik8s {

// RFC 1123 label: 1-63 of [a-z0-9-], not starting or ending with '-'. Lowercase only: Kubernetes node
// names must be.
bool is_dns_label(std::string_view name);
bool is_ipv4_address(std::string_view text);
bool is_ipv4_cidr(std::string_view text);
// 4 or 6 when `text` is an IPv4 (dotted quad) or IPv6 (inet_pton syntax, no zone) address, else 0.
int ip_address_family(std::string_view text);
// The address in its one text form (inet_ntop: IPv6 lowercase, zeros compressed), or nullopt when
// `text` is none: "FD00:10:0::11" and "fd00:10::11" are one address.
std::optional<std::string> canonical_ip_address(std::string_view text);
// 4 or 6 when `text` is such an address with a prefix length ("/24": 0..32, "/64": 0..128), else 0.
int ip_cidr_family(std::string_view text);
// One authorized_keys line as users paste it: "TYPE BASE64 [comment]", TYPE ssh-*, ecdsa-* or sk-*, on
// one line (no CR, LF or NUL: the line is written into first-boot scripts and files verbatim).
bool is_ssh_public_key_line(std::string_view line);
// "aa:bb:cc:dd:ee:ff" (also '-' separated, any case) -> lowercase colon form.
std::optional<std::string> normalize_mac(std::string_view text);
// 8-4-4-4-12 hex -> lowercase.
std::optional<std::string> normalize_uuid(std::string_view text);

}  // namespace aggrik8s
