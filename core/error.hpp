#pragma once
// One exception type for failures a user can act on (bad input, missing file, network failure).
// Bugs are not reported through it. The message is complete: it names the file/field/URL and what
// was expected, because it is printed as-is at the top level.
#include <stdexcept>
#include <string>

namespace aggrik8s {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// errno-carrying failures of a system call, with the path or object it was about.
[[noreturn]] void throw_system_error(const std::string& what, int err);

}  // namespace aggrik8s
