// A scratch directory per fuzzing process, made on first use and removed at exit: targets whose
// parser reads files next to its input (`extends:`, relative profile paths) name the input inside it,
// so relative paths resolve to nothing on the host.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace aggrik8s::fuzz {

inline const std::filesystem::path& scratch_directory() {
  static const std::filesystem::path directory = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "aggrik8s-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    std::filesystem::path made(pattern);
    std::atexit([] { std::filesystem::remove_all(scratch_directory()); });
    return made;
  }();
  return directory;
}

}  // namespace aggrik8s::fuzz
