#include "netboot/tftp_path.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.hpp"

namespace aggrik8s::netboot {
namespace {

bool is_inside(const std::string& candidate, const std::string& root) {
  if (root == "/") return true;
  return candidate.size() > root.size() && candidate.compare(0, root.size(), root) == 0 &&
         candidate[root.size()] == '/';
}

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
  result.path = std::move(normalized);
  return result;
}

TftpRoot::TftpRoot(const std::filesystem::path& root) {
  int error = 0;
  auto resolved = real_path(root.string(), error);
  if (!resolved) throw_system_error("TFTP root " + root.string(), error);
  struct stat info {};
  if (::stat(resolved->c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    throw Error("TFTP root " + root.string() + " is not a directory");
  }
  root_ = *resolved;
}

TftpOpenedFile TftpRoot::open(std::string_view requested, std::span<const std::string> client_prefixes) const {
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

TftpOpenedFile TftpRoot::open_relative(const std::string& relative) const {
  TftpOpenedFile result;
  const std::string root = root_.string();
  const std::string candidate = root + "/" + relative;

  // realpath() follows every link, so the prefix check sees where the name really leads.
  int error = 0;
  auto resolved = real_path(candidate, error);
  if (!resolved) {
    result.status = (error == ENOENT || error == ENOTDIR) ? TftpOpenStatus::not_found
                                                          : TftpOpenStatus::access_violation;
    result.reason = candidate + ": " + std::strerror(error);
    return result;
  }
  if (!is_inside(*resolved, root)) {
    result.status = TftpOpenStatus::access_violation;
    result.reason = candidate + " resolves to " + *resolved + ", outside the TFTP root";
    return result;
  }
  // O_NOFOLLOW: if the resolved name was swapped for a link since realpath(), refuse rather than
  // follow it; O_NONBLOCK: a FIFO placed in the root must not hang the server.
  FileDescriptor fd(::open(resolved->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    error = errno;
    result.status = error == ENOENT ? TftpOpenStatus::not_found : TftpOpenStatus::access_violation;
    result.reason = *resolved + ": " + std::strerror(error);
    return result;
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0 || !S_ISREG(info.st_mode)) {
    result.status = TftpOpenStatus::access_violation;
    result.reason = *resolved + " is not a regular file";
    return result;
  }
  // A directory component could also have been swapped between realpath() and open(); the kernel's
  // name for the open descriptor settles where it really is.
  std::array<char, PATH_MAX> link{};
  std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
  ssize_t length = ::readlink(proc.c_str(), link.data(), link.size() - 1);
  if (length > 0) {
    std::string actual(link.data(), static_cast<std::size_t>(length));
    if (!is_inside(actual, root)) {
      result.status = TftpOpenStatus::access_violation;
      result.reason = candidate + " was opened as " + actual + ", outside the TFTP root";
      return result;
    }
  }
  result.status = TftpOpenStatus::opened;
  result.fd = std::move(fd);
  result.path = *resolved;
  result.size = static_cast<std::uint64_t>(info.st_size);
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
