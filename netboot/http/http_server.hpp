#pragma once
// The HTTP server: Boost.Beast on one io_context, one C++20 coroutine per connection. It owns the
// protocol edge — limits, timeouts, keep-alive, HEAD, Range, streaming files with sendfile(2) — and
// asks an HttpHandler what to answer; routing and access rules live with the handler (the netboot
// service), so this file is the only one that includes Beast.
//
// With a TLS context the listener speaks HTTPS only (one server per port: run two for both): the same
// routes, limits and timeouts, with file bodies read with pread(2) and written through TLS, since
// sendfile(2) cannot encrypt.
//
// Bad input never stops the server: an oversized header gets 431, a malformed request 400, a client too
// slow to send its header 408, one that stops reading or vanishes mid-body is dropped; each is reported
// to the handler (rejected/finished) for the log and /metrics, and the connection alone is closed.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/file_descriptor.hpp"
#include "netboot/asio.hpp"
#include "netboot/http/http_request_target.hpp"
#include "netboot/http/http_tls_context.hpp"

namespace aggrik8s::netboot {

struct HttpRequestInfo {
  boost::asio::ip::address client;
  std::string method;  // "GET" or "HEAD" (others are answered 405 before the handler is asked)
  std::string target;  // as received
  std::string range;   // the Range header, "" when absent
  std::string if_range;  // the If-Range header, "" when absent
  HttpConditions conditions;  // If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since
  std::string user_agent;
  bool head() const { return method == "HEAD"; }
};

struct HttpReply {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // When open, the body is this file's first `file_size` bytes instead, with Range support.
  FileDescriptor file;
  std::uint64_t file_size = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  // Labels the handler gets back in HttpExchange, for its logs and metrics.
  std::string route;
  std::string node;
  std::string step;
};

struct HttpExchange {
  HttpRequestInfo request;
  unsigned status = 0;
  std::string route, node, step;
  std::uint64_t bytes_sent = 0;  // body bytes
  std::uint64_t bytes_expected = 0;
  bool completed = false;  // false: the client vanished or stalled before the body was sent
  std::string detail;      // why it did not complete
  std::chrono::steady_clock::duration duration{};
};

class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  // Runs on the io_context thread for every well-formed GET/HEAD; must not block for long.
  virtual HttpReply handle(const HttpRequestInfo& request) = 0;
  virtual void finished(const HttpExchange& exchange) { (void)exchange; }
  // A request refused before routing (malformed, oversized, too slow, too many connections).
  virtual void rejected(const boost::asio::ip::address& client, unsigned status, const std::string& why) {
    (void)client, (void)status, (void)why;
  }
};

struct HttpServerConfig {
  boost::asio::ip::tcp::endpoint listen{boost::asio::ip::address_v4::loopback(), 80};  // port 0: ephemeral
  std::size_t header_limit = 8192;
  std::chrono::milliseconds request_timeout{10'000};  // to receive one request's header
  std::chrono::milliseconds idle_timeout{30'000};     // between requests, and for a send making no progress
  std::size_t max_connections = 512;
  std::shared_ptr<HttpHandler> handler;
  std::shared_ptr<HttpTlsContext> tls;  // set: HTTPS on this listener; null: plain HTTP
};

struct HttpServerCounters {
  std::uint64_t connections = 0;  // accepted
  std::uint64_t active_connections = 0;
  std::uint64_t requests = 0;  // answered by the handler
  std::uint64_t rejected = 0;  // answered or dropped before the handler
  std::uint64_t bytes_sent = 0;
};

class HttpServer {
 public:
  // Binds now; throws aggrik8s::Error if the address cannot be bound.
  HttpServer(boost::asio::io_context& io, HttpServerConfig config);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void start();
  void stop();  // closes the listener and every connection; run() then returns
  // A renewed certificate (reload): connections accepted from now on use it, those open keep theirs.
  void set_tls(std::shared_ptr<HttpTlsContext> tls);
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  HttpServerCounters counters() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace aggrik8s::netboot
