#include "netboot/tftp/tftp_packet.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/endian.hpp"

namespace aggrik8s::netboot {
namespace {

std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_numeric_option(std::string_view name) {
  return name == "blksize" || name == "tsize" || name == "timeout" || name == "windowsize";
}

// Renders untrusted bytes for an error message: printable ASCII as is, the rest as \xNN, and cut short.
std::string printable(std::string_view text) {
  constexpr std::size_t limit = 64;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < limit; ++i) {
    auto byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x20 && byte < 0x7f) {
      out += static_cast<char>(byte);
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[byte >> 4];
      out += hex[byte & 0xf];
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Walks NUL-terminated strings through a datagram, naming the packet kind and field in its errors.
class StringReader {
 public:
  StringReader(std::span<const std::uint8_t> datagram, std::string_view packet_name)
      : datagram_(datagram), packet_name_(packet_name), position_(2) {}

  bool at_end() const { return position_ >= datagram_.size(); }
  std::size_t position() const { return position_; }
  std::uint8_t peek() const { return datagram_[position_]; }

  std::string_view read(std::string_view field) {
    const auto* begin = datagram_.data() + position_;
    const auto* nul = static_cast<const std::uint8_t*>(std::memchr(begin, 0, datagram_.size() - position_));
    if (nul == nullptr) {
      throw TftpParseError("TFTP " + std::string(packet_name_) + " truncated: no NUL after " + std::string(field) +
                               " at byte " + std::to_string(datagram_.size()) + " of " +
                               std::to_string(datagram_.size()),
                           datagram_.size());
    }
    auto length = static_cast<std::size_t>(nul - begin);
    std::string_view text(reinterpret_cast<const char*>(begin), length);
    position_ += length + 1;
    return text;
  }

  [[noreturn]] void fail(const std::string& what, std::size_t at) const {
    throw TftpParseError("TFTP " + std::string(packet_name_) + " " + what + " at byte " + std::to_string(at) +
                             " of " + std::to_string(datagram_.size()),
                         at);
  }

 private:
  std::span<const std::uint8_t> datagram_;
  std::string_view packet_name_;
  std::size_t position_;
};

// Options of a request or an OACK: name/value pairs to the end of the datagram. A request's options
// are the client's wishes (RFC 2347: the server acknowledges those it accepts): a repeated one counts
// once (the first) and one with a value that is no number is left to negotiation, which ignores it,
// as tftp-hpa sends the file then; refusing the whole request left such clients with nothing. An
// OACK's options are the server's answer, and must be exact.
std::vector<TftpOption> read_options(StringReader& reader, bool request) {
  const bool tolerate_nul_padding = request;
  std::vector<TftpOption> options;
  while (!reader.at_end()) {
    // Some PXE ROMs pad the request with NULs; tftp-hpa stops at the first empty option name.
    if (tolerate_nul_padding && reader.peek() == 0) break;
    std::size_t name_at = reader.position();
    std::string_view raw_name = reader.read("option name");
    if (raw_name.empty()) reader.fail("has an empty option name", name_at);
    std::string name = lower_ascii(raw_name);
    if (reader.at_end()) reader.fail("truncated: option " + printable(name) + " has no value", name_at);
    std::size_t value_at = reader.position();
    std::string_view value = reader.read("value of option " + printable(name));
    bool repeated = std::any_of(options.begin(), options.end(), [&name](const TftpOption& o) { return o.name == name; });
    if (repeated && request) continue;
    if (repeated) reader.fail("repeats option " + printable(name), name_at);
    if (!request && is_numeric_option(name) && !parse_decimal(value)) {
      reader.fail("option " + name + " value \"" + printable(value) + "\" is not a decimal number", value_at);
    }
    options.push_back(TftpOption{std::move(name), std::string(value)});
  }
  return options;
}

TftpRequest parse_request(std::span<const std::uint8_t> datagram, bool is_write) {
  StringReader reader(datagram, is_write ? "WRQ" : "RRQ");
  TftpRequest request;
  request.is_write = is_write;
  std::size_t filename_at = reader.position();
  if (reader.at_end()) reader.fail("truncated: no filename", filename_at);
  request.filename = std::string(reader.read("filename"));
  if (request.filename.empty()) reader.fail("has an empty filename", filename_at);
  std::size_t mode_at = reader.position();
  if (reader.at_end()) reader.fail("truncated: no mode", mode_at);
  std::string mode = lower_ascii(reader.read("mode"));
  if (mode == "octet") {
    request.mode = TftpMode::octet;
  } else if (mode == "netascii") {
    request.mode = TftpMode::netascii;
  } else {
    reader.fail("has unsupported mode \"" + printable(mode) + "\"", mode_at);
  }
  request.options = read_options(reader, true);
  return request;
}

void append_u16(std::vector<std::uint8_t>& out, std::uint16_t value) {
  out.resize(out.size() + 2);
  store_be16(out.data() + out.size() - 2, value);
}

void append_string(std::vector<std::uint8_t>& out, std::string_view text) {
  if (text.find('\0') != std::string_view::npos) {
    throw Error("TFTP encode: string \"" + printable(text) + "\" contains a NUL byte");
  }
  out.insert(out.end(), text.begin(), text.end());
  out.push_back(0);
}

void append_options(std::vector<std::uint8_t>& out, const std::vector<TftpOption>& options) {
  for (const auto& option : options) {
    append_string(out, option.name);
    append_string(out, option.value);
  }
}

}  // namespace

TftpPacket parse_tftp_packet(std::span<const std::uint8_t> datagram) {
  if (datagram.size() < 2) {
    throw TftpParseError("TFTP packet truncated: " + std::to_string(datagram.size()) +
                             " bytes, an opcode needs 2 at byte 0 of " + std::to_string(datagram.size()),
                         0);
  }
  std::uint16_t opcode = load_be16(datagram.data());
  switch (opcode) {
    case static_cast<std::uint16_t>(TftpOpcode::read_request): return parse_request(datagram, false);
    case static_cast<std::uint16_t>(TftpOpcode::write_request): return parse_request(datagram, true);
    case static_cast<std::uint16_t>(TftpOpcode::data): {
      if (datagram.size() < 4) {
        throw TftpParseError("TFTP DATA truncated: no block number at byte 2 of " + std::to_string(datagram.size()),
                             2);
      }
      return TftpData{load_be16(datagram.data() + 2), {datagram.begin() + 4, datagram.end()}};
    }
    case static_cast<std::uint16_t>(TftpOpcode::ack): {
      // Trailing bytes are ignored: some clients pad ACKs to a minimum frame size.
      if (datagram.size() < 4) {
        throw TftpParseError("TFTP ACK truncated: no block number at byte 2 of " + std::to_string(datagram.size()),
                             2);
      }
      return TftpAck{load_be16(datagram.data() + 2)};
    }
    case static_cast<std::uint16_t>(TftpOpcode::error): {
      if (datagram.size() < 4) {
        throw TftpParseError("TFTP ERROR truncated: no error code at byte 2 of " + std::to_string(datagram.size()),
                             2);
      }
      TftpErrorPacket error;
      error.code = static_cast<TftpErrorCode>(load_be16(datagram.data() + 2));
      // The message runs to the first NUL or, for senders that omit it, to the end of the datagram.
      auto message = datagram.subspan(4);
      auto nul = std::find(message.begin(), message.end(), std::uint8_t{0});
      error.message.assign(message.begin(), nul);
      return error;
    }
    case static_cast<std::uint16_t>(TftpOpcode::option_ack): {
      StringReader reader(datagram, "OACK");
      return TftpOptionAck{read_options(reader, false)};
    }
    default:
      throw TftpParseError("TFTP packet has unknown opcode " + std::to_string(opcode) + " at byte 0 of " +
                               std::to_string(datagram.size()),
                           0);
  }
}

std::vector<std::uint8_t> encode_tftp_packet(const TftpPacket& packet) {
  std::vector<std::uint8_t> out;
  std::visit(
      [&out](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, TftpRequest>) {
          append_u16(out, static_cast<std::uint16_t>(p.is_write ? TftpOpcode::write_request
                                                                  : TftpOpcode::read_request));
          append_string(out, p.filename);
          append_string(out, tftp_mode_name(p.mode));
          append_options(out, p.options);
        } else if constexpr (std::is_same_v<T, TftpData>) {
          out.resize(tftp_data_header_size);
          write_tftp_data_header(std::span<std::uint8_t, tftp_data_header_size>(out.data(), tftp_data_header_size),
                                 p.block);
          out.insert(out.end(), p.payload.begin(), p.payload.end());
        } else if constexpr (std::is_same_v<T, TftpAck>) {
          append_u16(out, static_cast<std::uint16_t>(TftpOpcode::ack));
          append_u16(out, p.block);
        } else if constexpr (std::is_same_v<T, TftpErrorPacket>) {
          append_u16(out, static_cast<std::uint16_t>(TftpOpcode::error));
          append_u16(out, static_cast<std::uint16_t>(p.code));
          // Cut to what a 516-byte packet holds: clients that read into a buffer of one default data
          // packet (RFC 1350's 512 bytes + header; PXE ROMs, U-Boot) would otherwise get a message
          // without its NUL. An `a` remap rule's message is the rewritten name, up to 1 KiB.
          append_string(out, std::string_view(p.message).substr(0, tftp_max_error_message));
        } else {
          static_assert(std::is_same_v<T, TftpOptionAck>);
          append_u16(out, static_cast<std::uint16_t>(TftpOpcode::option_ack));
          append_options(out, p.options);
        }
      },
      packet);
  return out;
}

void write_tftp_data_header(std::span<std::uint8_t, tftp_data_header_size> out, std::uint16_t block) {
  store_be16(out.data(), static_cast<std::uint16_t>(TftpOpcode::data));
  store_be16(out.data() + 2, block);
}

std::string_view tftp_opcode_name(std::uint16_t opcode) {
  switch (opcode) {
    case 1: return "RRQ";
    case 2: return "WRQ";
    case 3: return "DATA";
    case 4: return "ACK";
    case 5: return "ERROR";
    case 6: return "OACK";
    default: return "unknown opcode";
  }
}

std::string_view tftp_mode_name(TftpMode mode) { return mode == TftpMode::netascii ? "netascii" : "octet"; }

std::uint16_t tftp_largest_blksize(const TftpServerLimits& limits) {
  std::uint32_t largest = std::min<std::uint32_t>(limits.max_blksize, tftp_max_blksize);
  if (limits.path_mtu != 0) {
    // IP header + UDP header (8) + TFTP DATA header (4).
    std::uint32_t overhead = (limits.ipv6 ? 40u : 20u) + 8u + 4u;
    std::uint32_t fits = limits.path_mtu > overhead ? limits.path_mtu - overhead : 0;
    largest = std::min(largest, fits);
  }
  return static_cast<std::uint16_t>(std::max<std::uint32_t>(largest, tftp_min_blksize));
}

TftpNegotiatedOptions negotiate_tftp_options(const std::vector<TftpOption>& requested,
                                             const TftpServerLimits& limits,
                                             std::optional<std::uint64_t> file_size) {
  TftpNegotiatedOptions result;
  auto ignore = [&result](const TftpOption& option, const std::string& why) {
    result.ignored.push_back(option.name + " " + printable(option.value) + ": " + why);
  };
  for (const auto& option : requested) {
    if (std::find(limits.refused_options.begin(), limits.refused_options.end(), option.name) !=
        limits.refused_options.end()) {
      ignore(option, "refused by server configuration");
      continue;
    }
    std::optional<std::uint64_t> number = parse_decimal(option.value);
    if (option.name == "blksize") {
      if (!number || *number < tftp_min_blksize) {
        ignore(option, number ? "below " + std::to_string(tftp_min_blksize) : std::string("not a decimal number"));
        continue;
      }
      auto granted = static_cast<std::uint16_t>(std::min<std::uint64_t>(*number, tftp_largest_blksize(limits)));
      result.blksize = granted;
      result.acknowledged.push_back({option.name, std::to_string(granted)});
    } else if (option.name == "tsize") {
      if (!file_size) {
        ignore(option, "size not known in advance in netascii mode");
        continue;
      }
      result.acknowledged.push_back({option.name, std::to_string(*file_size)});
    } else if (option.name == "timeout") {
      if (!number || *number < 1 || *number > 255) {
        ignore(option, number ? "outside 1..255" : "not a decimal number");
        continue;
      }
      result.timeout_seconds = static_cast<std::uint8_t>(*number);
      result.acknowledged.push_back({option.name, std::to_string(*number)});
    } else if (option.name == "windowsize") {
      if (!number || *number < 1 || *number > tftp_max_windowsize) {
        ignore(option, number ? "outside 1..65535" : "not a decimal number");
        continue;
      }
      std::uint16_t server_max = std::max<std::uint16_t>(limits.max_windowsize, 1);
      auto granted = static_cast<std::uint16_t>(std::min<std::uint64_t>(*number, server_max));
      result.windowsize = granted;
      result.acknowledged.push_back({option.name, std::to_string(granted)});
    } else {
      ignore(option, "unknown option");
    }
  }
  return result;
}

}  // namespace aggrik8s::netboot
