#include "core/artifact_fetcher.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/http_download.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"

namespace aggrik8s {
namespace fs = std::filesystem;

namespace {

std::string describe(const ArtifactSource& source) {
  std::string where = source.where.file.empty() ? "" : " (declared at " + source.where.str() + ")";
  return source.shown() + where;
}

// "<file>.checked": "SIZE MTIME_NS INODE" of a cache file when it was last known good.
fs::path cache_stamp_path(const fs::path& file) { return fs::path(file.string() + ".checked"); }

std::string cache_stamp_text(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return {};
  return std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) +
         " " + std::to_string(st.st_ino) + "\n";
}

void sync_directory(const fs::path& dir) {
  FileDescriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd) ::fsync(fd.get());
}

std::uint64_t file_size(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

fs::path default_cache_dir() {
  if (const char* dir = std::getenv("AGGRIK8S_CACHE_DIR"); dir != nullptr && *dir != '\0') return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg == '/') {
    return fs::path(xdg) / "aggrik8s-image";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return fs::path(home) / ".cache" / "aggrik8s-image";
  }
  throw Error("no cache directory: set AGGRIK8S_CACHE_DIR, XDG_CACHE_HOME or HOME, or pass --cache-dir");
}

std::optional<fs::path> file_url_to_path(const std::string& url) {
  if (!url.starts_with("file://")) return std::nullopt;
  std::string rest = url.substr(7);
  if (rest.starts_with("localhost/")) rest = rest.substr(9);
  if (!rest.starts_with("/")) return std::nullopt;
  std::string decoded;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == '%' && i + 2 < rest.size() && hex_value(rest[i + 1]) >= 0 && hex_value(rest[i + 2]) >= 0) {
      decoded.push_back(static_cast<char>(hex_value(rest[i + 1]) * 16 + hex_value(rest[i + 2])));
      i += 2;
    } else {
      decoded.push_back(rest[i]);
    }
  }
  return fs::path(decoded);
}

ArtifactFetcher::ArtifactFetcher(FetchOptions options) : options_(std::move(options)) {
  if (options_.cache_dir.empty()) options_.cache_dir = default_cache_dir();
  if (options_.max_attempts < 1) options_.max_attempts = 1;
  if (options_.max_parallel < 1) options_.max_parallel = 1;
}

std::optional<fs::path> local_artifact_path(const ArtifactSource& source) {
  if (!is_supported_location(source.location, nullptr)) return std::nullopt;
  if (auto path = file_url_to_path(source.location)) return path;
  if (source.location.starts_with("file://") || source.is_download()) return std::nullopt;
  return fs::path(source.location);
}

FetchedArtifact ArtifactFetcher::fetch(const ArtifactSource& source) {
  std::string why;
  if (!is_supported_location(source.location, &why)) throw Error(describe(source) + ": " + why);
  if (auto path = local_artifact_path(source)) return fetch_local(source, *path);
  if (source.location.starts_with("file://")) {
    throw Error(describe(source) + ": a file URL must be absolute (file:///path)");
  }
  return fetch_download(source);
}

std::uint64_t ArtifactFetcher::checked_local_size(const ArtifactSource& source, const fs::path& path) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::is_regular_file(status)) {
    throw Error(describe(source) + ": " + (ec ? ec.message() : fs::exists(status) ? "not a regular file" : "no such file"));
  }
  return fs::file_size(path);
}

std::optional<FetchedArtifact> ArtifactFetcher::local_without_digest(const ArtifactSource& source) {
  if (source.sha256) return std::nullopt;
  auto path = local_artifact_path(source);
  if (!path) return std::nullopt;
  return FetchedArtifact{source, *path, {}, checked_local_size(source, *path), false, std::nullopt};
}

namespace {

std::optional<LocalFileStamp> stamp_of(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return std::nullopt;
  return LocalFileStamp{static_cast<std::uint64_t>(info.st_dev), static_cast<std::uint64_t>(info.st_ino),
                        static_cast<std::uint64_t>(info.st_size), info.st_mtim.tv_sec, info.st_mtim.tv_nsec};
}

}  // namespace

void check_local_input_unchanged(const FetchedArtifact& input) {
  if (!input.local_stamp) return;
  if (stamp_of(input.path) != input.local_stamp) {
    throw Error(input.source.where.str() + ": " + input.path.string() +
                " changed while the build was using it (replaced or written since its sha256 was checked): its "
                "bytes were not verified; run the build again once it is no longer being changed");
  }
}

FetchedArtifact ArtifactFetcher::fetch_local(const ArtifactSource& source, const fs::path& path) {
  std::uint64_t size = checked_local_size(source, path);
  std::optional<LocalFileStamp> before = stamp_of(path);
  ProgressTask progress("checksum " + path.filename().string(), size);
  Sha256Digest digest = Sha256::of_file(path);
  progress.set_done(size);
  progress.finish(true);
  if (source.sha256 && *source.sha256 != digest) {
    throw ChecksumMismatchError(describe(source) + ": sha256 mismatch: expected " + source.sha256->hex() + ", got " +
                                digest.hex());
  }
  FetchedArtifact fetched{source, path, digest, size, false, std::nullopt};
  if (source.sha256) {
    fetched.local_stamp = before;
    check_local_input_unchanged(fetched);  // changed while it was being hashed
  }
  return fetched;
}

namespace {

// The partial download of `path`, open and locked (flock) for this process alone. Another process may
// hold the lock while it downloads the same file; when it lets go it has renamed that file into the
// cache or removed it, so the descriptor opened before the lock was granted may name a file that is no
// longer at `path`: written through, it truncated the other process's finished cache file. So the lock
// counts only when the locked file is still the one at `path`; otherwise open and lock again.
// While waiting, a line every 5 s says what for (a stopped process holds its lock for as long as it is stopped).
FileDescriptor lock_partial_download(const fs::path& path, const ArtifactSource& source) {
  for (;;) {
    FileDescriptor fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) throw_system_error("cannot open " + path.string(), errno);
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) throw_system_error("cannot lock " + path.string(), errno);
      const auto started = std::chrono::steady_clock::now();
      auto next_report = started + std::chrono::seconds(5);
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
        if (errno != EWOULDBLOCK) throw_system_error("cannot lock " + path.string(), errno);
        if (auto now = std::chrono::steady_clock::now(); now >= next_report) {
          log::info("waiting ", std::chrono::duration_cast<std::chrono::seconds>(now - started).count(),
                    " s for another aggrik8s-image that is downloading ", source.shown(), " (it holds the lock of ",
                    path.string(), ")");
          next_report += std::chrono::seconds(5);
        }
      }
    }
    struct stat locked {}, named {};
    if (::fstat(fd.get(), &locked) == 0 && ::stat(path.c_str(), &named) == 0 && locked.st_dev == named.st_dev &&
        locked.st_ino == named.st_ino) {
      return fd;
    }
    // Renamed into the cache or removed by the process that held the lock: start over on the new name.
  }
}

}  // namespace

FetchedArtifact ArtifactFetcher::fetch_download(const ArtifactSource& source) {
  const fs::path verified_dir = options_.cache_dir / "sha256";
  const fs::path url_dir = options_.cache_dir / "url";
  const fs::path partial_dir = options_.cache_dir / "partial";
  const std::string key = source.sha256 ? source.sha256->hex() : Sha256::of(source.location).hex();
  const fs::path final_path = source.sha256 ? verified_dir / key : url_dir / key;

  auto cached = [&]() -> std::optional<FetchedArtifact> {
    std::error_code ec;
    if (!fs::is_regular_file(final_path, ec)) return std::nullopt;
    if (!source.sha256) {
      return FetchedArtifact{source, final_path, Sha256::of_file(final_path), fs::file_size(final_path), false, std::nullopt};
    }
    // Files in sha256/ were verified before they were renamed there, and a stamp beside each records
    // the size, modification time and inode it had then. A file that no longer matches its stamp (cut
    // short, edited, copied in by hand) is hashed again before it is trusted, and removed if it is not
    // the pinned bytes any more: a damaged cache is repaired by the next download, never used.
    if (cache_file_unchanged(final_path)) return FetchedArtifact{source, final_path, *source.sha256, fs::file_size(final_path), false, std::nullopt};
    Sha256Digest digest = Sha256::of_file(final_path);
    if (digest != *source.sha256) {
      log::warning("cached ", final_path.string(), " for ", describe(source), " is not the pinned bytes any more (sha256 ",
                   digest.hex(), "): removed");
      forget_cache_file(final_path);
      return std::nullopt;
    }
    record_cache_file(final_path);
    return FetchedArtifact{source, final_path, digest, fs::file_size(final_path), false, std::nullopt};
  };
  // Pinned files are immutable: a cache hit needs no network. Unpinned ones are fetched anew unless
  // offline, since the URL may now serve other bytes.
  if (source.sha256 || options_.offline) {
    if (auto hit = cached()) {
      log::debug("cache hit for ", source.shown(), ": ", hit->path.string());
      return *hit;
    }
  }
  if (options_.offline) {
    throw Error(describe(source) + ": not in the cache (" + options_.cache_dir.string() +
                ") and --offline forbids downloading it");
  }

  std::error_code ec;
  for (const auto& dir : {verified_dir, url_dir, partial_dir}) {
    fs::create_directories(dir, ec);
    if (ec) throw Error("cannot create cache directory " + dir.string() + ": " + ec.message());
  }
  const fs::path partial_path = partial_dir / (key + ".part");
  FileDescriptor fd = lock_partial_download(partial_path, source);
  if (source.sha256) {
    if (auto hit = cached()) {
      ::unlink(partial_path.c_str());
      return *hit;
    }
  } else if (::ftruncate(fd.get(), 0) != 0) {
    // An unpinned partial may be from other bytes than the URL serves now, so it is never resumed.
    throw_system_error("cannot truncate " + partial_path.string(), errno);
  }

  HttpDownloadLimits limits{options_.connect_timeout_seconds, options_.stall_timeout_seconds};
  ProgressTask progress("download " + source.file_name(), std::nullopt);
  auto backoff = options_.initial_backoff;
  bool restarted_after_mismatch = false;
  std::string last_error;
  bool last_outcome_permanent = false, last_write_failed = false;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    bool had_partial = file_size(fd.get()) > 0;
    if (had_partial) log::info("resuming ", source.shown(), " at byte ", file_size(fd.get()));
    HttpDownloadResult result = http_download(source.location, fd.get(), limits, &progress);
    if (result.outcome == HttpDownloadResult::Outcome::complete) {
      if (::fsync(fd.get()) != 0) throw_system_error("cannot sync " + partial_path.string(), errno);
      Sha256Digest digest = Sha256::of_file(partial_path);
      if (source.sha256 && digest != *source.sha256) {
        if (::ftruncate(fd.get(), 0) != 0) throw_system_error("cannot truncate " + partial_path.string(), errno);
        if (had_partial && !restarted_after_mismatch) {
          // The bytes kept from an earlier run may be the wrong part; one clean download decides.
          log::warning(source.shown(), ": sha256 mismatch after resuming; downloading again from the start");
          restarted_after_mismatch = true;
          continue;
        }
        ::unlink(partial_path.c_str());
        throw ChecksumMismatchError(describe(source) + ": sha256 mismatch: expected " + source.sha256->hex() +
                                    ", got " + digest.hex() + " (the downloaded file was removed)");
      }
      std::uint64_t size = file_size(fd.get());
      if (::rename(partial_path.c_str(), final_path.c_str()) != 0) {
        throw_system_error("cannot move the download into " + final_path.string(), errno);
      }
      if (source.sha256) record_cache_file(final_path);
      sync_directory(final_path.parent_path());
      progress.finish();
      return FetchedArtifact{source, final_path, digest, size, true, std::nullopt};
    }
    last_error = result.message;
    last_outcome_permanent = result.outcome == HttpDownloadResult::Outcome::permanent_failure;
    last_write_failed = result.write_failed;
    if (last_outcome_permanent) break;
    if (attempt < options_.max_attempts) {
      log::warning(result.message, "; retrying in ", backoff.count(), " ms (attempt ", attempt + 1, " of ",
                   options_.max_attempts, ")");
      std::this_thread::sleep_for(backoff);
      backoff = std::min(options_.max_backoff, backoff * 2);
    } else {
      last_error += " (gave up after " + std::to_string(options_.max_attempts) + " attempts)";
      // An edge site's build machine is often offline by design: say how builds work there.
      if (result.host_unreachable) {
        last_error += "; without a network here, download where there is one (`aggrik8s-image fetch PROFILE`), "
                      "bring that cache (--cache-dir) and run with --offline";
      }
    }
  }
  progress.finish(true);
  // A partial from a transient failure is kept for the next run to resume; a permanent one is not (a
  // full disk's partial kept the cache full: every later download failed with ENOSPC too).
  if (file_size(fd.get()) == 0 || last_outcome_permanent) ::unlink(partial_path.c_str());
  if (last_write_failed) last_error += " (the cache is " + options_.cache_dir.string() + "; the partial download was removed)";
  throw Error(describe(source) + ": " + last_error);
}

std::vector<FetchedArtifact> ArtifactFetcher::fetch_all(const std::vector<ArtifactSource>& sources) {
  // Identical sources (same location and checksum) are fetched once and shared.
  std::vector<std::size_t> unique_index(sources.size());
  std::vector<std::size_t> unique;
  std::map<std::pair<std::string, std::string>, std::size_t> seen;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    auto key = std::make_pair(sources[i].location, sources[i].sha256 ? sources[i].sha256->hex() : std::string());
    auto [it, inserted] = seen.emplace(key, unique.size());
    if (inserted) unique.push_back(i);
    unique_index[i] = it->second;
  }
  std::vector<std::optional<FetchedArtifact>> results(unique.size());
  std::vector<std::string> errors(unique.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t u = next++; u < unique.size(); u = next++) {
      try {
        results[u] = fetch(sources[unique[u]]);
      } catch (const std::exception& e) {
        errors[u] = e.what();
      }
    }
  };
  std::size_t thread_count = std::min<std::size_t>(options_.max_parallel, unique.size());
  std::vector<std::thread> threads;
  for (std::size_t t = 1; t < thread_count; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();

  std::string failures;
  std::size_t failure_count = 0;
  for (const auto& e : errors) {
    if (!e.empty()) {
      failures += "\n  " + e;
      ++failure_count;
    }
  }
  if (failure_count == 1) throw Error(failures.substr(3));
  if (failure_count > 1) throw Error(std::to_string(failure_count) + " inputs could not be fetched:" + failures);
  std::vector<FetchedArtifact> out;
  out.reserve(sources.size());
  for (std::size_t i = 0; i < sources.size(); ++i) {
    FetchedArtifact a = *results[unique_index[i]];
    a.source = sources[i];
    out.push_back(std::move(a));
  }
  return out;
}

void record_cache_file(const fs::path& file) {
  // Best effort: without a stamp the next use checks the file again, which is only slower.
  std::string text = cache_stamp_text(file);
  if (text.empty()) return;
  std::ofstream out(cache_stamp_path(file), std::ios::trunc);
  out << text;
}

bool cache_file_unchanged(const fs::path& file) {
  std::ifstream in(cache_stamp_path(file));
  std::string recorded;
  if (!std::getline(in, recorded)) return false;
  std::string now = cache_stamp_text(file);
  return !now.empty() && recorded + "\n" == now;
}

void forget_cache_file(const fs::path& file) {
  std::error_code ec;
  fs::remove(file, ec);
  fs::remove(cache_stamp_path(file), ec);
}

}  // namespace aggrik8s
