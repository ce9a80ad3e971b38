#include "netboot/dhcp/dhcp_packet.hpp"

#include <algorithm>
#include <charconv>

namespace aggrik8s::netboot {

namespace {

std::uint32_t load_be32(std::span<const std::uint8_t> bytes, std::size_t at) {
  return (static_cast<std::uint32_t>(bytes[at]) << 24) | (static_cast<std::uint32_t>(bytes[at + 1]) << 16) |
         (static_cast<std::uint32_t>(bytes[at + 2]) << 8) | static_cast<std::uint32_t>(bytes[at + 3]);
}

void store_be32(std::uint8_t* out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<std::uint8_t>(value >> (24 - 8 * i));
}

std::vector<std::uint8_t> be32_bytes(std::uint32_t value) {
  std::vector<std::uint8_t> out(4);
  store_be32(out.data(), value);
  return out;
}

std::string text_field(std::span<const std::uint8_t> bytes, std::size_t at, std::size_t size) {
  std::string out;
  for (std::size_t i = at; i < at + size && bytes[i] != 0; ++i) out.push_back(static_cast<char>(bytes[i]));
  return out;
}

void append_option(std::vector<DhcpOption>& options, std::uint8_t code, std::span<const std::uint8_t> data) {
  // RFC 3396: several instances of one option are one option, concatenated in order.
  for (auto& option : options) {
    if (option.code == code) {
      option.data.insert(option.data.end(), data.begin(), data.end());
      return;
    }
  }
  options.push_back({code, {data.begin(), data.end()}});
}

// Parses the options in bytes[begin, end); `area` names it in errors. Returns the overload value
// (option 52) when `honour_overload`, else 0.
std::uint8_t parse_options(std::span<const std::uint8_t> bytes, std::size_t begin, std::size_t end,
                           const char* area, bool honour_overload, std::vector<DhcpOption>& options) {
  std::uint8_t overload = 0;
  std::size_t at = begin;
  while (at < end) {
    std::uint8_t code = bytes[at];
    if (code == dhcp_option::pad) {
      ++at;
      continue;
    }
    if (code == dhcp_option::end) break;
    if (at + 1 >= end) {
      throw DhcpParseError("DHCP option " + std::to_string(code) + " at byte " + std::to_string(at) + " of the " +
                               area + " has no length byte",
                           at);
    }
    std::size_t length = bytes[at + 1];
    if (at + 2 + length > end) {
      throw DhcpParseError("DHCP option " + std::to_string(code) + " at byte " + std::to_string(at) + " of the " +
                               area + " claims " + std::to_string(length) + " bytes, only " +
                               std::to_string(end - at - 2) + " remain",
                           at);
    }
    auto data = bytes.subspan(at + 2, length);
    if (code == dhcp_option::overload) {
      if (length != 1 || data[0] < 1 || data[0] > 3) {
        throw DhcpParseError("DHCP option 52 (overload) at byte " + std::to_string(at) +
                                 " must be one byte of 1, 2 or 3",
                             at);
      }
      // Only the main options area may overload the others; elsewhere it is meaningless and ignored.
      if (honour_overload) overload = data[0];
    } else {
      append_option(options, code, data);
    }
    at += 2 + length;
  }
  return overload;
}

}  // namespace

const char* to_string(DhcpMessageType type) {
  switch (type) {
    case DhcpMessageType::discover: return "DISCOVER";
    case DhcpMessageType::offer: return "OFFER";
    case DhcpMessageType::request: return "REQUEST";
    case DhcpMessageType::decline: return "DECLINE";
    case DhcpMessageType::ack: return "ACK";
    case DhcpMessageType::nak: return "NAK";
    case DhcpMessageType::release: return "RELEASE";
    case DhcpMessageType::inform: return "INFORM";
  }
  return "unknown";
}

DhcpPacket parse_dhcp_packet(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < dhcp_min_packet_size) {
    throw DhcpParseError("DHCP packet truncated (len=" + std::to_string(bytes.size()) + "), at least " +
                             std::to_string(dhcp_min_packet_size) + " expected",
                         bytes.size());
  }
  DhcpPacket packet;
  packet.op = bytes[0];
  if (packet.op != 1 && packet.op != 2) {
    throw DhcpParseError("DHCP op " + std::to_string(packet.op) + " at byte 0 is neither BOOTREQUEST (1) nor BOOTREPLY (2)", 0);
  }
  packet.htype = bytes[1];
  packet.hlen = bytes[2];
  if (packet.hlen > 16) {
    throw DhcpParseError("DHCP hardware address length " + std::to_string(packet.hlen) + " at byte 2 exceeds 16", 2);
  }
  packet.hops = bytes[3];
  packet.xid = load_be32(bytes, 4);
  packet.secs = static_cast<std::uint16_t>((bytes[8] << 8) | bytes[9]);
  packet.flags = static_cast<std::uint16_t>((bytes[10] << 8) | bytes[11]);
  packet.ciaddr = load_be32(bytes, 12);
  packet.yiaddr = load_be32(bytes, 16);
  packet.siaddr = load_be32(bytes, 20);
  packet.giaddr = load_be32(bytes, 24);
  std::copy_n(bytes.begin() + 28, 16, packet.chaddr.begin());
  std::uint32_t cookie = load_be32(bytes, dhcp_fixed_header_size);
  if (cookie != dhcp_magic_cookie) {
    char text[16];
    auto hex = std::to_chars(text, text + sizeof text, cookie, 16);
    throw DhcpParseError("DHCP magic cookie at byte 236 is 0x" + std::string(text, hex.ptr) + ", expected 0x63825363", 236);
  }
  packet.options.reserve(16);  // a PXE ROM sends about ten: no regrowth per option
  std::uint8_t overload = parse_options(bytes, dhcp_min_packet_size, bytes.size(), "options", true, packet.options);
  // RFC 2131 4.1: the options field first, then `file`, then `sname`.
  if ((overload & 1) != 0) {
    parse_options(bytes, 108, 236, "file field", false, packet.options);
  } else {
    packet.file = text_field(bytes, 108, 128);
  }
  if ((overload & 2) != 0) {
    parse_options(bytes, 44, 108, "sname field", false, packet.options);
  } else {
    packet.sname = text_field(bytes, 44, 64);
  }
  return packet;
}

std::vector<std::uint8_t> encode_dhcp_packet(const DhcpPacket& packet) {
  std::vector<std::uint8_t> out;
  out.reserve(576);  // RFC 2131's minimum datagram size: a usual reply fits in one allocation
  out.resize(dhcp_min_packet_size, 0);
  out[0] = packet.op;
  out[1] = packet.htype;
  out[2] = packet.hlen;
  out[3] = packet.hops;
  store_be32(&out[4], packet.xid);
  out[8] = static_cast<std::uint8_t>(packet.secs >> 8);
  out[9] = static_cast<std::uint8_t>(packet.secs);
  out[10] = static_cast<std::uint8_t>(packet.flags >> 8);
  out[11] = static_cast<std::uint8_t>(packet.flags);
  store_be32(&out[12], packet.ciaddr);
  store_be32(&out[16], packet.yiaddr);
  store_be32(&out[20], packet.siaddr);
  store_be32(&out[24], packet.giaddr);
  std::copy(packet.chaddr.begin(), packet.chaddr.end(), out.begin() + 28);
  // Longer names are cut: the fields are fixed-size, and a NUL-less full field is still read correctly.
  std::copy_n(packet.sname.begin(), std::min<std::size_t>(packet.sname.size(), 64), out.begin() + 44);
  std::copy_n(packet.file.begin(), std::min(packet.file.size(), dhcp_file_field_size), out.begin() + 108);
  store_be32(&out[236], dhcp_magic_cookie);
  for (const auto& option : packet.options) {
    if (option.code == dhcp_option::pad || option.code == dhcp_option::end) continue;
    std::size_t at = 0;
    do {  // an empty option is still sent once, as code + zero length
      std::size_t chunk = std::min<std::size_t>(option.data.size() - at, 255);
      out.push_back(option.code);
      out.push_back(static_cast<std::uint8_t>(chunk));
      out.insert(out.end(), option.data.begin() + static_cast<std::ptrdiff_t>(at),
                 option.data.begin() + static_cast<std::ptrdiff_t>(at + chunk));
      at += chunk;
    } while (at < option.data.size());
  }
  out.push_back(dhcp_option::end);
  if (out.size() < dhcp_bootp_min_size) out.resize(dhcp_bootp_min_size, 0);
  return out;
}

std::size_t dhcp_encoded_size(const DhcpPacket& packet) {
  std::size_t size = dhcp_min_packet_size + 1;  // the header, the cookie and END
  for (const auto& option : packet.options) {
    if (option.code == dhcp_option::pad || option.code == dhcp_option::end) continue;
    std::size_t pieces = std::max<std::size_t>(1, (option.data.size() + 254) / 255);  // RFC 3396 splits
    size += 2 * pieces + option.data.size();
  }
  return std::max(size, dhcp_bootp_min_size);
}

const DhcpOption* DhcpPacket::find(std::uint8_t code) const {
  for (const auto& option : options) {
    if (option.code == code) return &option;
  }
  return nullptr;
}

void DhcpPacket::set(std::uint8_t code, std::vector<std::uint8_t> data) {
  for (auto& option : options) {
    if (option.code == code) {
      option.data = std::move(data);
      return;
    }
  }
  options.push_back({code, std::move(data)});
}

void DhcpPacket::set(std::uint8_t code, std::string_view text) { set(code, std::vector<std::uint8_t>(text.begin(), text.end())); }
void DhcpPacket::set_address(std::uint8_t code, std::uint32_t address) { set(code, be32_bytes(address)); }
void DhcpPacket::set_u32(std::uint8_t code, std::uint32_t value) { set(code, be32_bytes(value)); }

void DhcpPacket::erase(std::uint8_t code) {
  std::erase_if(options, [code](const DhcpOption& option) { return option.code == code; });
}

std::string DhcpPacket::hardware_address() const {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  std::size_t length = std::min<std::size_t>(hlen, chaddr.size());
  out.reserve(length * 3);  // one allocation: a MAC's 17 characters do not fit the small-string buffer
  for (std::size_t i = 0; i < length; ++i) {
    if (i > 0 && htype == 1 && hlen == 6) out.push_back(':');
    out.push_back(digits[chaddr[i] >> 4]);
    out.push_back(digits[chaddr[i] & 15]);
  }
  return out;
}

std::optional<std::string> DhcpPacket::client_key() const {
  static constexpr char digits[] = "0123456789abcdef";
  auto hex = [](std::string out, const std::uint8_t* bytes, std::size_t size) {
    for (std::size_t i = 0; i < size; ++i) {
      out.push_back(digits[bytes[i] >> 4]);
      out.push_back(digits[bytes[i] & 15]);
    }
    return out;
  };
  std::size_t length = std::min<std::size_t>(hlen, chaddr.size());
  bool usable_chaddr = std::any_of(chaddr.begin(), chaddr.begin() + static_cast<std::ptrdiff_t>(length),
                                   [](std::uint8_t byte) { return byte != 0; });
  auto hardware_key = [&] {
    if (htype == 1 && hlen == 6) return hardware_address();
    return hex("hw" + std::to_string(htype) + ":", chaddr.data(), length);
  };
  const auto* id = find(dhcp_option::client_identifier);
  if (id != nullptr && id->data.size() >= 2) {
    bool same_as_chaddr = usable_chaddr && id->data.size() == length + 1 && id->data[0] == htype &&
                          std::equal(id->data.begin() + 1, id->data.end(), chaddr.begin());
    if (same_as_chaddr) return hardware_key();
    return hex("id:", id->data.data(), id->data.size());
  }
  if (!usable_chaddr) return std::nullopt;
  return hardware_key();
}

namespace {
std::optional<std::uint32_t> u32_option(const DhcpPacket& packet, std::uint8_t code) {
  const auto* option = packet.find(code);
  if (option == nullptr || option->data.size() != 4) return std::nullopt;
  return load_be32(option->data, 0);
}
std::optional<std::string> text_option(const DhcpPacket& packet, std::uint8_t code) {
  const auto* option = packet.find(code);
  if (option == nullptr) return std::nullopt;
  std::string text(option->data.begin(), option->data.end());
  // Some clients NUL-terminate strings: the NUL is not part of the value.
  while (!text.empty() && text.back() == '\0') text.pop_back();
  return text;
}
}  // namespace

std::optional<DhcpMessageType> DhcpPacket::message_type() const {
  const auto* option = find(dhcp_option::message_type);
  if (option == nullptr || option->data.size() != 1 || option->data[0] < 1 || option->data[0] > 8) return std::nullopt;
  return static_cast<DhcpMessageType>(option->data[0]);
}
std::optional<std::uint32_t> DhcpPacket::server_identifier() const { return u32_option(*this, dhcp_option::server_identifier); }
std::optional<std::uint32_t> DhcpPacket::requested_address() const { return u32_option(*this, dhcp_option::requested_address); }
std::optional<std::uint32_t> DhcpPacket::lease_time() const { return u32_option(*this, dhcp_option::lease_time); }

std::vector<std::uint8_t> DhcpPacket::parameter_request_list() const {
  const auto* option = find(dhcp_option::parameter_request_list);
  return option != nullptr ? option->data : std::vector<std::uint8_t>{};
}
std::optional<std::string> DhcpPacket::vendor_class() const { return text_option(*this, dhcp_option::vendor_class); }
std::optional<std::vector<std::uint8_t>> DhcpPacket::client_identifier() const {
  const auto* option = find(dhcp_option::client_identifier);
  if (option == nullptr) return std::nullopt;
  return option->data;
}

std::vector<std::string> DhcpPacket::user_classes() const {
  // RFC 3004 says length-prefixed instances; iPXE (and most ROMs) send one bare string instead. A
  // value that parses cleanly as RFC 3004 instances is read as such, anything else as one string.
  const auto* option = find(dhcp_option::user_class);
  if (option == nullptr) return {};
  std::vector<std::string> classes;
  std::size_t at = 0;
  const auto& data = option->data;
  while (at < data.size()) {
    std::size_t length = data[at];
    if (length == 0 || at + 1 + length > data.size()) {
      classes.clear();
      break;
    }
    classes.emplace_back(data.begin() + static_cast<std::ptrdiff_t>(at + 1),
                         data.begin() + static_cast<std::ptrdiff_t>(at + 1 + length));
    at += 1 + length;
  }
  if (classes.empty() && !data.empty()) classes.emplace_back(data.begin(), data.end());
  return classes;
}

std::vector<std::uint16_t> DhcpPacket::client_architectures() const {
  const auto* option = find(dhcp_option::client_arch);
  std::vector<std::uint16_t> out;
  if (option == nullptr) return out;
  for (std::size_t at = 0; at + 1 < option->data.size(); at += 2) {
    out.push_back(static_cast<std::uint16_t>((option->data[at] << 8) | option->data[at + 1]));
  }
  return out;
}

std::optional<std::array<std::uint8_t, 3>> DhcpPacket::client_ndi() const {
  const auto* option = find(dhcp_option::client_ndi);
  if (option == nullptr || option->data.size() != 3) return std::nullopt;
  return std::array<std::uint8_t, 3>{option->data[0], option->data[1], option->data[2]};
}

std::optional<std::vector<std::uint8_t>> DhcpPacket::client_uuid() const {
  const auto* option = find(dhcp_option::client_uuid);
  if (option == nullptr) return std::nullopt;
  return option->data;
}
std::optional<std::string> DhcpPacket::tftp_server_name() const { return text_option(*this, dhcp_option::tftp_server_name); }
std::optional<std::string> DhcpPacket::bootfile_name() const { return text_option(*this, dhcp_option::bootfile_name); }

bool DhcpPacket::is_ipxe() const {
  if (has(dhcp_option::ipxe_encapsulated)) return true;
  auto classes = user_classes();
  return std::find(classes.begin(), classes.end(), "iPXE") != classes.end();
}

std::vector<std::uint8_t> encode_pxe_vendor_options(const std::vector<PxeSubOption>& sub_options) {
  std::vector<std::uint8_t> out;
  for (const auto& sub : sub_options) {
    out.push_back(sub.code);
    out.push_back(static_cast<std::uint8_t>(std::min<std::size_t>(sub.data.size(), 255)));
    out.insert(out.end(), sub.data.begin(), sub.data.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(sub.data.size(), 255)));
  }
  out.push_back(255);
  return out;
}

std::vector<std::uint8_t> pxe_bios_skip_discovery_option() { return encode_pxe_vendor_options({{6, {8}}}); }

std::vector<std::uint8_t> raspberry_pi_boot_option() {
  const std::string_view menu = "Raspberry Pi Boot";
  std::vector<std::uint8_t> boot_menu = {0, 0, static_cast<std::uint8_t>(menu.size())};  // type 0, then the text
  boot_menu.insert(boot_menu.end(), menu.begin(), menu.end());
  return encode_pxe_vendor_options({
      {6, {3}},                     // discovery control: no broadcast/multicast discovery
      {10, {0, 'P', 'X', 'E'}},     // menu prompt: timeout 0, "PXE"
      {9, std::move(boot_menu)},    // boot menu
  });
}

std::string ipv4_to_string(std::uint32_t address) {
  // Formatted in place: at most 15 characters, which fit std::string's inline buffer, so no allocation
  // (every lease line of the journal holds one).
  char text[16];
  char* at = text;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (shift != 24) *at++ = '.';
    at = std::to_chars(at, text + sizeof text, (address >> shift) & 255).ptr;
  }
  return std::string(text, at);
}

std::optional<std::uint32_t> parse_ipv4(std::string_view text) {
  std::uint32_t address = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (text.empty() || text.front() != '.') return std::nullopt;
      text.remove_prefix(1);
    }
    unsigned value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end == text.data() || value > 255 || end - text.data() > 3) return std::nullopt;
    text.remove_prefix(static_cast<std::size_t>(end - text.data()));
    address = (address << 8) | value;
  }
  if (!text.empty()) return std::nullopt;
  return address;
}

}  // namespace aggrik8s::netboot
