#pragma once
// netboot.yaml's http.tls read into the HTTP server's TLS context, at start and on reload: the key is a
// secret reference checked as node secrets are (a key readable by group or others is warned about), the
// certificate chain is read from its file, and both are checked against each other (HttpTlsContext).
#include <memory>

#include "netboot/http/http_tls_context.hpp"
#include "netboot/service/netboot_config.hpp"

namespace aggrik8s::netboot {

// Null when http.tls is not set. Throws aggrik8s::Error naming the file (certificate or key) and what is
// wrong with it; warnings (expired certificate, key readable by others) go to the log.
std::shared_ptr<HttpTlsContext> load_http_tls_context(const NetbootConfig& config);

}  // namespace aggrik8s::netboot
