#include "disk/zero_detection.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace aggrik8s {

// memcmp against a block of zeros that stays in L1: glibc's vectorized memcmp. Measured at -O2 on
// this project's VMs (4 KiB blocks and 1 MiB buffers alike), it ran about ten times as fast as a byte
// loop (std::all_of: 1.4-6.5 GB/s against 14-66 GB/s, depending on the machine's load) and two to
// three times as fast as a word-wise OR loop.
bool is_all_zero(std::span<const std::uint8_t> bytes) {
  static constexpr std::array<std::uint8_t, 4096> zeros{};
  const std::uint8_t* data = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    std::size_t n = std::min(left, zeros.size());
    if (std::memcmp(data, zeros.data(), n) != 0) return false;
    data += n;
    left -= n;
  }
  return true;
}

}  // namespace aggrik8s
