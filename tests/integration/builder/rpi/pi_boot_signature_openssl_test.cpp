// boot.sig against the real tools: the same bytes as raspberrypi/rpi-eeprom's rpi-eeprom-digest
// pipeline (sha256sum | awk, echo "ts: $SOURCE_DATE_EPOCH", openssl dgst -sign -sha256 | xxd -c 4096 -p),
// our signature accepted by `openssl dgst -verify`, and openssl's signature accepted by our verifier.
// Keys come from `openssl genpkey` at test time.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "builder/rpi/pi_boot_signature.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;
namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

void require_run(const std::string& command) {
  auto result = test::run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
}

struct OpensslKeyPair {
  fs::path private_pem;
  fs::path public_pem;
};

OpensslKeyPair openssl_key_pair(const test::TempDir& dir, const std::string& name, int bits) {
  OpensslKeyPair keys{dir / (name + ".pem"), dir / (name + ".pub.pem")};
  require_run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:" + std::to_string(bits) + " -out " +
              keys.private_pem.string() + " 2>&1");
  require_run("openssl pkey -in " + keys.private_pem.string() + " -pubout -out " + keys.public_pem.string());
  return keys;
}

}  // namespace

TEST_CASE("boot.sig is byte-identical to rpi-eeprom-digest's and verifies with openssl", "[pi_boot_signature][openssl]") {
  test::TempDir dir;
  auto keys = openssl_key_pair(dir, "boot", 2048);
  fs::path boot_img = dir / "boot.img";
  test::write_file(boot_img, test::random_bytes(300000, 7));
  auto image = bytes_of(test::read_file(boot_img));

  auto key = load_rsa_private_key(Secret(test::read_file(keys.private_pem)), "file " + keys.private_pem.string());
  std::string ours = boot_signature_text(image, key, 1712345678);
  test::write_file(dir / "ours.sig", ours);

  // rpi-eeprom-digest's writeSig, step by step, with SOURCE_DATE_EPOCH=1712345678.
  std::string d = dir.path().string();
  require_run("cd " + d + " && sha256sum boot.img | awk '{print $1}' > theirs.sig && echo 'ts: 1712345678' >> theirs.sig"
              " && openssl dgst -sign boot.pem -sha256 -out tmp.sig boot.img"
              " && echo \"rsa2048: $(xxd -c 4096 -p < tmp.sig)\" >> theirs.sig");
  CHECK(ours == test::read_file(dir / "theirs.sig"));

  // rpi-eeprom-digest -v: the rsa2048 hex decoded, checked by openssl dgst -verify.
  require_run("cd " + d + " && grep rsa2048 ours.sig | cut -f 2 -d ' ' | xxd -c 4096 -p -r > ours.bin");
  auto verified = test::run("cd " + d + " && openssl dgst -sha256 -verify boot.pub.pem -signature ours.bin boot.img");
  INFO(verified.output);
  CHECK(verified.exit_code == 0);
  CHECK(verified.output.find("Verified OK") != std::string::npos);

  // Our verifier on openssl's signature (the same bytes, but made by the other side).
  auto public_key = load_rsa_public_key_file(keys.public_pem);
  auto theirs = parse_boot_signature(test::read_file(dir / "theirs.sig"), (dir / "theirs.sig").string());
  auto check = verify_boot_signature(image, theirs, public_key);
  INFO(check.reason);
  CHECK(check.ok);

  // A tampered boot.img fails with openssl too.
  image[5] ^= 0xff;
  test::write_file(dir / "tampered.img", std::string(image.begin(), image.end()));
  CHECK(test::run("cd " + d + " && openssl dgst -sha256 -verify boot.pub.pem -signature ours.bin tampered.img").exit_code != 0);
  CHECK_FALSE(verify_boot_signature(image, theirs, public_key).ok);

  // The fingerprint keygen prints is sha256 of the DER public key, as openssl computes it.
  auto der = test::run("openssl pkey -pubin -in " + keys.public_pem.string() + " -outform DER | sha256sum");
  CHECK(der.output.substr(0, 64) == public_key.fingerprint().hex());
}

TEST_CASE("keys from openssl: PKCS#1 accepted, 4096-bit and encrypted refused naming the file", "[pi_boot_signature][openssl]") {
  test::TempDir dir;
  fs::path traditional = dir / "rsa.pem";
  require_run("openssl genrsa -traditional -out " + traditional.string() + " 2048 2>&1");
  REQUIRE(test::read_file(traditional).starts_with("-----BEGIN RSA PRIVATE KEY-----"));
  CHECK_NOTHROW(load_rsa_private_key(Secret(test::read_file(traditional)), "file " + traditional.string()));
  require_run("openssl rsa -in " + traditional.string() + " -RSAPublicKey_out -out " + (dir / "rsa.pub.pem").string() + " 2>&1");
  CHECK_NOTHROW(load_rsa_public_key_file(dir / "rsa.pub.pem"));

  auto big = openssl_key_pair(dir, "big", 4096);
  CHECK_THROWS_WITH(load_rsa_private_key(Secret(test::read_file(big.private_pem)), "file " + big.private_pem.string()),
                    Catch::Contains(big.private_pem.string() + ": the Pi 5 bootloader only takes 2048-bit RSA keys; this one is 4096 bits"));
  CHECK_THROWS_WITH(load_rsa_public_key_file(big.public_pem), Catch::Contains(big.public_pem.string() + ": ") &&
                                                                  Catch::Contains("this one is 4096 bits"));

  fs::path encrypted = dir / "encrypted.pem";
  require_run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -aes256 -pass pass:secret -out " +
              encrypted.string() + " 2>&1");
  CHECK_THROWS_WITH(load_rsa_private_key(Secret(test::read_file(encrypted)), "file " + encrypted.string()),
                    Catch::Contains(encrypted.string() + ": the private key is encrypted"));
  CHECK_THROWS_WITH(load_rsa_public_key_file(dir / "missing.pem"), Catch::Contains("missing.pem: cannot open"));
}
