#pragma once
// Two SHA-256 digests computed together on one core, for two messages fed the same number of bytes
// at a time (two node images of the same size, read side by side). A SHA-256 chain is sequential and
// the x86 SHA extensions' round instruction waits for its previous result (a single chain ran at
// 1.7 GB/s on this project's 2-core VMs, bound by that latency, not by the unit): two independent
// chains interleaved fill those waits, 2.57 GB/s for both together. A build with more node images
// than cores hashes them in pairs (builder/rpi). Where the CPU lacks the extensions (or outside
// x86-64), the pair is two OpenSSL hashes one after the other.
#include <array>
#include <cstdint>
#include <span>

#include "core/sha256.hpp"

namespace aggrik8s {

class Sha256Pair {
 public:
  enum class Implementation { automatic, portable };
  explicit Sha256Pair(Implementation implementation = Implementation::automatic);

  // Whether automatic uses the interleaved SHA-extension code on this CPU.
  static bool accelerated();

  // `first` and `second` must be the same size (throws std::invalid_argument otherwise).
  void update(std::span<const std::uint8_t> first, std::span<const std::uint8_t> second);
  std::array<Sha256Digest, 2> finish();

 private:
  void compress(const std::uint8_t* first, const std::uint8_t* second, std::size_t blocks);

  bool interleaved_;
  // Interleaved: both chains' states, the bytes of an incomplete block, and the length so far.
  std::array<std::array<std::uint32_t, 8>, 2> state_{};
  std::array<std::array<std::uint8_t, 64>, 2> pending_{};
  std::size_t pending_bytes_ = 0;
  std::uint64_t length_ = 0;
  // Portable.
  std::array<Sha256, 2> portable_;
};

}  // namespace aggrik8s
