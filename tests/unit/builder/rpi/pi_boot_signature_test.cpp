// boot.sig for Pi 5 HTTP boot: the text rpi-eeprom-digest writes, parsed back and verified as the
// bootloader does. Keys are generated in-process per run (no committed private keys); the cross-check
// against the openssl and rpi-eeprom-digest command lines is in tests/integration/builder/rpi.
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <catch2/catch.hpp>
#include <functional>
#include <string>
#include <vector>

#include "builder/rpi/pi_boot_signature.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

// RSA key generation costs up to a second on a busy machine: one key per run, shared.
const RsaPrivateKey& test_key() {
  static const RsaPrivateKey key = generate_pi_boot_key();
  return key;
}
const RsaPrivateKey& other_key() {
  static const RsaPrivateKey key = generate_pi_boot_key();
  return key;
}

std::vector<std::uint8_t> sample_boot_img() {
  std::vector<std::uint8_t> bytes(70000);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 13);
  return bytes;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t end = text.find('\n'); end != std::string::npos; end = text.find('\n', start)) {
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("boot.sig has rpi-eeprom-digest's three lines and is reproducible", "[pi_boot_signature]") {
  auto image = sample_boot_img();
  std::string text = boot_signature_text(image, test_key(), 1700000000);
  REQUIRE(text.back() == '\n');
  auto lines = lines_of(text);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0] == Sha256::of(std::span<const std::uint8_t>(image)).hex());
  CHECK(lines[1] == "ts: 1700000000");
  REQUIRE(lines[2].starts_with("rsa2048: "));
  CHECK(lines[2].size() == 9 + 512);
  CHECK(lines[2].find_first_not_of("0123456789abcdef", 9) == std::string::npos);
  // PKCS#1 v1.5 has no random salt: same input, same file.
  CHECK(boot_signature_text(image, test_key(), 1700000000) == text);
  CHECK(boot_signature_text(image, test_key(), 1700000001) != text);
}

TEST_CASE("a boot.sig verifies against its boot.img and key, and nothing else", "[pi_boot_signature]") {
  auto image = sample_boot_img();
  auto signature = parse_boot_signature(boot_signature_text(image, test_key(), 42), "boot.sig");
  CHECK(signature.timestamp == 42);
  CHECK(signature.rsa2048.size() == 256);
  CHECK_FALSE(signature.target_soc);
  auto good = verify_boot_signature(image, signature, test_key().public_key());
  INFO(good.reason);
  CHECK(good.ok);

  SECTION("tampered boot.img") {
    image[1234] ^= 1;
    auto check = verify_boot_signature(image, signature, test_key().public_key());
    CHECK_FALSE(check.ok);
    CHECK(check.reason.find("sha256") != std::string::npos);
  }
  SECTION("wrong public key") {
    auto check = verify_boot_signature(image, signature, other_key().public_key());
    CHECK_FALSE(check.ok);
    CHECK(check.reason.find("does not verify with public key sha256:" + other_key().public_key().fingerprint().hex()) !=
          std::string::npos);
  }
  SECTION("altered signature with a matching sha256 line") {
    signature.rsa2048[100] ^= 0x40;
    auto check = verify_boot_signature(image, signature, test_key().public_key());
    CHECK_FALSE(check.ok);
    CHECK(check.reason.find("does not verify") != std::string::npos);
  }
  SECTION("no rsa2048 line (a plain rpi-eeprom-digest -i without -k)") {
    signature.rsa2048.clear();
    auto check = verify_boot_signature(image, signature, test_key().public_key());
    CHECK_FALSE(check.ok);
    CHECK(check.reason.find("no rsa2048 line") != std::string::npos);
  }
}

TEST_CASE("boot.sig parsing names the line and what was expected", "[pi_boot_signature]") {
  auto image = sample_boot_img();
  std::string good = boot_signature_text(image, test_key(), 42);
  auto lines = lines_of(good);

  CHECK(message_of([&] { parse_boot_signature("", "x/boot.sig"); }).find("x/boot.sig: empty") != std::string::npos);
  std::string truncated = good.substr(0, good.size() - 100);
  CHECK(message_of([&] { parse_boot_signature(truncated, "boot.sig"); }).find("boot.sig:3: expected 'rsa2048: ' and 512") !=
        std::string::npos);
  std::string garbled = "zz" + good.substr(2);
  CHECK(message_of([&] { parse_boot_signature(garbled, "boot.sig"); }).find("boot.sig:1: expected the sha256") !=
        std::string::npos);
  std::string upper = good;
  upper[0] = 'A';
  if (good[0] >= 'a') CHECK(message_of([&] { parse_boot_signature(upper, "boot.sig"); }).find("boot.sig:1:") != std::string::npos);
  std::string no_ts = lines[0] + "\n" + lines[2] + "\n";
  CHECK(message_of([&] { parse_boot_signature(no_ts, "boot.sig"); }).find("no 'ts:") != std::string::npos);
  std::string bad_ts = lines[0] + "\nts: soon\n" + lines[2] + "\n";
  CHECK(message_of([&] { parse_boot_signature(bad_ts, "boot.sig"); }).find("boot.sig:2: expected 'ts: <unix seconds>'") !=
        std::string::npos);
  std::string extra = good + "hello: world\n";
  CHECK(message_of([&] { parse_boot_signature(extra, "boot.sig"); }).find("boot.sig:4: unexpected line 'hello: world'") !=
        std::string::npos);

  // What rpi-eeprom-digest -c 2712 writes, and a file that went through a CRLF editor, still parse.
  std::string with_soc = lines[0] + "\nts: 42\ntarget-soc: 2712\n" + lines[2] + "\n";
  auto parsed = parse_boot_signature(with_soc, "boot.sig");
  CHECK(parsed.target_soc == "2712");
  CHECK(verify_boot_signature(image, parsed, test_key().public_key()).ok);
  std::string crlf = lines[0] + "\r\n" + lines[1] + "\r\n" + lines[2] + "\r\n";
  CHECK(verify_boot_signature(image, parse_boot_signature(crlf, "boot.sig"), test_key().public_key()).ok);
}

TEST_CASE("keys: only RSA-2048, the file named, private and public not confused", "[pi_boot_signature]") {
  Secret pem = test_key().pem();
  CHECK(pem.reveal().starts_with("-----BEGIN PRIVATE KEY-----"));
  auto loaded = load_rsa_private_key(pem, "file /keys/boot.pem");
  CHECK(loaded.public_key().fingerprint() == test_key().public_key().fingerprint());
  std::string public_pem = test_key().public_key().pem();
  CHECK(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
  CHECK(load_rsa_public_key(public_pem, "pub.pem").fingerprint() == test_key().public_key().fingerprint());

  auto refused_private = message_of([&] { load_rsa_public_key(pem.reveal(), "boot.pem"); });
  CHECK(refused_private.find("boot.pem: this is a private key") != std::string::npos);
  CHECK(message_of([&] { load_rsa_private_key(Secret("hello"), "file /k.pem"); }).find("file /k.pem: not a PEM private key") !=
        std::string::npos);
  CHECK(message_of([&] { load_rsa_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "p.pem"); })
            .find("p.pem: the PEM public key cannot be decoded") != std::string::npos);

  RsaPrivateKey big(EvpPkey(EVP_RSA_gen(4096)));
  auto too_big = message_of([&] { load_rsa_private_key(big.pem(), "file /keys/big.pem"); });
  CHECK(too_big.find("file /keys/big.pem: the Pi 5 bootloader only takes 2048-bit RSA keys; this one is 4096 bits") !=
        std::string::npos);
  CHECK(message_of([&] { load_rsa_public_key(big.public_key().pem(), "big.pub.pem"); }).find("this one is 4096 bits") !=
        std::string::npos);
  // Nothing of the key in the message.
  CHECK(too_big.find("BEGIN") == std::string::npos);

  RsaPrivateKey ec(EvpPkey(EVP_EC_gen("P-256")));
  CHECK(message_of([&] { load_rsa_private_key(ec.pem(), "file /keys/ec.pem"); }).find("only takes RSA keys; this is a EC key") !=
        std::string::npos);
}
