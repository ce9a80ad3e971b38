// libFuzzer target for the TFTP packet parser: every datagram either parses or throws TftpParseError,
// and whatever parses encodes to bytes that parse back to the same packet (an ERROR's message cut to
// tftp_max_error_message). Negotiation runs on parsed
// requests too, since its input comes straight from the wire.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "netboot/tftp/tftp_packet.hpp"

using namespace aggrik8s::netboot;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  TftpPacket packet;
  try {
    packet = parse_tftp_packet(std::span<const std::uint8_t>(data, size));
  } catch (const TftpParseError& e) {
    if (e.byte_offset() > size) std::abort();  // an error must point inside the datagram
    return 0;
  }
  std::vector<std::uint8_t> encoded = encode_tftp_packet(packet);
  // An ERROR's message is sent cut to what a 516-byte packet holds.
  TftpPacket expected = packet;
  if (auto* error = std::get_if<TftpErrorPacket>(&expected); error && error->message.size() > tftp_max_error_message) {
    error->message.resize(tftp_max_error_message);
  }
  if (!(parse_tftp_packet(encoded) == expected)) std::abort();

  if (const auto* request = std::get_if<TftpRequest>(&packet)) {
    TftpServerLimits limits;
    auto negotiated = negotiate_tftp_options(request->options, limits, size);
    if (negotiated.blksize < tftp_min_blksize || negotiated.blksize > tftp_largest_blksize(limits)) std::abort();
    if (negotiated.windowsize < 1 || negotiated.windowsize > limits.max_windowsize) std::abort();
    if (negotiated.acknowledged.size() > request->options.size()) std::abort();
  }
  return 0;
}
