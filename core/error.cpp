#include "core/error.hpp"

#include <cstring>

namespace aggrik8s {

void throw_system_error(const std::string& what, int err) {
  throw Error(what + ": " + std::strerror(err));
}

}  // namespace aggrik8s
