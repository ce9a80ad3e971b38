#pragma once
// The running program's GNU build ID (the linker's NT_GNU_BUILD_ID note, a hash of the linked
// binary), for cache entries that only this exact binary may reuse: bytes derived by one version of the
// code (an ISO layout, say) must not be taken for what another version would write.
#include <optional>
#include <string>

namespace aggrik8s {

// Hex of the main program's build ID, read from its loaded program headers (no file access); nullopt
// when it was linked without one (`-Wl,--build-id=none`).
std::optional<std::string> program_build_id();

}  // namespace aggrik8s
