#pragma once
// One message's SHA-256 that can go on alone or interleaved with another message's on the same core,
// for hashing several node images at once. A SHA-256 chain is sequential and the x86 SHA extensions'
// round instruction waits for its previous result (one chain ran at 1.7 GB/s on this project's 2-core
// VMs, bound by that latency, not by the unit): two independent chains interleaved fill those waits,
// 2.57 GB/s for both together. So N images on P < N cores are hashed some in pairs and some alone,
// and which lanes pair up may change as they go (disk/bmap.cpp hash_patched_images): a lane keeps
// its own state, length and incomplete block. Where the CPU lacks the extensions (or outside x86-64),
// a lane is an OpenSSL hash and a pair update is two updates one after the other.
#include <array>
#include <cstdint>
#include <optional>
#include <span>

#include "core/sha256.hpp"

namespace aggrik8s {

class Sha256Lane {
 public:
  enum class Implementation { automatic, portable };
  explicit Sha256Lane(Implementation implementation = Implementation::automatic);

  // Whether automatic uses the SHA-extension code on this CPU.
  static bool accelerated();

  void update(std::span<const std::uint8_t> data);
  // Advances both lanes by the same number of bytes, their blocks interleaved where both are
  // accelerated (throws std::invalid_argument when the sizes differ).
  static void update_pair(Sha256Lane& first, std::span<const std::uint8_t> first_data, Sha256Lane& second,
                          std::span<const std::uint8_t> second_data);
  // The digest of everything fed since construction or the last finish; the lane then starts again.
  Sha256Digest finish();

 private:
  // Feeds `data` to the incomplete block, compressing it once full; returns what is left of data.
  std::span<const std::uint8_t> fill_pending(std::span<const std::uint8_t> data);

  bool accelerated_;
  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> pending_{};
  std::size_t pending_bytes_ = 0;
  std::uint64_t length_ = 0;
  std::optional<Sha256> portable_;
};

}  // namespace aggrik8s
