#pragma once
// SHA-256 for artifact verification, bmap ranges and manifests (OpenSSL's implementation: it uses the
// CPU's SHA extensions where present, which matters when hashing multi-GiB images).
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace aggrik8s {

// A parsed, validated digest. Text form is 64 lowercase hex characters.
class Sha256Digest {
 public:
  Sha256Digest() = default;
  explicit Sha256Digest(const std::array<std::uint8_t, 32>& bytes) : bytes_(bytes) {}
  // Accepts 64 hex characters, either case, optionally prefixed "sha256:". nullopt otherwise.
  static std::optional<Sha256Digest> parse(std::string_view text);
  std::string hex() const;
  const std::array<std::uint8_t, 32>& bytes() const { return bytes_; }
  friend bool operator==(const Sha256Digest&, const Sha256Digest&) = default;

 private:
  std::array<std::uint8_t, 32> bytes_{};
};

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void update(std::span<const std::uint8_t> data);
  void update(std::string_view data);
  Sha256Digest finish();
  // A second hash in this one's state: what was hashed so far is shared, each goes on alone (a
  // message's common prefix hashed once for many messages that differ only after it).
  Sha256 copy() const;

  static Sha256Digest of(std::string_view data);
  static Sha256Digest of(std::span<const std::uint8_t> data);
  // Streams the file; throws Error naming the path on read failure.
  static Sha256Digest of_file(const std::filesystem::path& path);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string to_hex(std::span<const std::uint8_t> bytes);

}  // namespace aggrik8s
