#pragma once
// TLS credentials of the HTTP server: a certificate chain and its private key, checked and turned into
// an OpenSSL server context. Built once at start and again on reload (a renewed certificate); the server
// hands each new connection the current one, connections in flight keep theirs.
//
// The Raspberry Pi 5 bootloader is the client this is shaped for: it checks the server against the CA
// whose sha256 is HTTP_CACERT_HASH in its EEPROM, with an mbedTLS client, so the context offers TLS 1.2
// and 1.3 with ECDHE key exchange and AES-GCM (ChaCha20 too), which every mbedTLS build has.
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/secret.hpp"

namespace boost::asio::ssl {
class context;
}

namespace aggrik8s::netboot {

class HttpTlsContext {
 public:
  // `chain_pem`: the server certificate first, then intermediates (the CA itself may follow). `key`: its
  // private key, PEM, unencrypted. `chain_name`/`key_name` name them in errors (never the key's bytes).
  // Throws aggrik8s::Error for a chain or key that does not parse, or a key that does not belong to the
  // certificate. A certificate expired or not yet valid at `now` is a warning, added to `warnings`: the
  // server still starts (its clock may be the wrong one), but the Pi will refuse it.
  static std::shared_ptr<HttpTlsContext> from_pem(const std::string& chain_pem, const std::string& chain_name,
                                                  const Secret& key, const std::string& key_name,
                                                  std::chrono::system_clock::time_point now,
                                                  std::vector<std::string>& warnings);
  ~HttpTlsContext();
  HttpTlsContext(const HttpTlsContext&) = delete;
  HttpTlsContext& operator=(const HttpTlsContext&) = delete;

  boost::asio::ssl::context& native() { return *context_; }
  // "subject CN=..., issuer CN=..., valid until 2027-01-01 00:00:00 GMT, sha256 AB:CD:..." for the log.
  const std::string& summary() const { return summary_; }

 private:
  HttpTlsContext();
  std::unique_ptr<boost::asio::ssl::context> context_;
  std::string summary_;
};

}  // namespace aggrik8s::netboot
