// netboot/openssh_ed25519_key: OpenSSH's key files from raw Ed25519 keys. Known answers use RFC 8032's
// first test vector; the expected private key file was written independently from PROTOCOL.key (and
// loads with Python cryptography's load_ssh_private_key). ssh-keygen itself reads our files in
// tests/integration/netboot/service/ephemeral_identity_test.cpp.
#include "netboot/service/openssh_ed25519_key.hpp"

#include <catch2/catch.hpp>

#include "core/error.hpp"

using namespace aggrik8s::netboot;

namespace {

std::string from_hex(std::string_view hex) {
  std::string bytes;
  for (std::size_t i = 0; i < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return bytes;
}

const std::string rfc8032_seed = from_hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");

Ed25519PublicKey rfc8032_public() {
  std::string bytes = from_hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  Ed25519PublicKey key{};
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

}  // namespace

TEST_CASE("ed25519: the public key is derived from the seed (RFC 8032 test 1)", "[ssh]") {
  CHECK(ed25519_public_key_of(rfc8032_seed) == rfc8032_public());
  CHECK_THROWS_WITH(ed25519_public_key_of("short"), "Ed25519 private key must be 32 bytes, got 5");
}

TEST_CASE("ed25519: generated key pairs are new each time and consistent", "[ssh]") {
  Ed25519KeyPair first = generate_ed25519_key_pair();
  Ed25519KeyPair second = generate_ed25519_key_pair();
  REQUIRE(first.seed.reveal().size() == 32);
  CHECK(first.seed.reveal() != second.seed.reveal());
  CHECK(first.public_key != second.public_key);
  CHECK(ed25519_public_key_of(first.seed.reveal()) == first.public_key);
}

TEST_CASE("openssh: public key line and fingerprint", "[ssh]") {
  CHECK(openssh_ed25519_public_key_line(rfc8032_public(), "root@pi-worker-1") ==
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea root@pi-worker-1\n");
  CHECK(openssh_ed25519_public_key_line(rfc8032_public(), "") ==
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea\n");
  CHECK(openssh_fingerprint_sha256(rfc8032_public()) == "SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8");
  CHECK_THROWS_WITH(openssh_ed25519_public_key_line(rfc8032_public(), "root@x\nssh-rsa AAAA evil"),
                    "SSH key comment must be one line, got one with a line break");
}

TEST_CASE("openssh: unencrypted openssh-key-v1 private key file, byte for byte", "[ssh]") {
  std::string expected =
      "-----BEGIN OPENSSH PRIVATE KEY-----\n"
      "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
      "QyNTUxOQAAACDXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGgAAAJjXWpgB11qY\n"
      "AQAAAAtzc2gtZWQyNTUxOQAAACDXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg\n"
      "AAAECdYbGd7/1aYLqESvSS7CzEREnFaXsyaRlwO6wDHK5/YNdamAGCsQq31Uv+08lkBzoO\n"
      "4XLz2qYjJa8CGmj3B1EaAAAAEHJvb3RAcGktd29ya2VyLTEBAgMEBQ==\n"
      "-----END OPENSSH PRIVATE KEY-----\n";
  CHECK(openssh_ed25519_private_key_file(rfc8032_seed, rfc8032_public(), "root@pi-worker-1") == expected);
  // Padding is 1, 2, 3... up to a multiple of 8 whatever the comment's length: every length parses.
  for (std::size_t length = 0; length < 9; ++length) {
    std::string file = openssh_ed25519_private_key_file(rfc8032_seed, rfc8032_public(), std::string(length, 'c'));
    CHECK(file.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"));
  }
  CHECK_THROWS_WITH(openssh_ed25519_private_key_file("short", rfc8032_public(), "c"),
                    "Ed25519 private key must be 32 bytes, got 5");
  CHECK_THROWS_AS(openssh_ed25519_private_key_file(rfc8032_seed, rfc8032_public(), "a\rb"), aggrik8s::Error);
}
