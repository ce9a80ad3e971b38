#include "core/http_download.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/artifact_source.hpp"
#include "core/curl_handle.hpp"
#include "core/progress.hpp"

namespace aggrik8s {
namespace {

struct TransferState {
  CURL* curl = nullptr;
  int fd = -1;
  std::uint64_t offset = 0;  // bytes already in the file when the transfer began
  bool checked_status = false;
  bool rejected_status = false;  // an error page: its body must not land in the file
  bool restarted = false;        // a 200 answered our range request: start over from byte 0
  int write_errno = 0;
  ProgressTask* progress = nullptr;
};

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto& state = *static_cast<TransferState*>(user);
  std::size_t length = size * count;
  if (!state.checked_status) {
    state.checked_status = true;
    long status = 0;
    curl_easy_getinfo(state.curl, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200 && state.offset > 0) {
      // The server ignored "Range:": what arrives is the whole file, so the partial copy is dropped.
      if (::ftruncate(state.fd, 0) != 0 || ::lseek(state.fd, 0, SEEK_SET) != 0) {
        state.write_errno = errno;
        return 0;
      }
      state.offset = 0;
      state.restarted = true;
      if (state.progress != nullptr) state.progress->set_done(0);
    } else if (status != 200 && status != 206) {
      state.rejected_status = true;
      return 0;
    }
  }
  std::size_t written = 0;
  while (written < length) {
    ssize_t n = ::write(state.fd, data + written, length - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      state.write_errno = errno;
      return 0;
    }
    written += static_cast<std::size_t>(n);
  }
  if (state.progress != nullptr) state.progress->add(length);
  return length;
}

int on_progress(void* user, curl_off_t total, curl_off_t, curl_off_t, curl_off_t) {
  auto& state = *static_cast<TransferState*>(user);
  if (state.progress != nullptr && total > 0) {
    state.progress->set_total(state.offset + static_cast<std::uint64_t>(total));
  }
  return 0;
}

bool is_transient_status(long status) { return status == 408 || status == 429 || status >= 500; }

bool is_transient_curl_error(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

}  // namespace

HttpDownloadResult http_download(const std::string& url, int fd, const HttpDownloadLimits& limits,
                                 ProgressTask* progress) {
  CurlHandle curl = new_curl_handle(limits.connect_timeout_seconds);
  HttpDownloadResult result;
  if (!curl) {
    result.message = "cannot initialise libcurl";
    return result;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    result.message = std::string("cannot stat the partial download: ") + std::strerror(errno);
    return result;
  }
  TransferState state;
  state.curl = curl.get();
  state.fd = fd;
  state.offset = static_cast<std::uint64_t>(st.st_size);
  state.progress = progress;
  ::lseek(fd, 0, SEEK_END);
  if (progress != nullptr) progress->set_done(state.offset);

  char error_buffer[CURL_ERROR_SIZE] = {};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &state);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, limits.stall_timeout_seconds);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, nullptr);  // bytes as stored; a gzip'd transfer would change the hash
  // A private mirror's CA, as the curl tool takes it (CURL_CA_BUNDLE) or OpenSSL's variable
  // (SSL_CERT_FILE); else the system's trust store. (libcurl itself reads neither.)
  for (const char* variable : {"CURL_CA_BUNDLE", "SSL_CERT_FILE"}) {
    if (const char* bundle = std::getenv(variable); bundle != nullptr && *bundle != '\0') {
      curl_easy_setopt(c, CURLOPT_CAINFO, bundle);
      break;
    }
  }
  // The Range header itself rather than CURLOPT_RESUME_FROM: with the latter libcurl gives up on a
  // server that answers 200 (it ignores ranges) after that whole body has come, and the retry fetches
  // it again; here on_body starts the file over with that body instead, so one request suffices.
  const std::string range = std::to_string(state.offset) + "-";
  if (state.offset > 0) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());

  CURLcode code = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  result.http_status = status;
  result.resumed = state.offset > 0 && !state.restarted;

  if (state.write_errno != 0) {
    result.outcome = HttpDownloadResult::Outcome::permanent_failure;
    result.write_failed = true;
    result.message = "cannot write the download of " + redact_url_credentials(url) + ": " + std::strerror(state.write_errno);
    return result;
  }
  // Where the answer came from when redirects were followed (a mirror sending to a CDN): an error is
  // that server's, and saying only the first URL sent users to the wrong one.
  std::string answered_by = redact_url_credentials(url);
  if (char* effective = nullptr; curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective != nullptr &&
                                 url != effective) {
    answered_by += " (redirected to " + redact_url_credentials(effective) + ")";
  }
  // A 416 answers a range request: our partial copy is already whole (or longer than the file), and
  // the checksum decides. To a request without a range it is the server's error like any other.
  if (state.offset > 0 && (code == CURLE_RANGE_ERROR || status == 416)) {
    // Our partial copy is already whole (or longer than the file): let the checksum decide.
    result.outcome = HttpDownloadResult::Outcome::complete;
    return result;
  }
  if (state.rejected_status || (code == CURLE_OK && status >= 400)) {
    result.outcome = is_transient_status(status) ? HttpDownloadResult::Outcome::transient_failure
                                                 : HttpDownloadResult::Outcome::permanent_failure;
    result.message = "HTTP " + std::to_string(status) + " from " + answered_by;
    return result;
  }
  if (code != CURLE_OK) {
    result.outcome = is_transient_curl_error(code) ? HttpDownloadResult::Outcome::transient_failure
                                                   : HttpDownloadResult::Outcome::permanent_failure;
    result.host_unreachable = code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY ||
                              code == CURLE_COULDNT_CONNECT;
    result.message = redact_url_credentials(url) + ": " + (error_buffer[0] != '\0' ? std::string(error_buffer) : curl_easy_strerror(code));
    // libcurl goes through the proxy the environment names: a dead proxy is what failed, not the mirror.
    if (result.host_unreachable) {
      static constexpr std::array<const char*, 4> for_https{"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
      static constexpr std::array<const char*, 4> for_http{"http_proxy", "all_proxy", "ALL_PROXY", ""};
      for (const char* variable : url.starts_with("https://") ? for_https : for_http) {
        const char* proxy = *variable != '\0' ? std::getenv(variable) : nullptr;
        if (proxy != nullptr && *proxy != '\0') {
          result.message += " (through the proxy " + redact_url_credentials(proxy) + " that " + variable +
                            " names; no_proxy lists hosts to reach directly)";
          break;
        }
      }
    }
    return result;
  }
  result.outcome = HttpDownloadResult::Outcome::complete;
  return result;
}

}  // namespace aggrik8s
