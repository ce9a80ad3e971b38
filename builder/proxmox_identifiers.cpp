#include "builder/proxmox_identifiers.hpp"

#include <algorithm>
#include <cctype>

namespace aggrik8s::builder {

namespace {
constexpr std::string_view api_path = "/api2/json";
}  // namespace

std::optional<std::string> proxmox_api_base_url(std::string_view url, std::string* why) {
  auto fail = [&](const std::string& message) -> std::optional<std::string> {
    if (why != nullptr) *why = message;
    return std::nullopt;
  };
  constexpr std::string_view scheme = "https://";
  if (!url.starts_with(scheme)) return fail("must be an https:// URL (the token travels with every request)");
  std::string_view rest = url.substr(scheme.size());
  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (authority.empty() || authority.find_first_of("@?#") != std::string_view::npos) {
    return fail("must be https://HOST:PORT (no user, query or fragment)");
  }
  while (path.ends_with('/')) path.remove_suffix(1);
  if (!path.empty() && path != api_path) return fail("may have no path but /api2/json");
  return std::string(scheme) + std::string(authority) + std::string(api_path);
}

bool is_proxmox_token_id(std::string_view token_id) {
  std::size_t at = token_id.find('@');
  std::size_t bang = token_id.find('!');
  if (at == std::string_view::npos || bang == std::string_view::npos || at == 0 || bang < at + 2 ||
      bang + 1 >= token_id.size()) {
    return false;
  }
  // No character that would end the header value or the "USER@REALM!TOKENID=SECRET" form.
  return std::none_of(token_id.begin(), token_id.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c <= ' ' || c == '=' || c == 0x7f;
  });
}

bool is_proxmox_storage_id(std::string_view storage) {
  auto alnum = [](unsigned char c) { return std::isalnum(c) != 0; };
  if (storage.empty() || !std::isalpha(static_cast<unsigned char>(storage.front())) ||
      !alnum(static_cast<unsigned char>(storage.back()))) {
    return false;
  }
  return std::all_of(storage.begin(), storage.end(), [&](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return alnum(c) || c == '-' || c == '_' || c == '.';
  });
}

bool is_proxmox_node_name(std::string_view node) {
  if (node.empty() || node.front() == '-' || node.back() == '-') return false;
  return std::all_of(node.begin(), node.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-'; });
}

std::optional<std::string> normalize_certificate_fingerprint(std::string_view text) {
  std::string hex;
  for (char c : text) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (hex.size() != 64) return std::nullopt;
  return hex;
}

}  // namespace aggrik8s::builder
