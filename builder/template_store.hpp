#pragma once
// Files a build keeps in the cache so that the next build can start from them instead of making them
// again: the Talos node ISO templates (talos/iso_template_cache.hpp) and the Pi builds' grown base
// images (rpi/rpi_image_builder.cpp). Each is kept under a key that names everything that decides its
// bytes, so a file found under a key is the file a build would make from scratch.
//
// <directory>/<key><extension>, and <key>.json beside it: the record the user of the store writes
// (what the key was made of, a checksum...) with the store's "format" and the file's "size" added.
// The file carries its stamp (core/artifact_fetcher.hpp: record_cache_file). A file whose stamp no
// longer matches, or whose record is missing or of another format, is removed when it is looked up.
// After each store only the newest few are kept, but never one another build is using: whoever finds
// or stores a file holds a lease on it (a shared flock on the file) for as long as it reads it, and
// pruning skips a file it cannot lock exclusively at once. Two builds from one cache with more sizes
// (or ISOs) than are kept then never remove the file the other is reading by its path.
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/file_descriptor.hpp"

namespace aggrik8s::builder {

class TemplateStore {
 public:
  // `format`: bumped by the user when what a file holds changes in a way its key would not show.
  // `what`: what errors call one file ("the node ISO template").
  TemplateStore(std::filesystem::path directory, std::string extension, std::size_t kept, int format, std::string what);

  // Held while the file is in use (see above); copies share it.
  using Lease = std::shared_ptr<const FileDescriptor>;
  struct Found {
    std::filesystem::path path;
    nlohmann::json record;
    Lease in_use;
  };
  // The file under `key` with its record, or nullopt (none, or one changed since it was stored, or
  // recorded in another format: removed; or one being removed by another build's pruning).
  std::optional<Found> find(const std::string& key) const;
  // Stores a file: `write` makes it at the path it is given (a temporary name beside the final one);
  // then the oldest files beyond the newest `kept` are removed, and what a process killed while
  // storing left behind an hour ago. Returns the file's path. Throws Error ("cannot keep <what> in
  // the cache: ...") when the cache cannot be written or `write` throws; nothing is then left under
  // a final name. The file comes with its lease, taken before it got its final name.
  Found store(const std::string& key, nlohmann::json record,
              const std::function<void(const std::filesystem::path&)>& write) const;
  // Removes a file (and its record) found to be unusable, unless another build holds a lease on it.
  void forget(const std::string& key) const;
  const std::filesystem::path& directory() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::string extension_;
  std::size_t kept_;
  int format_;
  std::string what_;

  // Removes key's file and record unless a lease is held on the file; false when one is.
  bool remove_unless_in_use(const std::string& key) const;
};

}  // namespace aggrik8s::builder
