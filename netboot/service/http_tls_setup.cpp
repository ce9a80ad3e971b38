#include "netboot/service/http_tls_setup.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "core/log.hpp"

namespace aggrik8s::netboot {

std::shared_ptr<HttpTlsContext> load_http_tls_context(const NetbootConfig& config) {
  if (!config.http_tls() || !config.http_tls_key) return nullptr;
  const auto& certificate = *config.http_tls_certificate;
  const SecretReference& key = *config.http_tls_key;
  Diagnostics diagnostics;
  check_secret(key, diagnostics);
  for (const auto& d : diagnostics.all()) {
    if (d.severity == Diagnostic::Severity::warning) log::warning("http.tls.key: ", d.where.str(), ": ", d.message);
  }
  diagnostics.throw_if_errors("http.tls.key");
  std::ifstream in(certificate, std::ios::binary);
  if (!in) throw Error("http.tls.certificate: " + certificate.string() + " cannot be read: " + std::strerror(errno));
  std::ostringstream chain;
  chain << in.rdbuf();
  std::vector<std::string> warnings;
  auto context = HttpTlsContext::from_pem(chain.str(), certificate.string(), load_secret(key), key.describe(),
                                          std::chrono::system_clock::now(), warnings);
  for (const auto& warning : warnings) log::warning("http.tls: ", warning);
  log::info("http.tls: certificate ", certificate.string(), ": ", context->summary());
  return context;
}

}  // namespace aggrik8s::netboot
