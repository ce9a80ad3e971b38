#include "core/log_escape.hpp"

#include <cstdint>

namespace aggrik8s {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

std::string byte_escape(unsigned char byte) {
  return std::string{'\\', 'x', hex_digits[byte >> 4], hex_digits[byte & 15]};
}

// The length of the well-formed UTF-8 sequence starting text[at] (2..4), or 0 when the bytes there are
// not one (RFC 3629's table: no overlong forms, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence_length(std::string_view text, std::size_t at, std::uint32_t& code_point) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[at + i]); };
  unsigned char lead = byte(0);
  std::size_t length = 0;
  unsigned char second_low = 0x80, second_high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
    code_point = lead & 0x1fU;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    code_point = lead & 0x0fU;
    if (lead == 0xe0) second_low = 0xa0;
    if (lead == 0xed) second_high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    code_point = lead & 0x07U;
    if (lead == 0xf0) second_low = 0x90;
    if (lead == 0xf4) second_high = 0x8f;
  } else {
    return 0;
  }
  if (at + length > text.size()) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    unsigned char low = i == 1 ? second_low : 0x80, high = i == 1 ? second_high : 0xbf;
    if (byte(i) < low || byte(i) > high) return 0;
    code_point = (code_point << 6) | (byte(i) & 0x3fU);
  }
  return length;
}

// Code points that are valid text but change how a terminal or log viewer shows the rest of the line.
bool is_invisible_control(std::uint32_t code_point) {
  return (code_point >= 0x80 && code_point <= 0x9f) ||        // C1 controls (0x9b is CSI)
         code_point == 0x200e || code_point == 0x200f ||       // LRM, RLM
         code_point == 0x2028 || code_point == 0x2029 ||       // line and paragraph separators
         (code_point >= 0x202a && code_point <= 0x202e) ||     // bidi embeddings and overrides
         (code_point >= 0x2066 && code_point <= 0x2069);       // bidi isolates
}

std::string code_point_escape(std::uint32_t code_point) {
  std::string digits;
  for (int shift = 12; shift >= 0; shift -= 4) digits.push_back(hex_digits[(code_point >> shift) & 15]);
  return "\\u{" + digits + "}";
}

}  // namespace

std::string log_escape(std::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  std::size_t at = 0;
  while (at < text.size()) {
    auto byte = static_cast<unsigned char>(text[at]);
    std::string piece;
    std::size_t consumed = 1;
    if (byte == '"' || byte == '\\') {
      piece = {'\\', static_cast<char>(byte)};
    } else if (byte == '\n') {
      piece = "\\n";
    } else if (byte == '\r') {
      piece = "\\r";
    } else if (byte == '\t') {
      piece = "\\t";
    } else if (byte < 0x20 || byte == 0x7f) {
      piece = byte_escape(byte);
    } else if (byte < 0x80) {
      piece = std::string(1, static_cast<char>(byte));
    } else {
      std::uint32_t code_point = 0;
      std::size_t length = utf8_sequence_length(text, at, code_point);
      if (length == 0) {
        piece = byte_escape(byte);  // resynchronise on the next byte
      } else {
        consumed = length;
        piece = is_invisible_control(code_point) ? code_point_escape(code_point) : std::string(text.substr(at, length));
      }
    }
    // Whole pieces only: a cut never leaves half an escape or half a character behind.
    if (out.size() + piece.size() > max_bytes) {
      out += "...[truncated, " + std::to_string(text.size()) + " bytes]";
      return out;
    }
    out += piece;
    at += consumed;
  }
  return out;
}

}  // namespace aggrik8s
