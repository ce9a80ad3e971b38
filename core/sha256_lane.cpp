#include "core/sha256_lane.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define AGGRIK8S_SHA_EXTENSIONS 1
#endif

namespace aggrik8s {

namespace {

constexpr std::array<std::uint32_t, 8> initial_state = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#if AGGRIK8S_SHA_EXTENSIONS
alignas(16) constexpr std::uint32_t round_constants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define AGGRIK8S_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

// One chain in the registers the SHA instructions work on: the state as ABEF and CDGH, and the
// last four groups of four message words.
struct Lane {
  __m128i abef, cdgh;
  __m128i w[4];
};

AGGRIK8S_SHA_TARGET inline void load_state(Lane& lane, const std::uint32_t* state) {
  const __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(state)), 0xB1);
  const __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4)), 0x1B);
  lane.abef = _mm_alignr_epi8(dcba, efgh, 8);
  lane.cdgh = _mm_blend_epi16(efgh, dcba, 0xF0);
}

AGGRIK8S_SHA_TARGET inline void store_state(const Lane& lane, std::uint32_t* state) {
  const __m128i feba = _mm_shuffle_epi32(lane.abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(lane.cdgh, 0xB1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), _mm_blend_epi16(feba, dchg, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), _mm_alignr_epi8(dchg, feba, 8));
}

// Four rounds with message words `w` (group `group` of 16).
AGGRIK8S_SHA_TARGET inline void four_rounds(Lane& lane, __m128i w, std::size_t group) {
  const __m128i wk = _mm_add_epi32(w, _mm_load_si128(reinterpret_cast<const __m128i*>(&round_constants[4 * group])));
  lane.cdgh = _mm_sha256rnds2_epu32(lane.cdgh, lane.abef, wk);
  lane.abef = _mm_sha256rnds2_epu32(lane.abef, lane.cdgh, _mm_shuffle_epi32(wk, 0x0E));
}

// The next group of message words from the four before it (oldest first).
AGGRIK8S_SHA_TARGET inline __m128i schedule(__m128i w4, __m128i w3, __m128i w2, __m128i w1) {
  return _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(w4, w3), _mm_alignr_epi8(w1, w2, 4)), w1);
}

AGGRIK8S_SHA_TARGET inline __m128i load_words(const std::uint8_t* bytes) {
  const __m128i big_endian = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  return _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)), big_endian);
}

// `blocks` 64-byte blocks of each of N messages into its state. With two, the chains' instructions
// go side by side (each step for both before the next), which is what fills the round instruction's
// waits; the loops over lanes and groups are unrolled, so the lanes stay in registers.
template <std::size_t N>
AGGRIK8S_SHA_TARGET void compress_lanes(const std::array<std::uint32_t*, N>& states,
                                        std::array<const std::uint8_t*, N> data, std::size_t blocks) {
  std::array<Lane, N> lanes;
  for (std::size_t i = 0; i < N; ++i) load_state(lanes[i], states[i]);
  for (std::size_t block = 0; block < blocks; ++block) {
    std::array<Lane, N> before = lanes;
#pragma GCC unroll 4
    for (std::size_t group = 0; group < 4; ++group) {
#pragma GCC unroll 2
      for (std::size_t i = 0; i < N; ++i) lanes[i].w[group] = load_words(data[i] + 16 * group);
#pragma GCC unroll 2
      for (std::size_t i = 0; i < N; ++i) four_rounds(lanes[i], lanes[i].w[group], group);
    }
#pragma GCC unroll 12
    for (std::size_t group = 4; group < 16; ++group) {
      const std::size_t k = group % 4;
#pragma GCC unroll 2
      for (std::size_t i = 0; i < N; ++i) {
        auto& w = lanes[i].w;
        w[k] = schedule(w[k], w[(k + 1) % 4], w[(k + 2) % 4], w[(k + 3) % 4]);
      }
#pragma GCC unroll 2
      for (std::size_t i = 0; i < N; ++i) four_rounds(lanes[i], lanes[i].w[k], group);
    }
#pragma GCC unroll 2
    for (std::size_t i = 0; i < N; ++i) {
      lanes[i].abef = _mm_add_epi32(lanes[i].abef, before[i].abef);
      lanes[i].cdgh = _mm_add_epi32(lanes[i].cdgh, before[i].cdgh);
      data[i] += 64;
    }
  }
  for (std::size_t i = 0; i < N; ++i) store_state(lanes[i], states[i]);
}

bool cpu_has_sha_extensions() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool ssse3 = (ecx & bit_SSSE3) != 0;
  const bool sse41 = (ecx & bit_SSE4_1) != 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return ssse3 && sse41 && (ebx & bit_SHA) != 0;
}
#endif

}  // namespace

bool Sha256Lane::accelerated() {
#if AGGRIK8S_SHA_EXTENSIONS
  static const bool has = cpu_has_sha_extensions();
  return has;
#else
  return false;
#endif
}

Sha256Lane::Sha256Lane(Implementation implementation)
    : accelerated_(implementation == Implementation::automatic && accelerated()), state_(initial_state) {
  if (!accelerated_) portable_.emplace();
}

std::span<const std::uint8_t> Sha256Lane::fill_pending(std::span<const std::uint8_t> data) {
  if (pending_bytes_ == 0) return data;
  const std::size_t n = std::min(data.size(), pending_.size() - pending_bytes_);
  std::memcpy(pending_.data() + pending_bytes_, data.data(), n);
  pending_bytes_ += n;
  length_ += n;
#if AGGRIK8S_SHA_EXTENSIONS
  if (pending_bytes_ == pending_.size()) {
    compress_lanes<1>({state_.data()}, {pending_.data()}, 1);
    pending_bytes_ = 0;
  }
#endif
  return data.subspan(n);
}

void Sha256Lane::update(std::span<const std::uint8_t> data) {
  if (!accelerated_) return portable_->update(data);
#if AGGRIK8S_SHA_EXTENSIONS
  data = fill_pending(data);
  if (pending_bytes_ != 0) return;  // data did not complete the block
  const std::size_t blocks = data.size() / 64;
  compress_lanes<1>({state_.data()}, {data.data()}, blocks);
  const std::size_t tail = data.size() - blocks * 64;
  std::memcpy(pending_.data(), data.data() + blocks * 64, tail);
  pending_bytes_ = tail;
  length_ += data.size();
#endif
}

void Sha256Lane::update_pair(Sha256Lane& first, std::span<const std::uint8_t> first_data, Sha256Lane& second,
                             std::span<const std::uint8_t> second_data) {
  if (first_data.size() != second_data.size()) {
    throw std::invalid_argument("Sha256Lane::update_pair: the two messages must grow alike");
  }
#if AGGRIK8S_SHA_EXTENSIONS
  if (first.accelerated_ && second.accelerated_) {
    // Each lane's incomplete block first (lanes that went on alone may be at different points in a
    // block), then the whole blocks both have interleaved, then the rest of each alone.
    first_data = first.fill_pending(first_data);
    second_data = second.fill_pending(second_data);
    if (first.pending_bytes_ == 0 && second.pending_bytes_ == 0) {
      const std::size_t blocks = std::min(first_data.size(), second_data.size()) / 64;
      compress_lanes<2>({first.state_.data(), second.state_.data()}, {first_data.data(), second_data.data()}, blocks);
      first.length_ += blocks * 64;
      second.length_ += blocks * 64;
      first_data = first_data.subspan(blocks * 64);
      second_data = second_data.subspan(blocks * 64);
    }
  }
#endif
  first.update(first_data);
  second.update(second_data);
}

Sha256Digest Sha256Lane::finish() {
  if (!accelerated_) {
    Sha256Digest digest = portable_->finish();
    portable_.emplace();
    return digest;
  }
  // FIPS 180-4 padding: 0x80, zeros to 56 mod 64, the length in bits.
  std::array<std::uint8_t, 128> padding{};
  padding[0] = 0x80;
  const std::size_t zeros_to = pending_bytes_ < 56 ? 56 : 120;
  const std::uint64_t bits = length_ * 8;
  const std::size_t pad_length = zeros_to - pending_bytes_ + 8;
  for (std::size_t i = 0; i < 8; ++i) padding[pad_length - 1 - i] = static_cast<std::uint8_t>(bits >> (8 * i));
  update(std::span(padding.data(), pad_length));
  std::array<std::uint8_t, 32> bytes{};
  for (std::size_t word = 0; word < 8; ++word) {
    for (std::size_t i = 0; i < 4; ++i) bytes[4 * word + i] = static_cast<std::uint8_t>(state_[word] >> (24 - 8 * i));
  }
  state_ = initial_state;
  pending_bytes_ = 0;
  length_ = 0;
  return Sha256Digest(bytes);
}

}  // namespace aggrik8s
