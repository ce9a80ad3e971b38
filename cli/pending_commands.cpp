// Subcommands whose capability has its own issue and is not built yet. They parse their documented
// options (so scripts can be written against them) and then say plainly that nothing was done.
#include <cstdio>

#include "cli/commands.hpp"

namespace aggrik8s::cli {
namespace {

Command pending(CommandSpec spec, const char* what) {
  return {spec, [name = spec.name, what](const ParsedArguments&) {
            std::fprintf(stderr, "aggrik8s-image %s: %s is not implemented yet; nothing was done.\n", name.c_str(), what);
            return exit_failure;
          }};
}

}  // namespace

Command inspect_command() {
  return pending({"inspect", "IMAGE", "Show partitions, filesystems, boot settings and the RKE2 preload of an image",
                  "", {{"json", '\0', "", "machine-readable output"}}, 1, 1},
                 "inspecting images");
}

Command flash_command() {
  return pending({"flash", "SOURCE DEVICE", "Write an image to an SD card or NVMe drive and verify it", "",
                  {{"yes", 'y', "", "do not ask for confirmation"},
                   {"force", '\0', "", "allow non-removable disks"},
                   {"no-verify", '\0', "", "skip reading back what was written"},
                   {"list", '\0', "", "list candidate removable devices"}},
                  0, 2},
                 "flashing");
}

Command serve_command() {
  return pending({"serve", "", "Run the DHCP + TFTP + HTTP netboot server", "",
                  {{"config", 'c', "FILE", "netboot configuration (docs/netboot.md)"}}, 0, 0},
                 "the netboot server");
}

}  // namespace aggrik8s::cli
