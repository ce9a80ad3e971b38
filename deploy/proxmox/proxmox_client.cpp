#include "deploy/proxmox/proxmox_client.hpp"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cctype>
#include <memory>

#include "core/curl_handle.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"

namespace aggrik8s::builder {

namespace {

constexpr long connect_timeout_seconds = 15;
constexpr long stall_timeout_seconds = 60;  // abort a transfer slower than 1 KiB/s for this long

struct Exchange {
  std::string body;
  std::string reason;  // the last status line's reason phrase: Proxmox' error message
  ProgressTask* progress = nullptr;
};

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto& exchange = *static_cast<Exchange*>(user);
  // An API answer is small; a runaway body is cut off rather than held in memory.
  if (exchange.body.size() > (16u << 20)) return 0;
  exchange.body.append(data, size * count);
  return size * count;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto& exchange = *static_cast<Exchange*>(user);
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    // "HTTP/1.1 400 Parameter verification failed.\r\n": a new status line (after a 100) starts over.
    exchange.reason.clear();
    std::size_t code = line.find(' ');
    std::size_t reason = code == std::string_view::npos ? code : line.find(' ', code + 1);
    if (reason != std::string_view::npos) {
      std::string_view text = line.substr(reason + 1);
      while (!text.empty() && (text.back() == '\r' || text.back() == '\n')) text.remove_suffix(1);
      exchange.reason = std::string(text);
    }
  }
  return size * count;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t upload_total, curl_off_t uploaded) {
  auto& exchange = *static_cast<Exchange*>(user);
  if (exchange.progress == nullptr) return 0;
  // The multipart body: the file and a few hundred bytes of form around it.
  if (upload_total > 0) exchange.progress->set_total(static_cast<std::uint64_t>(upload_total));
  if (uploaded > 0) exchange.progress->set_done(static_cast<std::uint64_t>(uploaded));
  return 0;
}

// Fingerprint pinning: the handshake succeeds exactly when the server's (leaf) certificate has the
// pinned SHA-256, whoever signed it.
struct PinnedCertificate {
  std::string fingerprint;  // expected, lowercase hex
  std::string seen;         // what the server presented, for the message
};

int verify_pinned_certificate(X509_STORE_CTX* store, void* user) {
  auto& pin = *static_cast<PinnedCertificate*>(user);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (leaf == nullptr || X509_digest(leaf, EVP_sha256(), digest, &length) != 1) return 0;
  static constexpr char hex[] = "0123456789abcdef";
  pin.seen.clear();
  for (unsigned int i = 0; i < length; ++i) {
    pin.seen.push_back(hex[digest[i] >> 4]);
    pin.seen.push_back(hex[digest[i] & 0xf]);
  }
  if (pin.seen == pin.fingerprint) return 1;
  X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
  return 0;
}

CURLcode install_pin(CURL*, void* ssl_ctx, void* user) {
  SSL_CTX_set_cert_verify_callback(static_cast<SSL_CTX*>(ssl_ctx), verify_pinned_certificate, user);
  return CURLE_OK;
}

std::string colon_hex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    if (i > 0) out.push_back(':');
    out += hex.substr(i, 2);
  }
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

ProxmoxClient::ProxmoxClient(std::string token_id, Secret token_secret, ProxmoxTlsSettings tls)
    : token_id_(std::move(token_id)), token_secret_(std::move(token_secret)), tls_(std::move(tls)) {}

std::string ProxmoxClient::send(const ProxmoxRequest& request) const {
  CurlHandle curl = new_curl_handle(connect_timeout_seconds);
  if (!curl) throw Error(request.what + ": cannot initialise libcurl");
  CURL* c = curl.get();
  Exchange exchange;
  char error_buffer[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  // Never follow a redirect: the token would go wherever it points.
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &exchange);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &exchange);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, stall_timeout_seconds);

  PinnedCertificate pin;
  if (!tls_.verify) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (tls_.fingerprint) {
    // The pinned certificate is the identity: its chain and names are not what is trusted.
    pin.fingerprint = *tls_.fingerprint;
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, install_pin);
    curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, &pin);
  } else if (tls_.ca_file) {
    curl_easy_setopt(c, CURLOPT_CAINFO, tls_.ca_file->c_str());
  }

  std::string authorization = "Authorization: " + proxmox_authorization_prefix(token_id_) + token_secret_.reveal();
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, curl_slist_free_all);
  auto add_header = [&](const std::string& line) { headers.reset(curl_slist_append(headers.release(), line.c_str())); };
  add_header(authorization);
  add_header("Accept: application/json");
  add_header("Expect:");  // send the body at once instead of waiting for "100 Continue"
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  std::unique_ptr<curl_mime, decltype(&curl_mime_free)> form(nullptr, curl_mime_free);
  std::unique_ptr<ProgressTask> progress;
  if (request.method == "POST") {
    form.reset(curl_mime_init(c));
    for (const auto& field : request.fields) {
      curl_mimepart* part = curl_mime_addpart(form.get());
      curl_mime_name(part, field.name.c_str());
      curl_mime_data(part, field.value.c_str(), CURL_ZERO_TERMINATED);
    }
    if (request.file) {
      curl_mimepart* part = curl_mime_addpart(form.get());
      curl_mime_name(part, request.file->field.c_str());
      if (curl_mime_filedata(part, request.file->path.c_str()) != CURLE_OK) {
        throw Error(request.what + ": cannot read " + request.file->path.string());
      }
      // After filedata, which sets the local file's name: Proxmox stores the file under this one.
      curl_mime_filename(part, request.file->file_name.c_str());
      curl_mime_type(part, "application/octet-stream");
      progress = std::make_unique<ProgressTask>("upload " + request.file->file_name, request.file->size);
      exchange.progress = progress.get();
      curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
      curl_easy_setopt(c, CURLOPT_XFERINFODATA, &exchange);
    }
    curl_easy_setopt(c, CURLOPT_MIMEPOST, form.get());
  } else {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  }

  CURLcode code = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (progress) progress->finish(code != CURLE_OK || status / 100 != 2);
  const std::string& secret = token_secret_.reveal();
  if (code != CURLE_OK) {
    std::string detail = error_buffer[0] != '\0' ? std::string(error_buffer) : curl_easy_strerror(code);
    std::string message = request.what + " (" + request.method + " " + request.url + ") failed: " + detail;
    if (code == CURLE_PEER_FAILED_VERIFICATION || code == CURLE_SSL_CACERT_BADFILE ||
        code == CURLE_SSL_CONNECT_ERROR) {
      if (tls_.fingerprint && !pin.seen.empty() && pin.seen != pin.fingerprint) {
        message += "; the server's certificate has SHA-256 fingerprint " + colon_hex(pin.seen) +
                   ", not the pinned proxmox.fingerprint";
      } else if (!tls_.fingerprint) {
        message += "; the server's certificate is not trusted: set proxmox.ca_file to the cluster's CA "
                   "(/etc/pve/pve-root-ca.pem on a node) or pin proxmox.fingerprint";
      }
    }
    throw Error(redact_secret(message, secret));
  }
  if (status / 100 != 2) {
    std::string message = request.what + " (" + request.method + " " + request.url + ") was refused: " +
                          proxmox_error_text(status, exchange.reason, exchange.body);
    if (status == 401) message += "; check proxmox.token_id and the token secret";
    if (status == 403) {
      message += "; the token needs Datastore.AllocateTemplate and Datastore.Audit on /storage/<storage> (a token "
                 "with privilege separation has only the permissions given to the token itself)";
    }
    throw Error(redact_secret(message, secret));
  }
  return exchange.body;
}

}  // namespace aggrik8s::builder
