#include "netboot/service/openssh_ed25519_key.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::netboot {

namespace {

constexpr std::string_view key_type = "ssh-ed25519";
constexpr std::size_t seed_size = 32;

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

// A buffer that is wiped when it goes away: the private section holds the seed.
class WipedBytes {
 public:
  WipedBytes() = default;
  WipedBytes(const WipedBytes&) = delete;
  WipedBytes& operator=(const WipedBytes&) = delete;
  ~WipedBytes() {
    if (!bytes_.empty()) OPENSSL_cleanse(bytes_.data(), bytes_.size());
  }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

void append_uint32(std::string& out, std::uint32_t value) {
  out.push_back(static_cast<char>(value >> 24));
  out.push_back(static_cast<char>(value >> 16));
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value));
}

// The SSH wire "string": uint32 length, then the bytes.
void append_string(std::string& out, std::string_view value) {
  append_uint32(out, static_cast<std::uint32_t>(value.size()));
  out.append(value);
}

std::string_view as_chars(const Ed25519PublicKey& key) {
  return {reinterpret_cast<const char*>(key.data()), key.size()};
}

std::string public_key_blob(const Ed25519PublicKey& public_key) {
  std::string blob;
  append_string(blob, key_type);
  append_string(blob, as_chars(public_key));
  return blob;
}

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(written));
  return out;
}

void check_comment(std::string_view comment) {
  if (comment.find_first_of("\r\n") != std::string_view::npos) {
    throw Error("SSH key comment must be one line, got one with a line break");
  }
}

void check_seed(std::string_view seed) {
  if (seed.size() != seed_size) {
    throw Error("Ed25519 private key must be " + std::to_string(seed_size) + " bytes, got " +
                std::to_string(seed.size()));
  }
}

[[noreturn]] void throw_openssl(const std::string& what) { throw Error("OpenSSL failed to " + what); }

}  // namespace

Ed25519KeyPair generate_ed25519_key_pair() {
  EVP_PKEY_CTX* context = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  if (context == nullptr) throw_openssl("create an Ed25519 key context");
  EVP_PKEY* raw = nullptr;
  bool made = EVP_PKEY_keygen_init(context) == 1 && EVP_PKEY_keygen(context, &raw) == 1;
  EVP_PKEY_CTX_free(context);
  if (!made) throw_openssl("generate an Ed25519 key");
  Pkey key(raw);

  WipedBytes seed;
  seed.bytes().resize(seed_size);
  std::size_t seed_length = seed_size;
  Ed25519PublicKey public_key{};
  std::size_t public_length = public_key.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), reinterpret_cast<unsigned char*>(seed.bytes().data()), &seed_length) !=
          1 ||
      EVP_PKEY_get_raw_public_key(key.get(), public_key.data(), &public_length) != 1 || seed_length != seed_size ||
      public_length != public_key.size()) {
    throw_openssl("export an Ed25519 key");
  }
  return Ed25519KeyPair{Secret(seed.bytes()), public_key};
}

Ed25519PublicKey ed25519_public_key_of(std::string_view seed) {
  check_seed(seed);
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed.data()),
                                        seed.size()));
  if (!key) throw_openssl("load an Ed25519 private key");
  Ed25519PublicKey public_key{};
  std::size_t length = public_key.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), public_key.data(), &length) != 1 || length != public_key.size()) {
    throw_openssl("derive an Ed25519 public key");
  }
  return public_key;
}

std::string openssh_ed25519_public_key_base64(const Ed25519PublicKey& public_key) {
  return base64(public_key_blob(public_key));
}

std::string openssh_ed25519_public_key_line(const Ed25519PublicKey& public_key, std::string_view comment) {
  check_comment(comment);
  std::string line = std::string(key_type) + " " + openssh_ed25519_public_key_base64(public_key);
  if (!comment.empty()) line += " " + std::string(comment);
  return line + "\n";
}

std::string openssh_ed25519_private_key_file(std::string_view seed, const Ed25519PublicKey& public_key,
                                             std::string_view comment) {
  check_seed(seed);
  check_comment(comment);
  std::uint32_t checkint = (std::uint32_t{public_key[0]} << 24) | (std::uint32_t{public_key[1]} << 16) |
                           (std::uint32_t{public_key[2]} << 8) | std::uint32_t{public_key[3]};
  WipedBytes private_section;
  std::string& section = private_section.bytes();
  append_uint32(section, checkint);
  append_uint32(section, checkint);
  append_string(section, key_type);
  append_string(section, as_chars(public_key));
  append_uint32(section, static_cast<std::uint32_t>(seed.size() + public_key.size()));
  section.append(seed);
  section.append(as_chars(public_key));
  append_string(section, comment);
  for (char pad = 1; section.size() % 8 != 0; ++pad) section.push_back(pad);

  WipedBytes container;
  std::string& binary = container.bytes();
  binary.append("openssh-key-v1", 15);  // with its terminating NUL, part of the magic
  append_string(binary, "none");
  append_string(binary, "none");
  append_string(binary, "");
  append_uint32(binary, 1);
  append_string(binary, public_key_blob(public_key));
  append_string(binary, section);

  WipedBytes encoded;
  encoded.bytes() = base64(binary);
  std::string file = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  for (std::size_t at = 0; at < encoded.bytes().size(); at += 70) {
    file.append(encoded.bytes(), at, 70);
    file.push_back('\n');
  }
  file += "-----END OPENSSH PRIVATE KEY-----\n";
  return file;
}

std::string openssh_fingerprint_sha256(const Ed25519PublicKey& public_key) {
  const auto& digest = Sha256::of(public_key_blob(public_key)).bytes();
  std::string text = base64(std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
  while (!text.empty() && text.back() == '=') text.pop_back();
  return "SHA256:" + text;
}

}  // namespace aggrik8s::netboot
