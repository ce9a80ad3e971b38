#pragma once
// Where serve keeps each rebuild-on-reboot Talos node's wipe cycle (talos_wipe_cycle.hpp), so that a
// restart between a wipe boot and its reboot still serves the normal boot: <state_dir>/talos-wipe.json,
//   {"format": "aggrik8s-talos-wipe", "version": 1,
//    "nodes": {"talos-1": {"served": "wipe", "served_at_ms": 1767225600000,
//                          "files_fetched_at_ms": 1767225604000, "served_to": "10.0.0.31"}}}
// (milliseconds since the epoch; files_fetched_at_ms absent until the boot fetched a file; served_to,
// the address the script went to, absent in files written before it, which means doubt: a wipe). It holds
// no secret (node names and times), so it is written 0644. The format and parser are pure; the store
// does the I/O.
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "netboot/service/netboot_config.hpp"
#include "netboot/service/node_inventory.hpp"
#include "netboot/service/talos_wipe_cycle.hpp"

namespace aggrik8s::netboot {

using TalosWipeCycles = std::map<std::string, TalosWipeCycle>;  // by node name

std::string talos_wipe_state_json(const TalosWipeCycles& cycles);
// Throws Error naming `file` and the field when the text is not this format.
TalosWipeCycles parse_talos_wipe_state_json(std::string_view text, const std::string& file);

inline constexpr std::string_view talos_wipe_state_file_name = "talos-wipe.json";

// <state directory>/talos-wipe.json when a profile of `inventory` is a rebuild-on-reboot Talos profile
// (talos, mode: ephemeral), nullopt when none is. Error naming the profile when there is no state
// directory (netboot.yaml state_dir, or dhcp.lease_file's directory), or it is not a directory.
std::optional<std::filesystem::path> talos_wipe_state_path(const NetbootConfig& config, const NodeInventory& inventory);

// The cycles of every node, in memory and in `file`. Thread-safe (serve answers on several threads).
// Every change is written at once to a temporary name in the same directory, fsynced and renamed over
// the file, and the directory fsynced: a crash leaves the old file or the new one, never half of one.
// A write that fails is logged and the memory copy still used: after a restart the node then meets an
// older state, and every older state leads to a wipe boot, which is the safe side.
class TalosWipeStateStore {
 public:
  // Reads `file` when it exists (Error naming it when it cannot be read or parsed); its directory
  // must exist.
  explicit TalosWipeStateStore(std::filesystem::path file);

  TalosWipeDecision script_requested(const std::string& node, WallClock::time_point now,
                                     std::chrono::seconds reboot_window, const std::string& client);
  std::optional<TalosWipeFilesFetched> boot_files_fetched(const std::string& node, WallClock::time_point now,
                                                          const std::string& client);
  std::optional<TalosWipeCycle> find(const std::string& node) const;
  const std::filesystem::path& file() const { return file_; }

 private:
  void save_locked();

  std::filesystem::path file_;
  mutable std::mutex mutex_;
  TalosWipeCycles cycles_;
};

}  // namespace aggrik8s::netboot
