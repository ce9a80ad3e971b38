#include "core/identifiers.hpp"

#include <arpa/inet.h>

#include <cctype>
#include <charconv>
#include <string>

namespace aggrik8s {

bool is_dns_label(std::string_view name) {
  if (name.empty() || name.size() > 63 || name.front() == '-' || name.back() == '-') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

bool is_ipv4_address(std::string_view text) {
  int parts = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = text.find('.', start);
    std::string_view part = text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (part.empty() || part.size() > 3 || ec != std::errc() || ptr != part.data() + part.size() || value > 255 ||
        (part.size() > 1 && part.front() == '0')) {
      return false;
    }
    ++parts;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts == 4;
}

bool is_ipv4_cidr(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos || !is_ipv4_address(text.substr(0, slash))) return false;
  std::string_view prefix = text.substr(slash + 1);
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), value);
  return !prefix.empty() && ec == std::errc() && ptr == prefix.data() + prefix.size() && value <= 32;
}

int ip_address_family(std::string_view text) {
  if (is_ipv4_address(text)) return 4;
  // inet_pton takes the RFC 4291 text forms (and a trailing dotted quad) and nothing else: no zone id,
  // no brackets, no blanks. It needs a NUL-terminated copy.
  in6_addr address{};
  std::string copy(text);
  if (text.find(':') != std::string_view::npos && ::inet_pton(AF_INET6, copy.c_str(), &address) == 1) return 6;
  return 0;
}

std::optional<std::string> canonical_ip_address(std::string_view text) {
  int family = ip_address_family(text);
  if (family == 0) return std::nullopt;
  unsigned char bytes[16] = {};
  char out[INET6_ADDRSTRLEN] = {};
  std::string copy(text);
  int af = family == 4 ? AF_INET : AF_INET6;
  if (::inet_pton(af, copy.c_str(), bytes) != 1 || ::inet_ntop(af, bytes, out, sizeof out) == nullptr) return std::nullopt;
  return std::string(out);
}

int ip_cidr_family(std::string_view text) {
  std::size_t slash = text.rfind('/');
  if (slash == std::string_view::npos) return 0;
  int family = ip_address_family(text.substr(0, slash));
  std::string_view prefix = text.substr(slash + 1);
  if (family == 0 || prefix.empty() || prefix.size() > 3 || (prefix.size() > 1 && prefix.front() == '0')) return 0;
  unsigned value = 0;
  for (char c : prefix) {
    if (c < '0' || c > '9') return 0;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= (family == 4 ? 32u : 128u) ? family : 0;
}

std::optional<std::string> normalize_mac(std::string_view text) {
  if (text.size() != 17) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (i % 3 == 2) {
      if (c != ':' && c != '-') return std::nullopt;
      out.push_back(':');
    } else {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  return out;
}

std::optional<std::string> normalize_uuid(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return std::nullopt;
      out.push_back('-');
    } else {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  return out;
}

bool is_ssh_public_key_line(std::string_view line) {
  for (char c : line) {
    if (c == '\n' || c == '\r' || c == '\0') return false;
  }
  if (!(line.starts_with("ssh-") || line.starts_with("ecdsa-") || line.starts_with("sk-"))) return false;
  std::size_t space = line.find(' ');
  if (space == std::string_view::npos) return false;
  std::string_view blob = line.substr(space + 1);
  blob = blob.substr(0, blob.find(' '));
  if (blob.empty()) return false;
  for (char c : blob) {
    bool base64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
    if (!base64) return false;
  }
  return true;
}

}  // namespace aggrik8s
