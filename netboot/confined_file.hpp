#pragma once
// Opening a file a network client named, inside a directory the operator serves (the TFTP root, the
// HTTP root, a declared boot asset's directory). TFTP and HTTP both open files only through here.
//
// Policy (docs/netboot.md, "Which files a client can read"):
//  - The client's name never leaves the root by itself: it must be relative, without "." / ".."
//    components or NUL bytes (callers normalise first; anything else is refused here, not repaired).
//  - The name is walked one component at a time from a descriptor of the root. Each step asks the
//    kernel for exactly one directory entry and forbids it to follow any link on its own (openat2 with
//    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS where the kernel has openat2;
//    openat with O_NOFOLLOW on a single component otherwise, which is just as tight). So every
//    symbolic link on the way is seen, judged and followed by this code, never silently by the kernel.
//  - Links found in the served tree were put there by whoever can write the tree (the operator, or a
//    package: Debian's /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi), so they are followed, also when they
//    lead out of the root. A file reached outside the root is served only if every local user could
//    read it anyway: the file is world-readable (the rule tftp-hpa applies to every file it serves)
//    and every directory walked to it outside the root is world-searchable. So a link in the tree
//    publishes nothing its author could not have copied into the tree; /etc/shadow, a 0600 secrets
//    file or anything under a 0700 home directory stays refused whoever placed the link.
//  - Never followed, inside or outside: links that live on procfs (the /proc/<pid>/fd, root, cwd and
//    exe "magic" links, and /proc/self), more than 40 links in one lookup (a loop). Never served:
//    anything but a regular file, and regular files on kernel pseudo filesystems (proc, sysfs,
//    debugfs, tracefs, securityfs, cgroup, bpf, efivarfs), e.g. /proc/<pid>/environ.
//  - Fail closed: any error while checking (a failed stat, an unreadable link, a file swapped between
//    the check and the open) refuses the file.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/file_descriptor.hpp"

namespace aggrik8s::netboot {

enum class ConfinedFileStatus { opened, not_found, refused };

struct ConfinedFile {
  ConfinedFileStatus status = ConfinedFileStatus::not_found;
  FileDescriptor fd;              // open for reading when opened
  std::filesystem::path path;     // where the name led (links followed), for logs
  std::uint64_t size = 0;
  bool outside_root = false;      // reached through a link that leads out of the root
  std::string reason;             // why not opened; for logs, never sent verbatim to clients
};

// Which files inside the root may be served. A shared tree anyone may read from (the TFTP root,
// http.root) serves only world-readable files, as tftp-hpa serves only those and nginx's worker (nobody)
// can read only those: a 0600 node image or secret that lands there (`--http-root out/`, where build
// writes node images 0600 for their join tokens) stays private. A declared asset's directory or a
// build's per-node tree serves what the operator named, whatever its mode.
enum class ConfinedReach { any_file, world_readable_only };

// `root` must be an absolute path to a directory (the caller resolved it once); `relative` a
// normalised name inside it ("a/b"). Never throws for a bad name or a missing file.
ConfinedFile open_confined_file(const std::filesystem::path& root, std::string_view relative,
                                ConfinedReach reach = ConfinedReach::any_file);

// Tests only: walk with plain openat as on kernels before 5.6 (or behind an old seccomp profile), so
// the fallback is tested on machines that have openat2.
void use_openat2_for_testing(bool enabled);

}  // namespace aggrik8s::netboot
