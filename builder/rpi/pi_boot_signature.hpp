#pragma once
// boot.sig for Raspberry Pi 5 HTTP boot (and secure boot's signed boot.img): the file the bootloader
// checks before it uses a downloaded boot.img. Written byte for byte as raspberrypi/rpi-eeprom's
// `rpi-eeprom-digest -k private.pem -i boot.img -o boot.sig` writes it:
//
//   <sha256 of boot.img, 64 lowercase hex>\n
//   ts: <unix seconds>\n
//   rsa2048: <RSA-2048 PKCS#1 v1.5 SHA-256 signature of boot.img, 512 lowercase hex>\n
//
// (the script may add a `target-soc: 2712` line before rsa2048 when given -c; we never write one but
// accept it when parsing). PKCS#1 v1.5 is deterministic, so the same bytes, key and timestamp give the
// same boot.sig: builds stay reproducible with SOURCE_DATE_EPOCH as the timestamp.
//
// The bootloader only takes 2048-bit RSA keys, so every loader here refuses anything else, naming the
// file and the size it found, rather than producing a signature the Pi would reject at boot.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/types.h>

#include "core/secret.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {

inline constexpr int pi_boot_rsa_bits = 2048;
inline constexpr std::size_t pi_boot_signature_bytes = pi_boot_rsa_bits / 8;

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* key) const;
};
using EvpPkey = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;

// A public key the bootloader can hold: RSA, 2048 bits.
class RsaPublicKey {
 public:
  explicit RsaPublicKey(EvpPkey key) : key_(std::move(key)) {}
  EVP_PKEY* get() const { return key_.get(); }
  // PEM "BEGIN PUBLIC KEY" (SubjectPublicKeyInfo), what `openssl rsa -pubout` and rpi-eeprom-config -p take.
  std::string pem() const;
  // sha256 of the DER SubjectPublicKeyInfo: `openssl pkey -pubin -in K -outform DER | sha256sum`.
  Sha256Digest fingerprint() const;

 private:
  EvpPkey key_;
};

// The signing key. Never printed; its PEM only leaves as a Secret (for keygen to write at 0600).
class RsaPrivateKey {
 public:
  explicit RsaPrivateKey(EvpPkey key) : key_(std::move(key)) {}
  EVP_PKEY* get() const { return key_.get(); }
  RsaPublicKey public_key() const;
  Secret pem() const;  // PKCS#8 "BEGIN PRIVATE KEY", unencrypted

 private:
  EvpPkey key_;
};

// A fresh RSA-2048 key pair (e = 65537) from OpenSSL's CSPRNG.
RsaPrivateKey generate_pi_boot_key();

// PEM private key (PKCS#8 or PKCS#1 "RSA PRIVATE KEY"). `where` names its origin for errors
// ("file /etc/aggrik8s/boot.pem"); the key material never appears in a message. Refuses encrypted keys
// (no passphrase prompt in a build), non-RSA keys and RSA keys other than 2048 bits.
RsaPrivateKey load_rsa_private_key(const Secret& pem, const std::string& where);
// PEM public key (SubjectPublicKeyInfo or PKCS#1 "RSA PUBLIC KEY"); refuses a private key given in its
// place and anything but RSA-2048.
RsaPublicKey load_rsa_public_key(std::string_view pem, const std::string& where);
RsaPublicKey load_rsa_public_key_file(const std::filesystem::path& path);

// The raw signature: RSA PKCS#1 v1.5 over SHA-256 of data (`openssl dgst -sha256 -sign`).
std::vector<std::uint8_t> rsa_sha256_sign(std::span<const std::uint8_t> data, const RsaPrivateKey& key);

// boot.sig's full text for boot_img, as rpi-eeprom-digest writes it (see the top of this file).
std::string boot_signature_text(std::span<const std::uint8_t> boot_img, const RsaPrivateKey& key, std::int64_t timestamp);

struct BootSignature {
  Sha256Digest sha256;
  std::int64_t timestamp = 0;
  std::optional<std::string> target_soc;  // "target-soc:" line, when present
  std::vector<std::uint8_t> rsa2048;      // the decoded signature; empty when the file has no rsa2048 line
};

// Parses boot.sig text; throws Error naming `where`, the line number and what was expected (a short or
// non-hex digest, a missing ts:, a signature that is not 512 hex digits, an unknown line).
BootSignature parse_boot_signature(std::string_view text, const std::string& where);

struct BootSignatureCheck {
  bool ok = false;
  std::string reason;  // why not, when !ok: "boot.img's sha256 is X but boot.sig names Y", ...
};

// What the bootloader checks: boot.img's sha256 matches the first line and the rsa2048 signature
// verifies with the public key (over boot.img's bytes).
BootSignatureCheck verify_boot_signature(std::span<const std::uint8_t> boot_img, const BootSignature& signature,
                                         const RsaPublicKey& key);

}  // namespace aggrik8s::builder
