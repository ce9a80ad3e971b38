#include "core/sha256.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/permission_detail.hpp"

namespace aggrik8s {

struct Sha256::State {
  EVP_MD_CTX* ctx = nullptr;
  ~State() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
  state_->ctx = EVP_MD_CTX_new();
  if (state_->ctx == nullptr || EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr) != 1) {
    throw Error("sha256: OpenSSL could not initialise a digest context");
  }
}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::update(std::span<const std::uint8_t> data) {
  EVP_DigestUpdate(state_->ctx, data.data(), data.size());
}
void Sha256::update(std::string_view data) { EVP_DigestUpdate(state_->ctx, data.data(), data.size()); }

Sha256 Sha256::copy() const {
  Sha256 twin;
  if (EVP_MD_CTX_copy_ex(twin.state_->ctx, state_->ctx) != 1) throw Error("sha256: OpenSSL could not copy a digest context");
  return twin;
}

Sha256Digest Sha256::finish() {
  std::array<std::uint8_t, 32> out{};
  unsigned int length = 0;
  EVP_DigestFinal_ex(state_->ctx, out.data(), &length);
  // Leave the object reusable: a finished context is re-initialised for the next message.
  EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr);
  return Sha256Digest(out);
}

Sha256Digest Sha256::of(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.finish();
}
Sha256Digest Sha256::of(std::span<const std::uint8_t> data) {
  Sha256 h;
  h.update(data);
  return h.finish();
}

Sha256Digest Sha256::of_file(const std::filesystem::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_file_error("cannot open " + path.string(), path, errno);
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<std::uint8_t> buffer(1 << 20);
  Sha256 h;
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_system_error("cannot read " + path.string(), errno);
    }
    if (n == 0) break;
    h.update(std::span(buffer.data(), static_cast<std::size_t>(n)));
  }
  return h.finish();
}

std::optional<Sha256Digest> Sha256Digest::parse(std::string_view text) {
  if (text.size() >= 7) {
    std::string prefix(text.substr(0, 7));
    for (auto& c : prefix) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (prefix == "sha256:") text.remove_prefix(7);  // "sha256:" or "SHA256:", as tools print it
  }
  if (text.size() != 64) return std::nullopt;
  std::array<std::uint8_t, 32> bytes{};
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < 32; ++i) {
    int hi = nibble(text[2 * i]);
    int lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    bytes[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return Sha256Digest(bytes);
}

std::string Sha256Digest::hex() const { return to_hex(bytes_); }

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

}  // namespace aggrik8s
