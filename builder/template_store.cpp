#include "builder/template_store.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <utility>
#include <vector>

#include "builder/build_output.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

TemplateStore::TemplateStore(fs::path directory, std::string extension, std::size_t kept, int format, std::string what)
    : dir_(std::move(directory)), extension_(std::move(extension)), kept_(kept), format_(format), what_(std::move(what)) {}

std::optional<TemplateStore::Found> TemplateStore::find(const std::string& key) const {
  fs::path file = dir_ / (key + extension_);
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return std::nullopt;
  std::ifstream in(dir_ / (key + ".json"));
  nlohmann::json record = in ? nlohmann::json::parse(in, nullptr, false) : nlohmann::json();
  if (record.is_discarded() || !record.is_object() || record.value("format", 0) != format_ ||
      !cache_file_unchanged(file)) {
    forget(key);
    return std::nullopt;
  }
  return Found{file, std::move(record)};
}

void TemplateStore::forget(const std::string& key) const {
  forget_cache_file(dir_ / (key + extension_));
  std::error_code ec;
  fs::remove(dir_ / (key + ".json"), ec);
}

fs::path TemplateStore::store(const std::string& key, nlohmann::json record,
                              const std::function<void(const fs::path&)>& write) const {
  fs::path file = dir_ / (key + extension_);
  fs::path sidecar = dir_ / (key + ".json");
  // A name of this process's own: two builds storing the same file at once each rename a whole one.
  fs::path temporary = dir_ / (key + extension_ + "." + std::to_string(::getpid()) + ".partial");
  RemovedOnInterrupt cleanup(temporary);
  std::error_code ec;
  try {
    fs::create_directories(dir_, ec);
    if (ec) throw Error("cannot create " + dir_.string() + ": " + ec.message());
    write(temporary);
    record["format"] = format_;
    record["size"] = fs::file_size(temporary);
    // The .json first: a file is only ever found with the record of its own bytes beside it (find()
    // removes one whose stamp or record is missing or from another format).
    write_text_file_atomically(sidecar, record.dump(2) + "\n", FileMode::exactly(0644));
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
  for (std::size_t i = kept_; i < stored.size(); ++i) {
    if (stored[i].second != key) forget(stored[i].second);
  }
  return file;
}

}  // namespace aggrik8s::builder
