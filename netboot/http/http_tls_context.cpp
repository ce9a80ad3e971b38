#include "netboot/http/http_tls_context.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdio>
#include <ctime>

#include "netboot/asio.hpp"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"  // see netboot/asio.hpp
#include <boost/asio/ssl/context.hpp>
#pragma GCC diagnostic pop

#include "core/error.hpp"

namespace aggrik8s::netboot {

namespace {

// TLS 1.2 suites, best first; TLS 1.3 uses OpenSSL's defaults (all AEAD). Forward secrecy and AEAD only:
// ECDHE with RSA or ECDSA certificates, AES-GCM and ChaCha20-Poly1305; mbedTLS clients (the Pi 5
// bootloader) negotiate ECDHE-RSA/ECDSA with AES-GCM.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Certificate = std::unique_ptr<X509, X509Free>;

// OpenSSL's queued errors as text ("PEM routines::no start line"), then cleared.
std::string openssl_errors() {
  std::string out;
  while (unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

// Without this OpenSSL asks for an encrypted key's passphrase on the terminal: a daemon must fail instead.
int refuse_passphrase(char*, int, int, void*) { return -1; }

std::unique_ptr<BIO, BioFree> memory_bio(const std::string& bytes) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

std::string name_text(const X509_NAME* name) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string time_text(const ASN1_TIME* time) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  ASN1_TIME_print(bio.get(), time);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string fingerprint(X509* certificate) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  X509_digest(certificate, EVP_sha256(), digest, &length);
  std::string out;
  for (unsigned i = 0; i < length; ++i) {
    char hex[4];
    std::snprintf(hex, sizeof hex, i == 0 ? "%02X" : ":%02X", digest[i]);
    out += hex;
  }
  return out;
}

std::vector<Certificate> read_chain(const std::string& pem, const std::string& name) {
  ERR_clear_error();
  auto bio = memory_bio(pem);
  std::vector<Certificate> chain;
  while (X509* certificate = PEM_read_bio_X509(bio.get(), nullptr, refuse_passphrase, nullptr)) {
    chain.emplace_back(certificate);
  }
  // The loop ends with "no start line" after the last certificate: that is the normal end, anything
  // else (a damaged base64 block, a truncated file) is an error in the file.
  unsigned long last = ERR_peek_last_error();
  if (!chain.empty() && ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
  } else if (last != 0 || chain.empty()) {
    throw Error("TLS certificate " + name + ": " +
                (chain.empty() ? std::string("no PEM certificate (-----BEGIN CERTIFICATE-----) could be read: ")
                               : "certificate " + std::to_string(chain.size() + 1) + " does not parse: ") +
                openssl_errors());
  }
  return chain;
}

}  // namespace

HttpTlsContext::HttpTlsContext() : context_(std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server)) {}
HttpTlsContext::~HttpTlsContext() = default;

std::shared_ptr<HttpTlsContext> HttpTlsContext::from_pem(const std::string& chain_pem, const std::string& chain_name,
                                                         const Secret& key, const std::string& key_name,
                                                         std::chrono::system_clock::time_point now,
                                                         std::vector<std::string>& warnings) {
  std::vector<Certificate> chain = read_chain(chain_pem, chain_name);
  X509* leaf = chain.front().get();

  ERR_clear_error();
  auto key_bio = memory_bio(key.reveal());
  std::unique_ptr<EVP_PKEY, KeyFree> private_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, refuse_passphrase, nullptr));
  if (!private_key) {
    throw Error("TLS key " + key_name + ": not an unencrypted PEM private key: " + openssl_errors());
  }
  if (X509_check_private_key(leaf, private_key.get()) != 1) {
    ERR_clear_error();
    throw Error("TLS key " + key_name + " does not belong to the certificate in " + chain_name + " (subject " +
                name_text(X509_get_subject_name(leaf)) + "): the first certificate of the chain must be the server's own");
  }

  std::time_t at = std::chrono::system_clock::to_time_t(now);
  if (X509_cmp_time(X509_get0_notAfter(leaf), &at) < 0) {
    warnings.push_back("TLS certificate " + chain_name + " expired on " + time_text(X509_get0_notAfter(leaf)) +
                       ": clients (the Pi 5 bootloader too) will refuse it");
  } else if (X509_cmp_time(X509_get0_notBefore(leaf), &at) > 0) {
    warnings.push_back("TLS certificate " + chain_name + " is not valid before " + time_text(X509_get0_notBefore(leaf)) +
                       ": clients will refuse it until then (check this machine's clock)");
  }

  std::shared_ptr<HttpTlsContext> out(new HttpTlsContext());
  SSL_CTX* ctx = out->context_->native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1 || SSL_CTX_use_certificate(ctx, leaf) != 1 ||
      SSL_CTX_use_PrivateKey(ctx, private_key.get()) != 1) {
    throw Error("TLS certificate " + chain_name + ": OpenSSL refused it: " + openssl_errors());
  }
  for (std::size_t i = 1; i < chain.size(); ++i) {
    if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1) {
      throw Error("TLS certificate " + chain_name + ": certificate " + std::to_string(i + 1) +
                  " of the chain refused: " + openssl_errors());
    }
  }
  out->summary_ = "subject " + name_text(X509_get_subject_name(leaf)) + ", issuer " +
                  name_text(X509_get_issuer_name(leaf)) + ", valid until " + time_text(X509_get0_notAfter(leaf)) +
                  ", sha256 " + fingerprint(leaf);
  return out;
}

}  // namespace aggrik8s::netboot
