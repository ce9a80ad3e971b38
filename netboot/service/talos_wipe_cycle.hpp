#pragma once
// Rebuild-on-reboot for Talos nodes booted over iPXE (a Talos profile with `mode: ephemeral`): every
// power-on is served two boots in a row,
//   1. a wipe boot: the node's normal kernel line plus talos.experimental.wipe=<profile's wipe>, on
//      which Talos wipes its STATE and EPHEMERAL partitions and reboots by itself, before it ever loads
//      a machine config;
//   2. the normal boot (talos.config=..., no wipe), which comes up as a freshly installed node with the
//      same machine config, i.e. the same identity.
// Talos cannot say which of the two it wants: both requests are the same GET /ipxe. This file is the
// rule serve uses to tell them apart, as a pure per-node state machine (times in, decision out);
// docs/netboot.md, "Rebuild-on-reboot Talos nodes", explains it to users and says why:
//   - after a wipe boot was served, the node's next script request is its reboot, and gets the normal
//     boot, but only once the wipe boot has fetched its boot files (its kernel or initramfs) and only
//     within the profile's wipe_reboot_window of that; a request before the files were fetched is the
//     same boot asking again (wipe again), one after the window is a wipe boot that never came back
//     (powered off mid-wipe): the next power-on, so wipe again;
//   - after a normal boot was served, the next request is a new power-on (wipe), unless the normal
//     boot has not fetched its files yet and asks within the window (the same boot asking again).
//   - both rules hold only for requests from the address the last script went to: a request or a file
//     fetch from any other address is not the node's own boot (another NIC, or anyone on the network
//     fetching /ipxe?mac=<node> and its kernel, which would otherwise turn the node's next power-on
//     into a "wipe boot's reboot" and bring its old STATE back), so a script request from it is doubt
//     and a file fetch from it is not noted.
// When in doubt it wipes: an extra wipe costs one reboot and the cycle then goes on, a missed wipe
// would bring the old STATE back. A clock that went back (now before the last recorded time) is doubt.
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace aggrik8s::netboot {

using WallClock = std::chrono::system_clock;

enum class TalosBootKind { wipe, normal };
const char* to_string(TalosBootKind kind);
std::optional<TalosBootKind> parse_talos_boot_kind(std::string_view text);

// What serve remembers per node (persisted in <state_dir>/talos-wipe.json, talos_wipe_state_file.hpp).
struct TalosWipeCycle {
  TalosBootKind served = TalosBootKind::normal;       // the last boot script served
  WallClock::time_point served_at{};                   // when it was first served (a repeat keeps it)
  std::optional<WallClock::time_point> files_fetched_at;  // when that boot fetched its first boot file
  std::string served_to;  // the client address that script went to (empty in files older than it: doubt)
  bool operator==(const TalosWipeCycle&) const = default;
};

// Every change of a node's cycle has one of these names (boot event log, metrics, logs).
enum class TalosWipeTransition {
  power_on_wipe,       // no state, or the last normal boot is done: a new power-on gets the wipe boot
  wipe_repeat,         // the wipe boot asks again before fetching its files: the wipe again
  wipe_reboot_normal,  // the wipe boot fetched its files and its reboot asks within the window: normal
  wipe_expired,        // the wipe boot fetched its files but nothing came within the window: wipe again
  normal_repeat,       // the normal boot asks again before fetching its files, within the window
  clock_went_back,     // now is before the last recorded time: doubt, so wipe
  other_address,       // from another address than the last script went to: doubt, so wipe
  wipe_files_fetched,  // the wipe boot fetched its first boot file
  normal_files_fetched,  // the normal boot fetched its first boot file
};
const char* to_string(TalosWipeTransition transition);

struct TalosWipeDecision {
  TalosBootKind boot = TalosBootKind::wipe;  // what to serve now
  TalosWipeTransition transition = TalosWipeTransition::power_on_wipe;
  TalosWipeCycle next;                       // the node's new state
};

// A script request from `client` (its IP address) at `now`; `state` is nullopt for a node with no record.
TalosWipeDecision decide_talos_wipe_boot(const std::optional<TalosWipeCycle>& state, WallClock::time_point now,
                                         std::chrono::seconds reboot_window, std::string_view client);

struct TalosWipeFilesFetched {
  TalosWipeTransition transition = TalosWipeTransition::wipe_files_fetched;
  TalosWipeCycle next;
};
// `client` fetched one of the node's boot files at `now`. Only the first file after a served script
// counts (the kernel, then the initramfs), and only from the address the script went to: nullopt when
// nothing changes (no record, already noted, or another address).
std::optional<TalosWipeFilesFetched> note_talos_boot_files_fetched(const std::optional<TalosWipeCycle>& state,
                                                                   WallClock::time_point now, std::string_view client);

// The node's place in the cycle, for the metrics' state set: "wipe-served", "wipe-running" (the wipe
// boot fetched its files), "normal-served", "normal-running".
const char* talos_wipe_cycle_state(const TalosWipeCycle& cycle);
inline constexpr const char* talos_wipe_cycle_states[] = {"wipe-served", "wipe-running", "normal-served",
                                                          "normal-running"};
// One line for the status page: where the node is and what its next script request gets.
std::string describe_talos_wipe_cycle(const TalosWipeCycle& cycle, WallClock::time_point now,
                                      std::chrono::seconds reboot_window);

// Talos' values of talos.experimental.wipe (internal/app/machined/pkg/runtime/v1alpha1/
// v1alpha1_sequencer_tasks.go, ResetSystemDiskPartitions and parseTargets): "system" (the whole system
// disk) or "system:LABEL[,LABEL...]" (those partitions). nullopt when `text` is one of them, else what
// is wrong with it.
std::optional<std::string> check_talos_wipe_argument(std::string_view text);
inline constexpr std::string_view default_talos_wipe = "system:EPHEMERAL,STATE";
inline constexpr std::chrono::seconds default_talos_wipe_reboot_window{600};
// "talos.experimental.wipe=<wipe>": the word a wipe boot's kernel line gets at its end.
std::string talos_wipe_kernel_argument(std::string_view wipe);

}  // namespace aggrik8s::netboot
