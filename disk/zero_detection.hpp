#pragma once
// Whether a block of an image holds only zeros: such blocks are left as holes when an image is
// decoded, copied, edited or flashed, and left out of a bmap. It runs over every byte of every image,
// so it must go at memory speed.
#include <cstddef>
#include <cstdint>
#include <span>

namespace aggrik8s {

// True when every byte of `bytes` is zero (also for an empty span).
bool is_all_zero(std::span<const std::uint8_t> bytes);

inline bool is_all_zero(std::span<const std::byte> bytes) {
  return is_all_zero(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

}  // namespace aggrik8s
