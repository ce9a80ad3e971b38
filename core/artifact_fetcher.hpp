#pragma once
// Brings every input of a build (base images, RKE2 and Talos release files) onto local disk, verified.
//
// Cache layout (content-addressed, so two profiles that name the same bytes share one copy, and a
// file's name proves it was verified):
//   <cache>/sha256/<hex>          verified files, named by their sha256
//   <cache>/url/<sha256 of URL>   the last download of an unpinned URL (no checksum in the profile)
//   <cache>/partial/<key>.part    downloads in progress; resumed with an HTTP range request; locked
//                                 with flock so two builds never write one file
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/artifact_source.hpp"
#include "core/error.hpp"

namespace aggrik8s {

struct FetchOptions {
  std::filesystem::path cache_dir;  // empty: default_cache_dir()
  bool offline = false;             // never touch the network; uncached downloads fail
  int max_attempts = 5;             // per file, for transient failures (connection drops, 5xx, timeouts)
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{8000};
  unsigned max_parallel = 4;
  long connect_timeout_seconds = 15;
  long stall_timeout_seconds = 30;  // abort (and retry) a transfer slower than 1 KiB/s for this long
};

// The file's bytes do not have the sha256 the source pins: its own type so that a caller can tell
// "these are the wrong bytes" from "the bytes could not be had" without reading the message.
class ChecksumMismatchError : public Error {
 public:
  using Error::Error;
};

// A local input file as it was when its sha256 was taken: device, inode, size, modification time.
struct LocalFileStamp {
  std::uint64_t device = 0, inode = 0, size = 0;
  std::int64_t mtime_sec = 0, mtime_nsec = 0;
  bool operator==(const LocalFileStamp&) const = default;
};

struct FetchedArtifact {
  ArtifactSource source;
  std::filesystem::path path;  // local file to read
  Sha256Digest sha256;
  std::uint64_t size = 0;
  bool downloaded = false;  // false: served from the cache or a local path
  // A `path:` input with a pinned sha256 is read again later from its path (decoded, copied): set so
  // that the reader can tell it is still the file that was hashed (check_local_input_unchanged).
  std::optional<LocalFileStamp> local_stamp;
};

// Throws Error naming the input when a verified local input (local_stamp) is no longer the file whose
// sha256 was checked: replaced (mv) or written since. Its bytes were then never verified, and must
// not reach an image or the cache that keys them by the pinned sha256. Nothing for other inputs.
void check_local_input_unchanged(const FetchedArtifact& input);

// $AGGRIK8S_CACHE_DIR, else $XDG_CACHE_HOME/aggrik8s-image, else ~/.cache/aggrik8s-image.
std::filesystem::path default_cache_dir();

class ArtifactFetcher {
 public:
  explicit ArtifactFetcher(FetchOptions options);
  const FetchOptions& options() const { return options_; }

  // Throws Error naming the source (and the profile line that declared it) on failure,
  // ChecksumMismatchError when the bytes are not the pinned ones.
  FetchedArtifact fetch(const ArtifactSource& source);
  // Fetches up to options.max_parallel at once; identical sources are fetched once. All failures are
  // reported together in one Error.
  std::vector<FetchedArtifact> fetch_all(const std::vector<ArtifactSource>& sources);
  // A local source with no pinned sha256, checked as fetch() checks it but not hashed (`sha256` left
  // empty): for a caller whose only use of the digest is a manifest and which takes it on another
  // thread meanwhile (the Talos build: hashing a 127 MiB ISO was ~0.1 s before its first node could
  // start). nullopt for a download or a pinned source, which fetch() must verify first.
  std::optional<FetchedArtifact> local_without_digest(const ArtifactSource& source);

 private:
  std::uint64_t checked_local_size(const ArtifactSource& source, const std::filesystem::path& path);
  FetchedArtifact fetch_local(const ArtifactSource& source, const std::filesystem::path& path);
  FetchedArtifact fetch_download(const ArtifactSource& source);

  FetchOptions options_;
};

// The file fetch() would read a local source from (a path, or an absolute file:// URL), without
// touching it; nullopt for a download or a location fetch() refuses. Lets a caller start reading a
// local input while fetch() takes its SHA-256 (nothing may be written from it before fetch() returns).
std::optional<std::filesystem::path> local_artifact_path(const ArtifactSource& source);

// A cache file's stamp ("<file>.checked": its size, modification time and inode when it was last
// known good). record_cache_file() writes it; cache_file_unchanged() says whether the file still
// matches it, so a file cut short or edited since is not trusted without checking it again.
void record_cache_file(const std::filesystem::path& file);
bool cache_file_unchanged(const std::filesystem::path& file);
void forget_cache_file(const std::filesystem::path& file);  // removes the file and its stamp

// "file:///a%20b" -> "/a b"; nullopt when not a file URL.
std::optional<std::filesystem::path> file_url_to_path(const std::string& url);

}  // namespace aggrik8s
