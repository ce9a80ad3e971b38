#include "core/secret.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "core/permission_detail.hpp"

namespace aggrik8s {

std::string SecretReference::describe() const {
  return kind == Kind::file ? "file " + name : "environment variable " + name;
}

std::optional<SecretReference> read_secret_reference(ConfigMapReader& parent, std::string_view key, bool required) {
  const ConfigNode* value = parent.node(key, required);
  if (value == nullptr) return std::nullopt;
  if (value->is_scalar()) {
    parent.diagnostics().error(value->location, "'" + parent.key_path(key) +
                                                    "' is a secret and must not be written inline; use {file: PATH} "
                                                    "or {env: VARIABLE}");
    return std::nullopt;
  }
  ConfigMapReader reader(*value, parent.diagnostics(), parent.key_path(key));
  if (!reader.valid()) {
    parent.diagnostics().error(value->location, "'" + parent.key_path(key) + "' must be {file: PATH} or {env: VARIABLE}, got " +
                                                    value->kind_name());
    return std::nullopt;
  }
  auto file = reader.path_value("file");
  auto env = reader.string("env");
  reader.finish();
  if (file.has_value() == env.has_value()) {
    parent.diagnostics().error(value->location,
                               "'" + parent.key_path(key) + "' must have exactly one of 'file' or 'env'");
    return std::nullopt;
  }
  if (file) return SecretReference{SecretReference::Kind::file, file->string(), value->location};
  return SecretReference{SecretReference::Kind::env, *env, value->location};
}

void check_secret(const SecretReference& reference, Diagnostics& diagnostics) {
  if (reference.kind == SecretReference::Kind::env) {
    const char* v = std::getenv(reference.name.c_str());
    if (v == nullptr || *v == '\0') {
      diagnostics.error(reference.where, "secret " + reference.describe() + " is not set");
    }
    return;
  }
  struct stat st {};
  if (::stat(reference.name.c_str(), &st) != 0) {
    const int error = errno;
    diagnostics.error(reference.where, "secret " + reference.describe() + " cannot be read: " + std::strerror(error) +
                                           permission_denied_detail(reference.name, error));
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    diagnostics.error(reference.where, "secret " + reference.describe() + " is not a regular file");
    return;
  }
  std::ifstream in(reference.name, std::ios::binary);
  if (!in) {
    const int error = errno;
    diagnostics.error(reference.where, "secret " + reference.describe() + " cannot be read: " + std::strerror(error) +
                                           permission_denied_detail(reference.name, error));
    return;
  }
  if (st.st_size == 0) {
    diagnostics.error(reference.where, "secret " + reference.describe() + " is empty");
    return;
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    diagnostics.warning(reference.where, "secret " + reference.describe() +
                                             " is readable by other users; chmod 600 it");
  }
}

Secret load_secret(const SecretReference& reference) {
  if (reference.kind == SecretReference::Kind::env) {
    const char* v = std::getenv(reference.name.c_str());
    if (v == nullptr || *v == '\0') throw Error(reference.where.str() + ": secret " + reference.describe() + " is not set");
    return Secret(v);
  }
  std::ifstream in(reference.name, std::ios::binary);
  if (!in) {
    const int error = errno;
    throw Error(reference.where.str() + ": secret " + reference.describe() + " cannot be read: " + std::strerror(error) +
                permission_denied_detail(reference.name, error));
  }
  std::ostringstream content;
  content << in.rdbuf();
  std::string value = content.str();
  if (value.empty()) throw Error(reference.where.str() + ": secret " + reference.describe() + " is empty");
  return Secret(std::move(value));
}

}  // namespace aggrik8s
