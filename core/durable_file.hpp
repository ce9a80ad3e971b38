#pragma once
// State that must survive a crash or power cut whole (serve's talos-wipe.json, dhcp-nodes.json): the
// new content goes to a temporary name in the same directory, is fsynced, renamed over the file, and
// the directory fsynced. A crash leaves the old file or the new one, never half of one, and never an
// empty file under the final name (which a rename without the first fsync can leave).
#include <sys/types.h>

#include <filesystem>
#include <string>

namespace aggrik8s {

// Throws aggrik8s::Error naming the file and the step that failed; the temporary file is removed.
void replace_file_durably(const std::filesystem::path& file, const std::string& text, mode_t mode);

}  // namespace aggrik8s
