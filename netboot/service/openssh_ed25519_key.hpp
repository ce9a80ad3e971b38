#pragma once
// SSH host keys of ephemeral nodes: Ed25519 key pairs made with OpenSSL and written in OpenSSH's own
// files, so the node's sshd finds the key it had before the reboot and clients' known_hosts stay valid.
// No ssh-keygen at run time: the server makes and serves keys in-process.
//
// The private key file is the unencrypted "openssh-key-v1" container (OpenSSH PROTOCOL.key):
//   "openssh-key-v1\0", string "none" (cipher), string "none" (kdf), string "" (kdf options),
//   uint32 1 (keys), string <public key blob>, string <private section>
// where the public key blob is string "ssh-ed25519", string <32-byte public key> (RFC 8709), and the
// private section is uint32 checkint twice, the key type, the public key, string <seed||public key>
// (64 bytes, as OpenSSH stores Ed25519 private keys), string <comment>, then padding bytes 1, 2, 3...
// up to a multiple of 8 (the "none" cipher's block size). Base64, wrapped at 70 columns as ssh-keygen
// does, between the BEGIN/END OPENSSH PRIVATE KEY lines. The formatting functions are pure.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/secret.hpp"

namespace aggrik8s::netboot {

using Ed25519PublicKey = std::array<std::uint8_t, 32>;

struct Ed25519KeyPair {
  Secret seed;  // the 32-byte private key of RFC 8032 (raw bytes)
  Ed25519PublicKey public_key;
};

// A new key pair from OpenSSL's CSPRNG (EVP_PKEY_ED25519). Throws Error when OpenSSL fails.
Ed25519KeyPair generate_ed25519_key_pair();

// The public key that belongs to `seed` (32 raw bytes). Throws Error when `seed` is not 32 bytes.
Ed25519PublicKey ed25519_public_key_of(std::string_view seed);

// "AAAAC3NzaC1lZDI1NTE5AAAAI...": the base64 public key blob, the middle field of a .pub line.
std::string openssh_ed25519_public_key_base64(const Ed25519PublicKey& public_key);

// "ssh-ed25519 AAAA... <comment>\n", the .pub file. Throws Error when the comment holds a line break.
std::string openssh_ed25519_public_key_line(const Ed25519PublicKey& public_key, std::string_view comment);

// The unencrypted private key file (see above). The checkint, random in OpenSSH, only lets a reader
// detect a wrong passphrase; here it is taken from the public key so the same key always gives the
// same bytes (reproducible identity bundles). Throws Error when `seed` is not 32 bytes or the comment
// holds a line break.
std::string openssh_ed25519_private_key_file(std::string_view seed, const Ed25519PublicKey& public_key,
                                             std::string_view comment);

// "SHA256:<unpadded base64 of the blob's SHA-256>", as `ssh-keygen -l` prints it. Safe to log.
std::string openssh_fingerprint_sha256(const Ed25519PublicKey& public_key);

}  // namespace aggrik8s::netboot
