#include "netboot/tftp/tftp_packet.hpp"

#include <catch2/catch.hpp>

using namespace aggrik8s::netboot;

namespace {

std::vector<std::uint8_t> bytes(std::string_view text) { return {text.begin(), text.end()}; }

// Datagrams are written as strings with embedded NULs: sv literals keep them.
using namespace std::string_view_literals;

TftpPacket parse(std::string_view text) {
  auto data = bytes(text);
  return parse_tftp_packet(data);
}

}  // namespace

TEST_CASE("tftp packet: an RRQ with options parses and encodes back to the same bytes", "[tftp]") {
  auto wire = "\0\1pxelinux.0\0octet\0tsize\0" "0\0blksize\0" "1468\0"sv;
  TftpPacket packet = parse(wire);
  auto& request = std::get<TftpRequest>(packet);
  CHECK_FALSE(request.is_write);
  CHECK(request.filename == "pxelinux.0");
  CHECK(request.mode == TftpMode::octet);
  REQUIRE(request.options.size() == 2);
  CHECK(request.options[0] == TftpOption{"tsize", "0"});
  CHECK(request.options[1] == TftpOption{"blksize", "1468"});
  CHECK(encode_tftp_packet(packet) == bytes(wire));
}

TEST_CASE("tftp packet: mode and option names are case-insensitive", "[tftp]") {
  auto request = std::get<TftpRequest>(parse("\0\2File\0NetASCII\0BLKSIZE\0" "512\0"sv));
  CHECK(request.is_write);
  CHECK(request.filename == "File");  // the filename keeps its case
  CHECK(request.mode == TftpMode::netascii);
  CHECK(request.options[0].name == "blksize");
}

TEST_CASE("tftp packet: NUL padding after the options of a request is tolerated, as tftp-hpa does", "[tftp]") {
  auto request = std::get<TftpRequest>(parse("\0\1a\0octet\0tsize\0" "0\0\0\0\0"sv));
  CHECK(request.options.size() == 1);
}

TEST_CASE("tftp packet: DATA, ACK, ERROR and OACK round-trip", "[tftp]") {
  TftpPacket data = TftpData{65535, {1, 2, 3}};
  CHECK(parse_tftp_packet(encode_tftp_packet(data)) == data);
  TftpPacket empty_data = TftpData{0, {}};
  CHECK(encode_tftp_packet(empty_data).size() == 4);
  CHECK(parse_tftp_packet(encode_tftp_packet(empty_data)) == empty_data);
  TftpPacket ack = TftpAck{0x1234};
  CHECK(encode_tftp_packet(ack) == bytes("\0\4\x12\x34"sv));
  TftpPacket error = TftpErrorPacket{TftpErrorCode::file_not_found, "File not found"};
  CHECK(encode_tftp_packet(error) == bytes("\0\5\0\1File not found\0"sv));
  CHECK(parse_tftp_packet(encode_tftp_packet(error)) == error);
  TftpPacket oack = TftpOptionAck{{{"blksize", "1468"}, {"tsize", "1048576"}}};
  CHECK(parse_tftp_packet(encode_tftp_packet(oack)) == oack);
}

TEST_CASE("tftp packet: an ERROR message is cut so the packet fits a 516-byte client buffer", "[tftp]") {
  // A remap `a` rule's message is the rewritten name, which may be ~1 KiB long.
  std::string long_message(1000, 'x');
  long_message.replace(0, 5, "deny:");
  auto wire = encode_tftp_packet(TftpErrorPacket{TftpErrorCode::access_violation, long_message});
  CHECK(wire.size() == 516);
  CHECK(wire.back() == 0);
  auto parsed = std::get<TftpErrorPacket>(parse_tftp_packet(wire));
  CHECK(parsed.code == TftpErrorCode::access_violation);
  CHECK(parsed.message == long_message.substr(0, tftp_max_error_message));
  // One that fits is sent whole.
  std::string fits(tftp_max_error_message, 'y');
  CHECK(std::get<TftpErrorPacket>(parse_tftp_packet(encode_tftp_packet(TftpErrorPacket{TftpErrorCode::not_defined, fits}))).message == fits);
}

TEST_CASE("tftp packet: an ERROR without its final NUL is accepted, since the message ends with the datagram", "[tftp]") {
  auto error = std::get<TftpErrorPacket>(parse("\0\5\0\0Early terminate"sv));
  CHECK(error.code == TftpErrorCode::not_defined);
  CHECK(error.message == "Early terminate");
}

TEST_CASE("tftp packet: malformed packets fail with a message naming what and where", "[tftp]") {
  auto fails_with = [](std::string_view wire, const std::string& expected) {
    INFO("expected: " << expected);
    CHECK_THROWS_MATCHES(parse(wire), TftpParseError, Catch::Message(expected));
  };
  fails_with(""sv, "TFTP packet truncated: 0 bytes, an opcode needs 2 at byte 0 of 0");
  fails_with("\0"sv, "TFTP packet truncated: 1 bytes, an opcode needs 2 at byte 0 of 1");
  fails_with("\0\x09xyz"sv, "TFTP packet has unknown opcode 9 at byte 0 of 5");
  fails_with("\0\1pxelinux.0ab"sv, "TFTP RRQ truncated: no NUL after filename at byte 14 of 14");
  fails_with("\0\1"sv, "TFTP RRQ truncated: no filename at byte 2 of 2");
  fails_with("\0\1\0octet\0"sv, "TFTP RRQ has an empty filename at byte 2 of 9");
  fails_with("\0\1a\0"sv, "TFTP RRQ truncated: no mode at byte 4 of 4");
  fails_with("\0\1a\0octet"sv, "TFTP RRQ truncated: no NUL after mode at byte 9 of 9");
  fails_with("\0\1a\0mail\0"sv, "TFTP RRQ has unsupported mode \"mail\" at byte 4 of 9");
  fails_with("\0\2a\0octet\0tsize"sv, "TFTP WRQ truncated: no NUL after option name at byte 15 of 15");
  fails_with("\0\1a\0octet\0tsize\0"sv, "TFTP RRQ truncated: option tsize has no value at byte 10 of 16");
  fails_with("\0\1a\0octet\0tsize\0" "0"sv, "TFTP RRQ truncated: no NUL after value of option tsize at byte 17 of 17");
  // An OACK is the server's answer and must be exact (a request's options are wishes: below).
  fails_with("\0\6blksize\0" "512\0BlkSize\0" "1024\0"sv, "TFTP OACK repeats option blksize at byte 14 of 27");
  fails_with("\0\6blksize\0" "-5\0"sv, "TFTP OACK option blksize value \"-5\" is not a decimal number at byte 10 of 13");
  fails_with("\0\3\0"sv, "TFTP DATA truncated: no block number at byte 2 of 3");
  fails_with("\0\4"sv, "TFTP ACK truncated: no block number at byte 2 of 2");
  fails_with("\0\5\0"sv, "TFTP ERROR truncated: no error code at byte 2 of 3");
  fails_with("\0\6\0x\0"sv, "TFTP OACK has an empty option name at byte 2 of 5");
}

TEST_CASE("tftp packet: control bytes in a malformed request are escaped in the message", "[tftp]") {
  CHECK_THROWS_WITH(parse("\0\1a\0oc\x01t\0"sv), Catch::Contains("\"oc\\x01t\""));
}

TEST_CASE("tftp packet: negotiation follows RFC 2347/2348/2349/7440", "[tftp]") {
  TftpServerLimits limits;  // MTU 1500, IPv4: blksize up to 1468
  limits.max_windowsize = 16;

  SECTION("a Raspberry Pi request: blksize granted, tsize answered with the file size") {
    auto result = negotiate_tftp_options({{"tsize", "0"}, {"blksize", "1468"}}, limits, 123456);
    CHECK(result.blksize == 1468);
    CHECK(result.acknowledged == std::vector<TftpOption>{{"tsize", "123456"}, {"blksize", "1468"}});
    CHECK(result.needs_option_ack());
  }
  SECTION("blksize is clamped to the MTU, the server maximum and never below 8") {
    CHECK(negotiate_tftp_options({{"blksize", "65464"}}, limits, 1).blksize == 1468);
    CHECK(negotiate_tftp_options({{"blksize", "100000"}}, limits, 1).blksize == 1468);
    limits.ipv6 = true;
    CHECK(negotiate_tftp_options({{"blksize", "9000"}}, limits, 1).blksize == 1448);
    limits.path_mtu = 0;
    limits.max_blksize = 8192;
    CHECK(negotiate_tftp_options({{"blksize", "9000"}}, limits, 1).blksize == 8192);
    auto tiny = negotiate_tftp_options({{"blksize", "4"}}, limits, 1);
    CHECK(tiny.blksize == 512);
    CHECK_FALSE(tiny.needs_option_ack());
    CHECK(tiny.ignored.size() == 1);
  }
  SECTION("windowsize is clamped to the server maximum; timeout must be 1..255") {
    auto result = negotiate_tftp_options({{"windowsize", "64"}, {"timeout", "3"}}, limits, 1);
    CHECK(result.windowsize == 16);
    CHECK(result.timeout_seconds == 3);
    CHECK(negotiate_tftp_options({{"timeout", "0"}}, limits, 1).acknowledged.empty());
    CHECK(negotiate_tftp_options({{"timeout", "256"}}, limits, 1).acknowledged.empty());
    CHECK(negotiate_tftp_options({{"windowsize", "0"}}, limits, 1).windowsize == 1);
  }
  SECTION("unknown options are ignored, no OACK when nothing is left") {
    auto result = negotiate_tftp_options({{"multicast", ""}, {"rollover", "0"}}, limits, 1);
    CHECK_FALSE(result.needs_option_ack());
    CHECK(result.blksize == 512);
  }
  SECTION("tsize is not answered in netascii mode, where the size is not known in advance") {
    CHECK(negotiate_tftp_options({{"tsize", "0"}}, limits, std::nullopt).acknowledged.empty());
  }
  SECTION("options refused by configuration are left out, for ROMs that misbehave when granted one") {
    limits.refused_options = {"blksize"};
    auto result = negotiate_tftp_options({{"blksize", "1468"}, {"tsize", "0"}}, limits, 7);
    CHECK(result.blksize == 512);
    CHECK(result.acknowledged == std::vector<TftpOption>{{"tsize", "7"}});
  }
}

TEST_CASE("tftp packet: the largest block follows MTU and configuration", "[tftp]") {
  TftpServerLimits limits;
  CHECK(tftp_largest_blksize(limits) == 1468);
  limits.path_mtu = 9000;
  CHECK(tftp_largest_blksize(limits) == 8968);
  limits.path_mtu = 0;
  CHECK(tftp_largest_blksize(limits) == 65464);
  limits.path_mtu = 20;  // absurd, but never below the RFC minimum
  CHECK(tftp_largest_blksize(limits) == 8);
}

TEST_CASE("tftp packet: a request's repeated or non-numeric option is ignored, the file still sent", "[tftp]") {
  // tftp-hpa sends the file; refusing the whole request (ERROR 4) left such a client with nothing.
  auto request = std::get<TftpRequest>(parse("\0\1a\0octet\0blksize\0" "1024\0BlkSize\0" "512\0timeout\0x\0"
                                             "tsize\0" "99999999999999999999999\0windowsize\0" "4\0"sv));
  REQUIRE(request.options.size() == 4);  // blksize once, the first
  CHECK(request.options[0].value == "1024");
  TftpServerLimits limits;
  auto negotiated = negotiate_tftp_options(request.options, limits, 5000);
  CHECK(negotiated.blksize == 1024);
  CHECK_FALSE(negotiated.timeout_seconds);
  CHECK(negotiated.windowsize == 4);
  CHECK(std::find(negotiated.ignored.begin(), negotiated.ignored.end(), "timeout x: not a decimal number") !=
        negotiated.ignored.end());
  // tsize is answered with the file's size whatever the client wrote (RFC 2349: 0 in a request).
  CHECK(std::find(negotiated.acknowledged.begin(), negotiated.acknowledged.end(), TftpOption{"tsize", "5000"}) !=
        negotiated.acknowledged.end());
}
