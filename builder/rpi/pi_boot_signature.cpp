#include "builder/rpi/pi_boot_signature.hpp"

#include <openssl/bio.h>
#include <openssl/decoder.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace aggrik8s::builder {

void EvpPkeyDeleter::operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }

namespace {

struct DecoderDeleter {
  void operator()(OSSL_DECODER_CTX* ctx) const { OSSL_DECODER_CTX_free(ctx); }
};
struct EncoderDeleter {
  void operator()(OSSL_ENCODER_CTX* ctx) const { OSSL_ENCODER_CTX_free(ctx); }
};
struct MdContextDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdContext = std::unique_ptr<EVP_MD_CTX, MdContextDeleter>;

// OpenSSL's queued error text, for the rare failures that are OpenSSL's own (out of memory, ...).
std::string openssl_error() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no detail from OpenSSL";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

// A decoder that finds no passphrase must fail, never prompt on the terminal in the middle of a build.
int refuse_passphrase(char*, size_t, size_t*, const OSSL_PARAM[], void*) { return 0; }

EvpPkey decode_pem(std::string_view pem, int selection) {
  EVP_PKEY* key = nullptr;
  std::unique_ptr<OSSL_DECODER_CTX, DecoderDeleter> ctx(
      OSSL_DECODER_CTX_new_for_pkey(&key, "PEM", nullptr, nullptr, selection, nullptr, nullptr));
  if (!ctx) throw Error("OpenSSL cannot create a key decoder: " + openssl_error());
  OSSL_DECODER_CTX_set_passphrase_cb(ctx.get(), refuse_passphrase, nullptr);
  const auto* data = reinterpret_cast<const unsigned char*>(pem.data());
  std::size_t length = pem.size();
  bool decoded = OSSL_DECODER_from_data(ctx.get(), &data, &length) == 1;
  ERR_clear_error();
  if (!decoded) return nullptr;
  return EvpPkey(key);
}

// The bootloader verifies with RSA-2048 only; anything else would sign fine and fail at the Pi.
void require_rsa_2048(EVP_PKEY* key, const std::string& where) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
    throw Error(where + ": the Pi 5 bootloader only takes RSA keys; this is a " + EVP_PKEY_get0_type_name(key) +
                " key (create one with 'aggrik8s-image keygen')");
  }
  int bits = EVP_PKEY_get_bits(key);
  if (bits != pi_boot_rsa_bits) {
    throw Error(where + ": the Pi 5 bootloader only takes 2048-bit RSA keys; this one is " + std::to_string(bits) +
                " bits (create one with 'aggrik8s-image keygen')");
  }
}

// `label` is the PEM block's kind ("PRIVATE KEY", "PUBLIC KEY"); its PKCS#1 "RSA ..." form matches too.
EvpPkey decode_rsa_2048_pem(std::string_view pem, int selection, const std::string& label, const std::string& where) {
  std::string lower = label == "PRIVATE KEY" ? "private key" : "public key";
  if (pem.find(label + "-----") == std::string_view::npos) {
    throw Error(where + ": not a PEM " + lower + " (expected a '-----BEGIN " + label + "-----' or '-----BEGIN RSA " +
                label + "-----' block)");
  }
  EvpPkey key = decode_pem(pem, selection);
  if (!key) throw Error(where + ": the PEM " + lower + " cannot be decoded (damaged or not a key OpenSSL knows)");
  require_rsa_2048(key.get(), where);
  return key;
}

std::string encode(EVP_PKEY* key, int selection, const char* structure) {
  std::unique_ptr<OSSL_ENCODER_CTX, EncoderDeleter> ctx(
      OSSL_ENCODER_CTX_new_for_pkey(key, selection, "PEM", structure, nullptr));
  unsigned char* data = nullptr;
  std::size_t length = 0;
  if (!ctx || OSSL_ENCODER_to_data(ctx.get(), &data, &length) != 1) {
    throw Error(std::string("OpenSSL cannot encode the key as PEM: ") + openssl_error());
  }
  std::string out(reinterpret_cast<const char*>(data), length);
  OPENSSL_clear_free(data, length);
  return out;
}

bool is_lower_hex(std::string_view text) {
  return text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::vector<std::uint8_t> decode_hex(std::string_view hex) {
  std::vector<std::uint8_t> bytes(hex.size() / 2);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, bytes[i], 16);
  }
  return bytes;
}

}  // namespace

RsaPublicKey RsaPrivateKey::public_key() const {
  // Through DER, so the result holds the public half only.
  std::string pem = encode(key_.get(), EVP_PKEY_PUBLIC_KEY, "SubjectPublicKeyInfo");
  EvpPkey key = decode_pem(pem, EVP_PKEY_PUBLIC_KEY);
  if (!key) throw Error("OpenSSL cannot read back the public half of the key");
  return RsaPublicKey(std::move(key));
}

Secret RsaPrivateKey::pem() const { return Secret(encode(key_.get(), EVP_PKEY_KEYPAIR, "PrivateKeyInfo")); }

std::string RsaPublicKey::pem() const { return encode(key_.get(), EVP_PKEY_PUBLIC_KEY, "SubjectPublicKeyInfo"); }

Sha256Digest RsaPublicKey::fingerprint() const {
  unsigned char* der = nullptr;
  int length = i2d_PUBKEY(key_.get(), &der);
  if (length <= 0) throw Error("OpenSSL cannot encode the public key as DER: " + openssl_error());
  Sha256Digest digest = Sha256::of(std::span<const std::uint8_t>(der, static_cast<std::size_t>(length)));
  OPENSSL_free(der);
  return digest;
}

RsaPrivateKey generate_pi_boot_key() {
  EVP_PKEY* key = EVP_RSA_gen(static_cast<unsigned>(pi_boot_rsa_bits));
  if (key == nullptr) throw Error("OpenSSL cannot generate an RSA-2048 key: " + openssl_error());
  return RsaPrivateKey(EvpPkey(key));
}

RsaPrivateKey load_rsa_private_key(const Secret& pem, const std::string& where) {
  const std::string& text = pem.reveal();
  if (text.find("ENCRYPTED") != std::string::npos) {
    throw Error(where + ": the private key is encrypted; the build signs unattended, so it needs an unencrypted "
                        "key kept in a 0600 file (openssl pkey -in KEY -out PLAIN.pem)");
  }
  return RsaPrivateKey(decode_rsa_2048_pem(text, EVP_PKEY_KEYPAIR, "PRIVATE KEY", where));
}

RsaPublicKey load_rsa_public_key(std::string_view pem, const std::string& where) {
  if (pem.find("PRIVATE KEY-----") != std::string_view::npos) {
    throw Error(where + ": this is a private key; give the public key (the .pub.pem file keygen wrote, or "
                        "'openssl pkey -in KEY -pubout')");
  }
  return RsaPublicKey(decode_rsa_2048_pem(pem, EVP_PKEY_PUBLIC_KEY, "PUBLIC KEY", where));
}

RsaPublicKey load_rsa_public_key_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open the public key file");
  std::ostringstream text;
  text << in.rdbuf();
  return load_rsa_public_key(text.str(), path.string());
}

std::vector<std::uint8_t> rsa_sha256_sign(std::span<const std::uint8_t> data, const RsaPrivateKey& key) {
  MdContext ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pkey_ctx = nullptr;  // owned by ctx
  std::size_t length = 0;
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), &pkey_ctx, "SHA256", nullptr, nullptr, key.get(), nullptr) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PADDING) != 1 ||
      EVP_DigestSignUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestSignFinal(ctx.get(), nullptr, &length) != 1) {
    throw Error("RSA signing failed: " + openssl_error());
  }
  std::vector<std::uint8_t> signature(length);
  if (EVP_DigestSignFinal(ctx.get(), signature.data(), &length) != 1) throw Error("RSA signing failed: " + openssl_error());
  signature.resize(length);
  return signature;
}

std::string boot_signature_text(std::span<const std::uint8_t> boot_img, const RsaPrivateKey& key, std::int64_t timestamp) {
  // The same three lines, each ending in "\n", as `sha256sum | awk`, `echo "ts: ..."` and
  // `echo "rsa2048: $(xxd -c 4096 -p)"` produce in rpi-eeprom-digest.
  return Sha256::of(boot_img).hex() + "\n" + "ts: " + std::to_string(timestamp) + "\n" + "rsa2048: " +
         to_hex(rsa_sha256_sign(boot_img, key)) + "\n";
}

BootSignature parse_boot_signature(std::string_view text, const std::string& where) {
  BootSignature parsed;
  bool has_ts = false;
  std::size_t line_number = 0;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    std::string_view line = text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    start = end == std::string_view::npos ? text.size() : end + 1;
    ++line_number;
    std::string at = where + ":" + std::to_string(line_number) + ": ";
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_number == 1) {
      auto digest = line.size() == 64 && is_lower_hex(line) ? Sha256Digest::parse(line) : std::nullopt;
      if (!digest) {
        throw Error(at + "expected the sha256 of boot.img (64 lowercase hex digits), found '" +
                    std::string(line.substr(0, 80)) + "'");
      }
      parsed.sha256 = *digest;
    } else if (line.starts_with("ts: ")) {
      std::string_view value = line.substr(4);
      auto [end_of_number, error] = std::from_chars(value.data(), value.data() + value.size(), parsed.timestamp);
      if (value.empty() || error != std::errc() || end_of_number != value.data() + value.size() || parsed.timestamp < 0) {
        throw Error(at + "expected 'ts: <unix seconds>', found '" + std::string(line.substr(0, 80)) + "'");
      }
      has_ts = true;
    } else if (line.starts_with("target-soc: ")) {
      parsed.target_soc = std::string(line.substr(12));
    } else if (line.starts_with("rsa2048: ")) {
      std::string_view hex = line.substr(9);
      if (hex.size() != 2 * pi_boot_signature_bytes || !is_lower_hex(hex)) {
        throw Error(at + "expected 'rsa2048: ' and " + std::to_string(2 * pi_boot_signature_bytes) +
                    " lowercase hex digits (an RSA-2048 signature), found " + std::to_string(hex.size()) +
                    " characters" + (is_lower_hex(hex) ? "" : " that are not all lowercase hex"));
      }
      parsed.rsa2048 = decode_hex(hex);
    } else if (!line.empty()) {
      throw Error(at + "unexpected line '" + std::string(line.substr(0, 80)) +
                  "' (boot.sig has a sha256 line, then 'ts:', optional 'target-soc:', and 'rsa2048:')");
    }
  }
  if (line_number == 0) throw Error(where + ": empty, expected the sha256 of boot.img on line 1");
  if (!has_ts) throw Error(where + ": no 'ts: <unix seconds>' line (rpi-eeprom-digest always writes one)");
  return parsed;
}

BootSignatureCheck verify_boot_signature(std::span<const std::uint8_t> boot_img, const BootSignature& signature,
                                         const RsaPublicKey& key) {
  Sha256Digest actual = Sha256::of(boot_img);
  if (actual != signature.sha256) {
    return {false, "boot.img's sha256 is " + actual.hex() + " but boot.sig names " + signature.sha256.hex() +
                       " (boot.img changed after signing, or the signature is for another image)"};
  }
  if (signature.rsa2048.empty()) return {false, "boot.sig has no rsa2048 line: the bootloader refuses unsigned HTTP downloads"};
  if (signature.rsa2048.size() != pi_boot_signature_bytes) {
    return {false, "the rsa2048 signature is " + std::to_string(signature.rsa2048.size()) + " bytes, expected " +
                       std::to_string(pi_boot_signature_bytes)};
  }
  if (EVP_PKEY_get_bits(key.get()) != pi_boot_rsa_bits) {
    return {false, "the public key is " + std::to_string(EVP_PKEY_get_bits(key.get())) +
                       " bits; the Pi 5 bootloader only takes 2048-bit RSA keys"};
  }
  MdContext ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pkey_ctx = nullptr;  // owned by ctx
  if (!ctx || EVP_DigestVerifyInit_ex(ctx.get(), &pkey_ctx, "SHA256", nullptr, nullptr, key.get(), nullptr) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PADDING) != 1 ||
      EVP_DigestVerifyUpdate(ctx.get(), boot_img.data(), boot_img.size()) != 1) {
    throw Error("RSA verification could not start: " + openssl_error());
  }
  int verdict = EVP_DigestVerifyFinal(ctx.get(), signature.rsa2048.data(), signature.rsa2048.size());
  ERR_clear_error();
  if (verdict != 1) {
    return {false, "the rsa2048 signature does not verify with public key sha256:" + key.fingerprint().hex() +
                       " (signed with another key, or the signature was altered)"};
  }
  return {true, ""};
}

}  // namespace aggrik8s::builder
