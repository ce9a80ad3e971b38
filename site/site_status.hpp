#pragma once
// `aggrik8s-image status SITE`: per machine of a site, what was built (from the build's manifest.json
// in the profile's output directory) and what serve saw of it (from serve's boot event log, one JSON
// object per line, written by netboot/service/boot_event_log.cpp). The record formats are read here
// again rather than through netboot/ or the builders: site/ sits below netboot/, and what status needs
// of them is a few fields it can check for itself. Parsing, matching and the rows are pure (text in,
// values out); only read_boot_history and read_site_builds touch files.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/diagnostics.hpp"
#include "site/site_inventory.hpp"

namespace aggrik8s::site {

using StatusClock = std::chrono::system_clock;

// One line of serve's boot event log, as read back.
struct BootEventRecord {
  StatusClock::time_point time{};
  std::string time_text;            // as logged ("2026-11-24T10:00:00.123Z")
  std::optional<std::string> node;  // the inventory node serve matched; none for an unknown machine
  std::string client;               // the requesting address
  std::string step;                 // tftp, ipxe-script, asset, talos-config, http-boot, wipe-boot, ...
  std::string file;                 // TFTP name or HTTP request target, as the client sent it
  std::uint64_t bytes = 0;
  std::string result;               // ok, probe, failed, refused, not-found
  std::string detail;
  SourceLocation where;             // log file and line
};

// One line (without its newline). nullopt with `error` set when it is not a boot event: not JSON, not
// an object, or time/client/step/result missing or of the wrong type. Unknown fields are ignored.
std::optional<BootEventRecord> parse_boot_event_line(std::string_view line, std::string& error);

// The site machine an event belongs to: the node serve named when that is a site machine (serve --site
// names nodes as the site does); otherwise the MAC, UUID or Pi serial the request carried — a TFTP
// name's first directory (serial or MAC, as the Pi's TFTP_PREFIX puts it), /ipxe's mac=/uuid=/serial=,
// the ID of /talos/ID/, /cloud-init/ID/, /rke2/ID/. nullptr when none of these names a site machine.
const Machine* machine_of_boot_event(const SiteInventory& site, const BootEventRecord& event);

// What the log says about one machine.
struct MachineBootHistory {
  std::optional<BootEventRecord> last_ok;  // the newest step that succeeded: its last boot
  std::optional<BootEventRecord> last;     // the newest event of any result: when it was last seen
  std::size_t events = 0;
  std::size_t failed = 0;                  // results failed, refused, not-found
};

struct SiteBootHistory {
  std::vector<std::string> log_files;                  // what was read, in order
  std::map<std::string, MachineBootHistory> machines;  // by machine name; absent: never seen
  std::size_t events = 0;
  std::size_t unmatched = 0;  // events no site machine is named by (other machines, unknown PXE clients)
  std::size_t malformed = 0;
};

// Adds one event (newest by time wins; on equal times the later one).
void add_boot_event(SiteBootHistory& history, const SiteInventory& site, BootEventRecord event);

// Reads a log from a stream line by line (a log grows for months; only each machine's newest events are
// kept). A malformed line is a warning "FILE:LINE: ..." (the first 20; then a count), never fatal. A
// last line without its newline that does not parse is serve's write in progress: skipped silently.
void add_boot_event_log(SiteBootHistory& history, const SiteInventory& site, std::istream& log,
                        const std::string& file_name, Diagnostics& diagnostics);

// Each file in order (rotated ones first: boot.jsonl.1, boot.jsonl). A file that cannot be opened is
// an error naming it.
SiteBootHistory read_boot_history(const SiteInventory& site, const std::vector<std::filesystem::path>& log_files,
                                  Diagnostics& diagnostics);

// A file a build wrote for a node, as manifest.json lists it ({"file", "size", "sha256"}).
struct BuiltNodeFile {
  std::string role;  // the manifest's key: image, bmap, boot_img, config-iso, iso, netboot, ...
  std::string file;  // relative to the profile's output directory
  std::uint64_t size = 0;
  std::string sha256;
};

// One profile's build, from <output>/<profile name>/manifest.json (builder/build_manifest.hpp).
struct ProfileBuildRecord {
  std::filesystem::path manifest;                  // the file it was read from
  std::optional<StatusClock::time_point> written;  // manifest.json's modification time: when it was built
  std::optional<std::int64_t> source_date_epoch;   // the fixed time the build's outputs carry, when set
  std::string tool_version;
  std::map<std::string, std::vector<BuiltNodeFile>> node_files;  // by node name, most telling first
  // The ephemeral build serve boots (ephemeral/<profile>/current.json) and when it was published.
  std::optional<std::string> ephemeral_build;
  std::optional<StatusClock::time_point> ephemeral_published;
};

// manifest.json's text. Errors name `file_name` and the field. Node files are found wherever a node's
// entry holds {"file", "sha256"} objects (image, bmap, compressed, boot_img, boot_sig for a Pi;
// outputs.config-iso, outputs.iso, outputs.netboot.files for Talos), the node's main product first
// (the Pi image, the Talos ISO, then the config ISO).
std::optional<ProfileBuildRecord> parse_build_manifest(std::string_view text, const std::string& file_name,
                                                       Diagnostics& diagnostics);
// current.json's text ({"build": "<id>"}); nullopt with an error when it is not that.
std::optional<std::string> parse_ephemeral_current(std::string_view text, const std::string& file_name,
                                                   Diagnostics& diagnostics);

// Every profile's build record the site's machines use, by Machine::profile. A profile never built (no
// manifest.json) is absent; an unreadable or malformed manifest is an error.
std::map<std::filesystem::path, ProfileBuildRecord> read_site_builds(const LoadedSite& site, Diagnostics& diagnostics);

// One row of `status`.
struct MachineStatus {
  std::string machine;
  Platform platform = Platform::rpi5;
  BootMethod boot = BootMethod::disk;
  std::string profile;  // the profile's name
  std::string address;  // the site's address for it, without the prefix length
  // Built: the node's files (main product first), or for a Pi booting `ephemeral` the ephemeral build
  // current.json names. Neither: not built.
  std::vector<BuiltNodeFile> built_files;
  std::optional<std::string> ephemeral_build;
  std::optional<StatusClock::time_point> built_at;
  std::optional<std::int64_t> source_date_epoch;
  std::string tool_version;
  MachineBootHistory history;  // events == 0: never seen
  bool built() const { return !built_files.empty() || ephemeral_build.has_value(); }
};

std::vector<MachineStatus> machine_statuses(const LoadedSite& site,
                                            const std::map<std::filesystem::path, ProfileBuildRecord>& builds,
                                            const SiteBootHistory& history);

// The table: MACHINE PLATFORM BOOT BUILT LAST-BOOT FROM LAST-SEEN, ages relative to `now`.
std::string status_table(const std::vector<MachineStatus>& rows, const SiteBootHistory& history,
                         StatusClock::time_point now);
// The same as JSON (--json): {"site", "boot_logs", "events", "unmatched_events", "machines": [...]}.
std::string status_json(const std::string& site_name, const std::vector<MachineStatus>& rows,
                        const SiteBootHistory& history);

// "2026-11-24T10:00:00Z" (UTC, whole seconds).
std::string utc_time_text(StatusClock::time_point time);
// "2026-11-24T10:00:00.123Z" or without the fraction -> time; nullopt when not that form.
std::optional<StatusClock::time_point> parse_utc_time(std::string_view text);

}  // namespace aggrik8s::site
