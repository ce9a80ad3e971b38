#pragma once
// One HTTP(S) GET into a file, resuming where the file ends. Retry policy lives in the caller; this
// layer only says whether a failure is worth retrying.
#include <cstdint>
#include <filesystem>
#include <string>

namespace aggrik8s {

class ProgressTask;

struct HttpDownloadResult {
  enum class Outcome { complete, transient_failure, permanent_failure };
  Outcome outcome = Outcome::permanent_failure;
  long http_status = 0;
  std::string message;  // for failures: what happened, naming the URL
  bool resumed = false;  // the server honoured a range request
  bool host_unreachable = false;  // no name resolution or no connection: likely no network at all
  bool write_failed = false;      // the file could not be written (a full disk): nothing to resume
};

struct HttpDownloadLimits {
  long connect_timeout_seconds = 15;
  long stall_timeout_seconds = 30;
};

// Appends to `fd` (an open file whose current size is the resume offset). On a server that ignores the
// range and sends the whole body, the file is truncated and rewritten from the start.
HttpDownloadResult http_download(const std::string& url, int fd, const HttpDownloadLimits& limits,
                                 ProgressTask* progress);

}  // namespace aggrik8s
