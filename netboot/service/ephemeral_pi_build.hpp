#pragma once
// What `serve` reads of an ephemeral Pi build (`aggrik8s-image build` with output.ephemeral), and how it
// picks the build a booting node gets.
//
// The build writes, under OUT/ephemeral/<profile>/ (builder/rpi/ephemeral_output.hpp):
//   current.json           {"build": "<id>"}: replaced atomically by every build
//   <id>/ephemeral.json    the build's manifest (parse_ephemeral_manifest)
//   <id>/root.squashfs     the root every node of the profile shares (no secrets)
//   <id>/boot/...          the boot partition's files and our initramfs
//   <id>/nodes/<n>/...     config.txt, cmdline.txt (without the URLs) and layer.tar (0600: the token)
// A build directory never changes once written (the id is a digest of its contents), so URLs that name
// it are content-addressed: a node that started booting one build finishes with it even when a rebuild
// lands meanwhile. A node's boot is pinned to a build when it asks for its config.txt (the first file a
// Pi asks for) and stays pinned for `boot_window`; a reboot after that takes the current build. Old
// builds are removed once no boot can still need them (prune).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::netboot {

struct EphemeralNodeEntry {
  std::string hostname;
  std::string cmdline;          // the node's kernel arguments without the aggrik8s.* URLs
  std::string config_txt;       // relative to the build directory
  std::string layer;            // relative to the build directory
};

struct EphemeralBuildManifest {
  std::string id;
  std::string profile;          // the build profile's name
  std::string root_file;        // relative to the build directory
  std::string root_sha256;
  std::uint64_t root_size = 0;
  std::map<std::string, EphemeralNodeEntry> nodes;
  // With output.http_boot: "<serve_url>/ephemeral/<serve_profile>", the URL base the signed boot.imgs
  // carry (they cannot be changed by serve, as the TFTP cmdline.txt is).
  std::optional<std::string> http_boot_url_base;
};

// Parses ephemeral.json; Error naming `where` and the field for anything missing or malformed (file
// names must stay inside the build directory).
EphemeralBuildManifest parse_ephemeral_manifest(std::string_view json, const std::string& where);
// The id current.json names; Error naming `where` otherwise.
std::string parse_ephemeral_current(std::string_view json, const std::string& where);

// The kernel command line a node's cmdline.txt gets: the build's arguments for it, then where its
// root is (content-addressed by build id, checked against its sha256) and where its identity bundle is.
// `url_base` is "<serve base URL>/ephemeral/<nodes-file profile>". One line, ending in "\n".
std::string ephemeral_node_cmdline(const EphemeralBuildManifest& build, const std::string& node, const std::string& url_base);

struct EphemeralBuild {
  std::filesystem::path directory;
  EphemeralBuildManifest manifest;
};

// One profile's builds, as `serve` sees them. Thread-safe.
class EphemeralPiBuilds {
 public:
  using Clock = std::chrono::steady_clock;
  explicit EphemeralPiBuilds(std::filesystem::path directory, Clock::duration boot_window = std::chrono::minutes(10));

  // The build current.json names (re-read when current.json changes). Error when it cannot be read.
  std::shared_ptr<const EphemeralBuild> current();
  // A build by id, if its directory is there (ids are checked: hex only).
  std::shared_ptr<const EphemeralBuild> find(std::string_view id);
  // The build for a node's boot: `boot_starts` (its config.txt) pins the current build to the node;
  // later files of the same boot get the pinned one while the pin is younger than boot_window.
  std::shared_ptr<const EphemeralBuild> for_boot(const std::string& node, bool boot_starts, Clock::time_point now);
  // Ids of builds some node was handed within `within` (pinned), and the current one: what must stay.
  std::set<std::string> in_use(Clock::time_point now, Clock::duration within);
  // Removes the builds a node can no longer be booting from: those that are not current, once
  // current.json has named another build for at least keep_for (so a build retired by a rebuild stays
  // while nodes that started with it may still be fetching it, across a restart of serve too, which
  // forgets its pins), and that no node was pinned to within keep_for. Returns the ids removed.
  // Failures are logged, not thrown (serve may not own the build directory). files_now: the clock
  // current.json's mtime is compared with.
  std::vector<std::string> prune(Clock::time_point now, Clock::duration keep_for,
                                 std::filesystem::file_time_type files_now = std::filesystem::file_time_type::clock::now());
  const std::filesystem::path& directory() const { return directory_; }

 private:
  std::shared_ptr<const EphemeralBuild> load(const std::string& id);  // mutex_ held
  std::filesystem::path directory_;
  Clock::duration boot_window_;
  std::mutex mutex_;
  std::filesystem::file_time_type current_mtime_{};
  std::string current_id_;
  std::map<std::string, std::shared_ptr<const EphemeralBuild>> loaded_;
  struct Pin {
    std::string id;
    Clock::time_point at;
  };
  std::map<std::string, Pin> pins_;
};

}  // namespace aggrik8s::netboot
