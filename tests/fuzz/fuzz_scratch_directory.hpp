// A scratch directory per fuzz input, made for the input and removed when it is done: targets whose
// parser reads files next to its input (`extends:`, relative profile paths) name the input inside it,
// so relative paths resolve to nothing on the host. Per input, not per process: libFuzzer ends a run
// with _Exit, so an atexit clean-up never ran and every test run left a directory in /tmp.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace aggrik8s::fuzz {

class ScratchDirectory {
 public:
  ScratchDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "aggrik8s-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace aggrik8s::fuzz
