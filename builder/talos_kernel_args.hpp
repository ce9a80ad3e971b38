#pragma once
// Talos kernel command lines: the version-dependent defaults Talos' imager writes, how a node's own
// arguments are added (whether a line fits the kernel: core/kernel_command_line.hpp). Pure code (see
// ../shared/reference/talos.md), in builder/ rather than builder/talos/: the site derives netbooted Talos
// machines' arguments from it too.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/kernel_command_line.hpp"

namespace aggrik8s::builder {

struct TalosVersion {
  int major = 0;
  int minor = 0;
  int patch = 0;
  // "v1.12.0", "1.12.0", "v1.12.0-beta.1" (the pre-release part is ignored); nullopt otherwise.
  static std::optional<TalosVersion> parse(std::string_view text);
  // From a Talos ISO's volume id, "TALOS_V1_12_0"; nullopt when it does not have that form.
  static std::optional<TalosVersion> from_volume_id(std::string_view volume_id);
  bool at_least(int want_major, int want_minor) const {
    return major > want_major || (major == want_major && minor >= want_minor);
  }
  std::string str() const;  // "v1.12.0"
};

// What Talos' imager puts on a metal image's command line for `version` on `arch` (amd64 | arm64).
std::vector<std::string> talos_default_kernel_args(const TalosVersion& version, std::string_view arch = "amd64");

// `base` followed by each of `extra` that is not already in it, in order.
std::vector<std::string> append_kernel_args(std::vector<std::string> base, const std::vector<std::string>& extra);

}  // namespace aggrik8s::builder
