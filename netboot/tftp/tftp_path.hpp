#pragma once
// Where a TFTP request lands on disk. The server root is the only tree a client may read: a leading '/'
// is taken as the root (PXE ROMs and U-Boot send both "/pxelinux.0" and "pxelinux.0"), ".." is refused
// outright (as tftp-hpa does). The file is then opened by open_confined_file (netboot/confined_file.hpp),
// which HTTP uses too: links placed in the root are followed, out of it only to world-readable files.
//
// Per-client directories: the caller may name prefixes to try first ("<root>/9ffefdef/config.txt",
// "<root>/dc-a6-32-01-02-03/cmdline.txt") before the shared "<root>/config.txt".
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/file_descriptor.hpp"
#include "netboot/confined_file.hpp"

namespace aggrik8s::netboot {

// The request name as a relative path inside the root ("a/b"), or why it is refused.
struct TftpRelativePath {
  std::string path;      // empty when refused
  std::string refusal;   // "contains a '..' component", ...
  bool ok() const { return refusal.empty(); }
};
TftpRelativePath normalize_tftp_request_path(std::string_view requested);

enum class TftpOpenStatus { opened, not_found, access_violation };

struct TftpOpenedFile {
  TftpOpenStatus status = TftpOpenStatus::not_found;
  FileDescriptor fd;
  std::filesystem::path path;  // where the name led (symlinks followed), absolute
  std::uint64_t size = 0;
  std::string reason;  // for logs when not opened; never sent verbatim to clients
};

// The search every TFTP file source makes: each of `client_prefixes` in order, then the top. A prefix
// is skipped only when the file is absent there; a refusal (escape, not a regular file) ends the
// search, so a client directory cannot be used to probe outside the root. `open_relative` opens a
// normalised relative name ("a/b") in the source.
TftpOpenedFile open_with_client_prefixes(std::string_view requested, std::span<const std::string> client_prefixes,
                                         const std::function<TftpOpenedFile(const std::string&)>& open_relative);

class TftpRoot {
 public:
  // Throws aggrik8s::Error when `root` is not an existing directory.
  explicit TftpRoot(const std::filesystem::path& root, ConfinedReach reach = ConfinedReach::any_file);

  const std::filesystem::path& path() const { return root_; }

  // open_with_client_prefixes() in the root.
  TftpOpenedFile open(std::string_view requested, std::span<const std::string> client_prefixes = {}) const;

 private:
  TftpOpenedFile open_relative(const std::string& relative) const;
  std::filesystem::path root_;  // canonical, no trailing slash
  ConfinedReach reach_;
};

// "aa-bb-cc-dd-ee-ff": the Raspberry Pi's TFTP_PREFIX=2 directory name and pxelinux-style MAC dirs.
std::string tftp_mac_directory(std::span<const std::uint8_t, 6> mac);

}  // namespace aggrik8s::netboot
