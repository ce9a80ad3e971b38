#pragma once
// libcurl's process-wide set-up and the options every transfer of this tool shares (downloads in
// core/http_download.cpp, Proxmox API calls in deploy/proxmox/proxmox_client.cpp), kept in one place.
#include <curl/curl.h>

#include <memory>

namespace aggrik8s {

using CurlHandle = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;

// A new easy handle (nullptr when libcurl cannot make one) set up for http and https only, our
// User-Agent, no signals (transfers run on threads: no SIGALRM-based DNS timeouts) and the connect
// timeout. curl_global_init runs once, before the first handle.
CurlHandle new_curl_handle(long connect_timeout_seconds);

}  // namespace aggrik8s
