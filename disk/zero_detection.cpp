#include "disk/zero_detection.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace aggrik8s {

// memcmp against a block of zeros that stays in L1: glibc's vectorized memcmp checked 4 KiB blocks
// at 14-18 GB/s and 1 MiB buffers at 24-26 GB/s on this project's VMs, against 1.4-1.8 GB/s for a
// byte loop (std::all_of) and 7-10 GB/s for a word-wise OR loop at -O2.
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
