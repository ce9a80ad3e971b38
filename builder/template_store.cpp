#include "builder/template_store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <utility>
#include <vector>

#include "builder/build_output.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/log.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

TemplateStore::TemplateStore(fs::path directory, std::string extension, std::size_t kept, int format, std::string what)
    : dir_(std::move(directory)), extension_(std::move(extension)), kept_(kept), format_(format), what_(std::move(what)) {}

namespace {

// A shared lock on `file`, or null when it is gone, or went while we waited for a pruner's exclusive
// lock (the name then no longer leads to what was opened). Where the filesystem has no flock, a
// descriptor without a lock: what a build reads is then as safe as it was before leases.
TemplateStore::Lease take_lease(const fs::path& file) {
  FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return nullptr;
  int rc = 0;
  while ((rc = ::flock(fd.get(), LOCK_SH)) != 0 && errno == EINTR) {
  }
  if (rc != 0 && errno != ENOLCK && errno != EOPNOTSUPP && errno != ENOSYS) return nullptr;
  struct stat opened {};
  struct stat named {};
  if (::fstat(fd.get(), &opened) != 0 || ::stat(file.c_str(), &named) != 0 || opened.st_dev != named.st_dev ||
      opened.st_ino != named.st_ino) {
    return nullptr;
  }
  return std::make_shared<const FileDescriptor>(std::move(fd));
}

}  // namespace

std::optional<TemplateStore::Found> TemplateStore::find(const std::string& key) const {
  fs::path file = dir_ / (key + extension_);
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return std::nullopt;
  Lease lease = take_lease(file);
  if (!lease) return std::nullopt;
  std::ifstream in(dir_ / (key + ".json"));
  nlohmann::json record = in ? nlohmann::json::parse(in, nullptr, false) : nlohmann::json();
  if (record.is_discarded() || !record.is_object() || record.value("format", 0) != format_ ||
      !cache_file_unchanged(file)) {
    lease.reset();  // ours would keep forget() from removing it
    forget(key);
    return std::nullopt;
  }
  return Found{file, std::move(record), std::move(lease)};
}

void TemplateStore::forget(const std::string& key) const { remove_unless_in_use(key); }

bool TemplateStore::remove_unless_in_use(const std::string& key) const {
  const fs::path file = dir_ / (key + extension_);
  std::error_code ec;
  // Held (exclusively) while the names go, so a build opening the file meanwhile waits, then sees
  // it gone (take_lease).
  FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) return false;
  forget_cache_file(file);
  fs::remove(dir_ / (key + ".json"), ec);
  return true;
}

TemplateStore::Found TemplateStore::store(const std::string& key, nlohmann::json record,
                                          const std::function<void(const fs::path&)>& write) const {
  fs::path file = dir_ / (key + extension_);
  fs::path sidecar = dir_ / (key + ".json");
  // A name of this process's own: two builds storing the same file at once each rename a whole one.
  fs::path temporary = dir_ / (key + extension_ + "." + std::to_string(::getpid()) + ".partial");
  RemovedOnInterrupt cleanup(temporary);
  std::error_code ec;
  Lease lease;
  try {
    fs::create_directories(dir_, ec);
    if (ec) throw Error("cannot create " + dir_.string() + ": " + ec.message());
    write(temporary);
    record["format"] = format_;
    record["size"] = fs::file_size(temporary);
    // The .json first: a file is only ever found with the record of its own bytes beside it (find()
    // removes one whose stamp or record is missing or from another format).
    write_text_file_atomically(sidecar, record.dump(2) + "\n", FileMode::exactly(0644));
    // Leased before it has its final name: another build's pruning cannot take it from this one.
    lease = take_lease(temporary);
    fs::rename(temporary, file);
    record_cache_file(file);
  } catch (const std::exception& e) {
    fs::remove(temporary, ec);
    throw Error("cannot keep " + what_ + " in the cache: " + e.what());
  }
  // The newest few, by when they were stored; and what a process killed while storing left behind.
  std::vector<std::pair<fs::file_time_type, std::string>> stored;
  auto now = fs::file_time_type::clock::now();
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    fs::file_time_type written = it->last_write_time(ec);
    if (ec) break;
    std::string name = it->path().filename().string();
    if (name.ends_with(extension_)) {
      stored.emplace_back(written, name.substr(0, name.size() - extension_.size()));
    } else if (name.ends_with(".partial") && now - written > std::chrono::hours(1)) {
      fs::remove(it->path(), ec);
    }
  }
  std::sort(stored.begin(), stored.end(), std::greater<>());
  // Newest first; one in use by another build stays (and does not count against the kept ones).
  std::size_t kept = 0;
  for (const auto& [written, name] : stored) {
    if (name == key || kept < kept_) {
      ++kept;
      continue;
    }
    if (!remove_unless_in_use(name)) log::debug(dir_.string(), ": ", name, extension_, " is in use by another build: kept");
  }
  return Found{file, std::move(record), std::move(lease)};
}

}  // namespace aggrik8s::builder
