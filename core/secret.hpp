#pragma once
// Secrets (RKE2 join tokens, Talos machine configs with cluster PKI) are never written inline in a
// profile: a profile is meant to be committed and shared. A profile names where the secret lives
// (`{file: path}` or `{env: NAME}`); the value is read only when a build needs it, held in a Secret
// that cannot be streamed into a log line, and written only to 0600 files.
#include <optional>
#include <string>

#include "core/config_reader.hpp"
#include "core/diagnostics.hpp"
#include "core/sha256.hpp"

namespace aggrik8s {

struct SecretReference {
  enum class Kind { file, env };
  Kind kind = Kind::file;
  std::string name;  // absolute path, or the environment variable's name
  SourceLocation where;
  // "file /etc/x/token" or "environment variable RKE2_TOKEN": safe to print, contains no secret.
  std::string describe() const;
};

class Secret {
 public:
  explicit Secret(std::string value) : value_(std::move(value)) {}
  // Deliberately named so every use is easy to audit.
  const std::string& reveal() const { return value_; }
  // For manifests: proves which secret went in without disclosing it.
  Sha256Digest fingerprint() const { return Sha256::of(value_); }

 private:
  std::string value_;
};

// Reads `key: {file: PATH}` or `key: {env: NAME}`; an inline string is an error that says why.
std::optional<SecretReference> read_secret_reference(ConfigMapReader& parent, std::string_view key,
                                                     bool required = false);
// Checks without keeping the value: file readable and non-empty, variable set and non-empty. Warns when
// a secret file is readable by group or others.
void check_secret(const SecretReference& reference, Diagnostics& diagnostics);
// Throws Error (naming the reference, never the value) when unavailable.
Secret load_secret(const SecretReference& reference);

}  // namespace aggrik8s
