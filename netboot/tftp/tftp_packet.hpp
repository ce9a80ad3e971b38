#pragma once
// TFTP wire format (RFC 1350, with the option extensions of RFC 2347/2348/2349/7440) as value types:
// bytes in, packet out, and back. No sockets, no files, no logging: the packet parser is fuzzed on its
// own, so this file and tftp_packet.cpp depend only on the standard library and header-only core code.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/error.hpp"

namespace aggrik8s::netboot {

enum class TftpOpcode : std::uint16_t {
  read_request = 1,
  write_request = 2,
  data = 3,
  ack = 4,
  error = 5,
  option_ack = 6,
};

enum class TftpErrorCode : std::uint16_t {
  not_defined = 0,
  file_not_found = 1,
  access_violation = 2,
  disk_full = 3,
  illegal_operation = 4,
  unknown_transfer_id = 5,
  file_exists = 6,
  no_such_user = 7,
  option_negotiation = 8,
};

enum class TftpMode { netascii, octet };

// A request or acknowledgement option. Names are lower-cased on parse (RFC 2347: case-insensitive);
// values are kept as sent, because unknown options must be ignored, not interpreted.
struct TftpOption {
  std::string name;
  std::string value;
  bool operator==(const TftpOption&) const = default;
};

struct TftpRequest {
  bool is_write = false;  // WRQ rather than RRQ
  std::string filename;
  TftpMode mode = TftpMode::octet;
  std::vector<TftpOption> options;
  bool operator==(const TftpRequest&) const = default;
};

struct TftpData {
  std::uint16_t block = 0;
  std::vector<std::uint8_t> payload;
  bool operator==(const TftpData&) const = default;
};

struct TftpAck {
  std::uint16_t block = 0;
  bool operator==(const TftpAck&) const = default;
};

// The longest ERROR message encode_tftp_packet sends (longer ones are cut): with the 4-byte header and
// the NUL, an ERROR packet is never larger than a default 512-byte DATA packet.
inline constexpr std::size_t tftp_max_error_message = 511;

struct TftpErrorPacket {
  TftpErrorCode code = TftpErrorCode::not_defined;  // any 16-bit value is kept, even outside the RFC list
  std::string message;
  bool operator==(const TftpErrorPacket&) const = default;
};

struct TftpOptionAck {
  std::vector<TftpOption> options;
  bool operator==(const TftpOptionAck&) const = default;
};

using TftpPacket = std::variant<TftpRequest, TftpData, TftpAck, TftpErrorPacket, TftpOptionAck>;

// A datagram that is not valid TFTP. The message says what was wrong and at which byte, e.g.
// "TFTP RRQ truncated: no NUL after filename at byte 14 of 14".
class TftpParseError : public Error {
 public:
  TftpParseError(const std::string& message, std::size_t byte_offset)
      : Error(message), byte_offset_(byte_offset) {}
  std::size_t byte_offset() const { return byte_offset_; }

 private:
  std::size_t byte_offset_;
};

// Throws TftpParseError. Rejected: fewer than 2 bytes, unknown opcode, missing NULs, empty filename,
// unknown mode, option without value, duplicate option (case-insensitive), a known numeric option
// (blksize, tsize, timeout, windowsize) whose value is not a decimal number that fits 64 bits.
// Out-of-range numbers are left to negotiation, which drops them the way tftp-hpa does.
// Accepted leniently because real firmware sends them: an ERROR whose message lacks the final NUL, and
// NUL padding after the last option of a request.
TftpPacket parse_tftp_packet(std::span<const std::uint8_t> datagram);

std::vector<std::uint8_t> encode_tftp_packet(const TftpPacket& packet);

// The hot path builds DATA packets in place: a 4-byte header followed by the payload read from disk.
constexpr std::size_t tftp_data_header_size = 4;
void write_tftp_data_header(std::span<std::uint8_t, tftp_data_header_size> out, std::uint16_t block);

std::string_view tftp_opcode_name(std::uint16_t opcode);  // "RRQ", ... or "unknown opcode"
std::string_view tftp_mode_name(TftpMode mode);

// ---- Option negotiation (RFC 2347) ----

constexpr std::uint16_t tftp_default_blksize = 512;
constexpr std::uint16_t tftp_min_blksize = 8;       // RFC 2348
constexpr std::uint16_t tftp_max_blksize = 65464;   // RFC 2348
constexpr std::uint16_t tftp_max_windowsize = 65535;  // RFC 7440

struct TftpServerLimits {
  std::uint16_t max_blksize = tftp_max_blksize;  // tftp-hpa's -B
  // Blocks are clamped so a DATA packet fits one IP packet on this MTU (fragments are lost by some
  // boot ROMs and switches). 0 disables the clamp.
  std::uint32_t path_mtu = 1500;
  bool ipv6 = false;  // the IPv6 header is 20 bytes longer
  std::uint16_t max_windowsize = 64;
  std::vector<std::string> refused_options;  // lower case; tftp-hpa's -r, for ROMs that break on an option
};

struct TftpNegotiatedOptions {
  std::uint16_t blksize = tftp_default_blksize;
  std::uint16_t windowsize = 1;
  std::optional<std::uint8_t> timeout_seconds;  // the client's retransmission timeout, if it set one
  std::vector<TftpOption> acknowledged;         // what goes into the OACK, in request order
  std::vector<std::string> ignored;             // "blksize 4: below 8", for debug logs
  bool needs_option_ack() const { return !acknowledged.empty(); }
};

// The largest block that fits `limits` (MTU clamp and max_blksize).
std::uint16_t tftp_largest_blksize(const TftpServerLimits& limits);

// `file_size` is empty when the transferred size is unknown in advance (netascii): tsize is then not
// acknowledged, as tftp-hpa does.
TftpNegotiatedOptions negotiate_tftp_options(const std::vector<TftpOption>& requested,
                                             const TftpServerLimits& limits,
                                             std::optional<std::uint64_t> file_size);

}  // namespace aggrik8s::netboot
