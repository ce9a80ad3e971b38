#pragma once
// What to add to "Permission denied" about a file: which user this process is, and who owns the file
// (or which directory on the way to it this process cannot enter). A server started by systemd as its
// own user meets files an operator made as root or as another user (node images and secrets are 0600
// by design); "Permission denied" alone does not say whose permission is missing.
#include <filesystem>
#include <string>

namespace aggrik8s {

// For `err` EACCES or EPERM about `path`: " (this process runs as uid 65534 (nobody); out/pi5.img is
// owned by uid 1000 (ann), group ..., mode 0600)" or " (this process runs as uid 65534 (nobody) and
// cannot enter /srv/x, owned by uid 0 (root), group 0 (root), mode 0700)". Empty for any other error,
// and when nothing useful can be said (the file and every directory on the way look accessible, e.g.
// a security module refused). Appended to a message that ends in strerror(err).
std::string permission_denied_detail(const std::filesystem::path& path, int err);

// throw_system_error, with permission_denied_detail(path) when the error is EACCES or EPERM.
[[noreturn]] void throw_file_error(const std::string& what, const std::filesystem::path& path, int err);

}  // namespace aggrik8s
