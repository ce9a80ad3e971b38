#include "netboot/tftp/tftp_path.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.hpp"
#include "netboot/confined_file.hpp"

namespace aggrik8s::netboot {
namespace {

std::optional<std::string> real_path(const std::string& path, int& error) {
  std::unique_ptr<char, decltype(&std::free)> resolved(::realpath(path.c_str(), nullptr), &std::free);
  if (!resolved) {
    error = errno;
    return std::nullopt;
  }
  return std::string(resolved.get());
}

}  // namespace

TftpRelativePath normalize_tftp_request_path(std::string_view requested) {
  TftpRelativePath result;
  if (requested.find('\0') != std::string_view::npos) {
    result.refusal = "contains a NUL byte";
    return result;
  }
  std::string normalized;
  std::size_t position = 0;
  while (position <= requested.size()) {
    std::size_t slash = requested.find('/', position);
    if (slash == std::string_view::npos) slash = requested.size();
    std::string_view component = requested.substr(position, slash - position);
    position = slash + 1;
    if (component.empty() || component == ".") continue;  // leading '/', "//", "./"
    if (component == "..") {
      result.refusal = "contains a '..' component";
      return result;
    }
    if (!normalized.empty()) normalized += '/';
    normalized.append(component);
  }
  if (normalized.empty()) {
    result.refusal = "names the root directory itself";
    return result;
  }
  // "boot.img/" names a directory (POSIX: ENOTDIR for a file): the slash is kept for the lookup, which
  // then finds no such file, as tftp-hpa and nginx answer.
  if (requested.back() == '/') normalized += '/';
  result.path = std::move(normalized);
  return result;
}

TftpRoot::TftpRoot(const std::filesystem::path& root, ConfinedReach reach) : reach_(reach) {
  int error = 0;
  auto resolved = real_path(root.string(), error);
  if (!resolved) throw_system_error("TFTP root " + root.string(), error);
  struct stat info {};
  if (::stat(resolved->c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    throw Error("TFTP root " + root.string() + " is not a directory");
  }
  root_ = *resolved;
}

TftpOpenedFile open_with_client_prefixes(std::string_view requested, std::span<const std::string> client_prefixes,
                                         const std::function<TftpOpenedFile(const std::string&)>& open_relative) {
  TftpRelativePath relative = normalize_tftp_request_path(requested);
  if (!relative.ok()) {
    TftpOpenedFile refused;
    refused.status = TftpOpenStatus::access_violation;
    refused.reason = "request " + relative.refusal;
    return refused;
  }
  for (const auto& prefix : client_prefixes) {
    TftpRelativePath prefix_path = normalize_tftp_request_path(prefix);
    if (!prefix_path.ok()) continue;  // a bad prefix is a configuration slip; the shared tree still works
    TftpOpenedFile attempt = open_relative(prefix_path.path + "/" + relative.path);
    if (attempt.status != TftpOpenStatus::not_found) return attempt;
  }
  return open_relative(relative.path);
}

TftpOpenedFile TftpRoot::open(std::string_view requested, std::span<const std::string> client_prefixes) const {
  return open_with_client_prefixes(requested, client_prefixes,
                                   [this](const std::string& relative) { return open_relative(relative); });
}

TftpOpenedFile TftpRoot::open_relative(const std::string& relative) const {
  ConfinedFile confined = open_confined_file(root_, relative, reach_);
  TftpOpenedFile result;
  switch (confined.status) {
    case ConfinedFileStatus::opened: result.status = TftpOpenStatus::opened; break;
    case ConfinedFileStatus::not_found: result.status = TftpOpenStatus::not_found; break;
    case ConfinedFileStatus::refused: result.status = TftpOpenStatus::access_violation; break;
  }
  result.fd = std::move(confined.fd);
  result.path = std::move(confined.path);
  result.size = confined.size;
  result.reason = std::move(confined.reason);
  return result;
}

std::string tftp_mac_directory(std::span<const std::uint8_t, 6> mac) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < mac.size(); ++i) {
    if (i > 0) out += '-';
    out += hex[mac[i] >> 4];
    out += hex[mac[i] & 0xf];
  }
  return out;
}

}  // namespace aggrik8s::netboot
