#include "netboot/http/http_server.hpp"

#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <algorithm>
#include <set>
#include <sstream>
#include <type_traits>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"  // see netboot/asio.hpp
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#pragma GCC diagnostic pop

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/log_escape.hpp"
#include "netboot/http/http_request_target.hpp"
#include "netboot/http/http_tls_context.hpp"
#include "netboot/listen_failure.hpp"

namespace aggrik8s::netboot {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

// One sendfile() call moves at most this much, so a fast client cannot keep the io_context thread
// away from everyone else for long.
constexpr std::size_t sendfile_chunk = 4 * 1024 * 1024;
// Through TLS the bytes must pass through this process (sendfile cannot encrypt): read this much with
// pread(2), write it through the TLS stream, repeat. Big enough for full 16 KiB TLS records and few
// system calls, small enough to hold one per connection.
constexpr std::size_t tls_file_chunk = 256 * 1024;
// How long a closing TLS connection waits for the client's close_notify after sending its own; clients
// that simply drop the connection (most do) end it sooner.
constexpr std::chrono::milliseconds tls_close_wait{2000};

using TlsStream = asio::ssl::stream<tcp::socket>;

std::string describe(const tcp::endpoint& endpoint) {
  std::ostringstream out;
  out << endpoint;
  return out.str();
}

}  // namespace

// What the server needs of a connection of either kind (plain or TLS) to stop it.
class HttpConnectionBase {
 public:
  virtual ~HttpConnectionBase() = default;
  virtual void abort() = 0;
};

struct HttpServer::State {
  State(asio::io_context& io_context, HttpServerConfig server_config)
      : io(io_context), config(std::move(server_config)), acceptor(io_context) {}
  asio::io_context& io;
  HttpServerConfig config;
  tcp::acceptor acceptor;
  tcp::endpoint listening_on;
  bool stopping = false;                  // io thread only
  std::set<HttpConnectionBase*> connections;  // io thread only
  std::atomic<std::uint64_t> accepted{0}, active{0}, requests{0}, rejected{0}, bytes_sent{0};
};

// One connection, over a plain socket (tcp::socket) or TLS (TlsStream): the protocol code is the same,
// only the handshake, the closing and how a file body is sent differ (`if constexpr (tls)`).
template <typename Stream>
class HttpConnection : public HttpConnectionBase, public std::enable_shared_from_this<HttpConnection<Stream>> {
  static constexpr bool tls = std::is_same_v<Stream, TlsStream>;

 public:
  HttpConnection(std::shared_ptr<HttpServer::State> state, tcp::socket socket, std::shared_ptr<HttpTlsContext> tls_context)
      : state_(std::move(state)),
        tls_context_(std::move(tls_context)),
        stream_(open_stream(std::move(socket), tls_context_.get())),
        watchdog_(state_->io) {
    boost::system::error_code ec;
    auto peer = tcp_socket().remote_endpoint(ec);
    if (!ec) peer_ = peer;
  }

  static asio::awaitable<void> run(std::shared_ptr<HttpConnection> self) {
    self->state_->connections.insert(self.get());
    ++self->state_->active;
    try {
      co_await self->serve();
      if constexpr (tls) co_await self->close_tls();
    } catch (const std::exception& e) {
      log::warning("http: ", describe(self->peer_), ": connection failed: ", log_escape(e.what()));
    }
    --self->state_->active;
    self->state_->connections.erase(self.get());
    self->watchdog_.cancel();
    boost::system::error_code ignored;
    self->tcp_socket().shutdown(tcp::socket::shutdown_both, ignored);
    self->tcp_socket().close(ignored);
  }

  void abort() override {
    watchdog_.cancel();
    boost::system::error_code ignored;
    tcp_socket().cancel(ignored);
  }

 private:
  static Stream open_stream(tcp::socket&& socket, HttpTlsContext* tls_context) {
    if constexpr (tls) {
      return Stream(std::move(socket), tls_context->native());
    } else {
      (void)tls_context;
      return std::move(socket);
    }
  }

  tcp::socket& tcp_socket() {
    if constexpr (tls) {
      return stream_.next_layer();
    } else {
      return stream_;
    }
  }

  // The handshake gets the request timeout, like a header: a client that connects and says nothing
  // holds a connection no longer over TLS than over plain HTTP.
  asio::awaitable<bool> handshake() {
    set_deadline(state_->config.request_timeout);
    boost::system::error_code ec;
    co_await stream_.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      // Most often a client that does not trust the certificate (curl without the CA): it aborts the
      // handshake with an alert, which names the reason here.
      ++state_->rejected;
      log::info("http: ", describe(peer_), ": TLS handshake failed: ",
                expired_ ? std::string("no handshake within the request timeout") : log_escape(ec.message()));
      co_return false;
    }
    handshake_done_ = true;
    co_return true;
  }

  // close_notify, so the client can tell the end of the connection from a cut one.
  asio::awaitable<void> close_tls() {
    if (!handshake_done_ || state_->stopping || expired_) co_return;
    set_deadline(tls_close_wait);
    boost::system::error_code ignored;
    co_await stream_.async_shutdown(asio::redirect_error(asio::use_awaitable, ignored));
  }

  asio::awaitable<void> serve() {
    const auto& config = state_->config;
    if constexpr (tls) {
      if (!co_await handshake()) co_return;
    }
    boost::beast::flat_buffer buffer;
    bool first = true;
    while (!state_->stopping) {
      // The header must arrive within request_timeout of the first byte being awaited: a client that
      // trickles one byte a second (slowloris) is cut off like one that sends nothing.
      set_deadline(first ? config.request_timeout : config.idle_timeout + config.request_timeout);
      first = false;
      http::request_parser<http::empty_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(config.header_limit));
      parser.body_limit(0);
      boost::system::error_code ec;
      co_await http::async_read(stream_, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        // Parameters by value (GCC 12 and coroutine references, see send_simple): the method, when the
        // header was read, so a body is refused for what it was sent with.
        std::string method = parser.got_some() ? std::string(parser.get().method_string()) : std::string();
        co_await reject_read(ec, parser.got_some() || buffer.size() > 0, std::move(method));
        co_return;
      }
      auto& request = parser.get();
      HttpRequestInfo info;
      info.client = peer_.address();
      info.method = std::string(request.method_string());
      info.target = std::string(request.target());
      if (auto range = request.find(http::field::range); range != request.end()) info.range = std::string(range->value());
      if (auto if_range = request.find(http::field::if_range); if_range != request.end()) {
        info.if_range = std::string(if_range->value());
      }
      auto header = [&request](http::field field) {
        auto found = request.find(field);
        return found == request.end() ? std::string() : std::string(found->value());
      };
      info.conditions = {header(http::field::if_match), header(http::field::if_none_match),
                         header(http::field::if_modified_since), header(http::field::if_unmodified_since)};
      if (auto agent = request.find(http::field::user_agent); agent != request.end()) {
        info.user_agent = std::string(agent->value());
      }
      bool keep_alive = request.keep_alive();
      // RFC 9112 3.2: an HTTP/1.1 request without exactly one Host field MUST get 400.
      if (request.version() >= 11 && request.count(http::field::host) != 1) {
        std::string why = request.count(http::field::host) == 0 ? "HTTP/1.1 request without a Host header"
                                                                  : "request with more than one Host header";
        co_await send_simple(400, "bad request: " + why + "\n", false, {});
        state_->config.handler->rejected(info.client, 400, why);
        ++state_->rejected;
        co_return;
      }
      if (request.method() != http::verb::get && request.method() != http::verb::head) {
        std::vector<std::pair<std::string, std::string>> allow{{"Allow", "GET, HEAD"}};
        co_await send_simple(405, std::string("method not allowed\n"), false, std::move(allow));
        state_->config.handler->rejected(info.client, 405, "method " + info.method);
        ++state_->rejected;
        co_return;
      }
      ++state_->requests;
      auto started = Clock::now();
      HttpReply reply;
      try {
        reply = state_->config.handler->handle(info);
      } catch (const std::exception& e) {
        // A handler's failure is this request's, answered and counted like any other error; the
        // connection and the server go on.
        log::warning("http: ", describe(peer_), ": ", info.method, " ", log_escape(info.target), ": internal error: ",
                     log_escape(e.what()));
        reply = HttpReply{};
        reply.status = 500;
        reply.body = "internal server error\n";
        reply.route = "error";
      }
      HttpExchange exchange;
      exchange.request = info;
      exchange.route = reply.route;
      exchange.node = reply.node;
      exchange.step = reply.step;
      bool ok = reply.file ? co_await send_file(info, reply, exchange) : co_await send_reply(info, reply, exchange);
      exchange.duration = Clock::now() - started;
      state_->bytes_sent += exchange.bytes_sent;
      state_->config.handler->finished(exchange);
      if (!ok || !keep_alive || state_->stopping) co_return;
    }
  }

  asio::awaitable<void> reject_read(boost::system::error_code ec, bool got_some, std::string method) {
    auto& handler = *state_->config.handler;
    if (expired_) {
      if (got_some) {
        ++state_->rejected;
        handler.rejected(peer_.address(), 408, "request header not received within the timeout");
        expired_ = false;
        co_await send_simple(408, std::string("request timeout\n"), false, {});
      }
      co_return;  // an idle keep-alive connection simply ends
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ||
        ec == asio::ssl::error::stream_truncated) {
      co_return;
    }
    ++state_->rejected;
    if (ec == http::error::header_limit) {
      handler.rejected(peer_.address(), 431, "request header larger than " + std::to_string(state_->config.header_limit) +
                                                 " bytes");
      co_await send_simple(431, std::string("request header fields too large\n"), false, {});
      co_return;
    }
    if ((ec == http::error::body_limit || ec == http::error::unexpected_body) && !method.empty() && method != "GET" &&
        method != "HEAD") {
      // A POST or PUT with a body is refused for its method, as one without (RFC 9110 15.5.6), not its body.
      handler.rejected(peer_.address(), 405, "method " + method);
      std::vector<std::pair<std::string, std::string>> allow{{"Allow", "GET, HEAD"}};
      co_await send_simple(405, std::string("method not allowed\n"), false, std::move(allow));
      co_return;
    }
    if (ec == http::error::body_limit || ec == http::error::unexpected_body) {
      handler.rejected(peer_.address(), 413, "request with a body");
      co_await send_simple(413, std::string("request bodies are not accepted\n"), false, {});
      co_return;
    }
    handler.rejected(peer_.address(), 400, "malformed request: " + ec.message());
    co_await send_simple(400, std::string("bad request\n"), false, {});
  }

  // Parameters by value: GCC 12 miscompiles coroutine reference parameters bound to string literals.
  asio::awaitable<bool> send_simple(unsigned status, std::string body, bool keep_alive,
                                    std::vector<std::pair<std::string, std::string>> headers) {
    HttpReply reply;
    reply.status = status;
    reply.body = std::move(body);
    reply.headers = std::move(headers);
    HttpRequestInfo info;
    info.method = "GET";
    HttpExchange ignored;
    bool ok = co_await send_reply(info, reply, ignored, keep_alive);
    co_return ok;
  }

  template <typename Response>
  void add_headers(Response& response, const HttpReply& reply) {
    response.set(http::field::server, "aggrik8s-image");
    response.set(http::field::date, format_http_date(::time(nullptr)));  // RFC 9110 6.6.1: a server with a clock MUST
    response.set(http::field::content_type, reply.content_type);
    for (const auto& [name, value] : reply.headers) response.set(name, value);
  }

  asio::awaitable<bool> send_reply(const HttpRequestInfo& info, HttpReply& reply, HttpExchange& exchange,
                                   bool keep_alive = true) {
    exchange.status = reply.status;
    exchange.bytes_expected = info.head() ? 0 : reply.body.size();
    set_deadline(state_->config.idle_timeout);
    boost::system::error_code ec;
    if (info.head()) {
      http::response<http::empty_body> response{static_cast<http::status>(reply.status), 11};
      add_headers(response, reply);
      response.content_length(reply.body.size());
      response.keep_alive(keep_alive);
      co_await http::async_write(stream_, response, asio::redirect_error(asio::use_awaitable, ec));
    } else {
      http::response<http::string_body> response{static_cast<http::status>(reply.status), 11};
      add_headers(response, reply);
      response.body() = std::move(reply.body);
      response.prepare_payload();
      response.keep_alive(keep_alive);
      co_await http::async_write(stream_, response, asio::redirect_error(asio::use_awaitable, ec));
      if (!ec) exchange.bytes_sent = response.body().size();
    }
    if (ec) {
      exchange.detail = expired_ ? "client stopped reading" : ec.message();
      co_return false;
    }
    exchange.completed = true;
    co_return true;
  }

  asio::awaitable<bool> send_file(const HttpRequestInfo& info, HttpReply& reply, HttpExchange& exchange) {
    http::response<http::empty_body> response;
    response.version(11);
    add_headers(response, reply);
    response.set(http::field::accept_ranges, "bytes");
    // Validators, so a client resuming a download (Range with If-Range) never splices two versions of
    // a file that was rebuilt in between: a strong ETag from the inode, size and modification time (a
    // rebuilt image is a new inode: outputs are renamed into place), and Last-Modified.
    std::string etag, last_modified;
    std::int64_t modified = 0;
    if (struct stat info_stat {}; ::fstat(reply.file.get(), &info_stat) == 0) {
      modified = info_stat.st_mtim.tv_sec;
      char tag[80];
      std::snprintf(tag, sizeof tag, "\"%llx-%llx-%llx.%lx\"", static_cast<unsigned long long>(info_stat.st_ino),
                    static_cast<unsigned long long>(reply.file_size), static_cast<unsigned long long>(info_stat.st_mtim.tv_sec),
                    static_cast<unsigned long>(info_stat.st_mtim.tv_nsec));
      etag = tag;
      last_modified = format_http_date(info_stat.st_mtim.tv_sec);
      response.set(http::field::etag, etag);
      response.set(http::field::last_modified, last_modified);
    }
    // RFC 9110 13.1-13.2: a failed If-Match / If-Unmodified-Since is 412 (a client resuming with
    // If-Match must not get a rebuilt file's bytes spliced onto the old ones); a matching
    // If-None-Match / If-Modified-Since is 304 (a cache revalidating gets no body). Only for 200.
    HttpPreconditionResult precondition = reply.status == 200 && !etag.empty()
                                              ? evaluate_http_preconditions(info.conditions, etag, modified)
                                              : HttpPreconditionResult::proceed;
    std::uint64_t first = 0;
    std::uint64_t length = reply.file_size;
    if (precondition != HttpPreconditionResult::proceed) {
      bool failed = precondition == HttpPreconditionResult::failed;
      response.result(failed ? http::status::precondition_failed : http::status::not_modified);
      response.erase(http::field::accept_ranges);
      length = 0;
      // A 304 has no body and no Content-Length of its own (RFC 9110 8.6: it would be the 200's).
      if (failed) response.content_length(0);
    } else {
      // RFC 9110 13.1.5: a Range whose If-Range does not match is ignored (the whole file, 200).
      bool range_allowed = info.if_range.empty() || http_if_range_allows_range(info.if_range, etag, last_modified);
      HttpRangeRequest range =
          parse_http_range(range_allowed ? std::string_view(info.range) : std::string_view(), reply.file_size);
      switch (range.kind) {
        case HttpRangeKind::whole:
          response.result(static_cast<http::status>(reply.status));
          break;
        case HttpRangeKind::partial:
          response.result(http::status::partial_content);
          first = range.range.first;
          length = range.range.length();
          response.set(http::field::content_range, "bytes " + std::to_string(range.range.first) + "-" +
                                                       std::to_string(range.range.last) + "/" +
                                                       std::to_string(reply.file_size));
          break;
        case HttpRangeKind::unsatisfiable:
          response.result(http::status::range_not_satisfiable);
          response.set(http::field::content_range, "bytes */" + std::to_string(reply.file_size));
          length = 0;
          break;
      }
      response.content_length(length);
    }
    response.keep_alive(true);
    exchange.status = response.result_int();
    exchange.bytes_expected = info.head() ? 0 : length;
    set_deadline(state_->config.idle_timeout);
    boost::system::error_code ec;
    co_await http::async_write(stream_, response, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      exchange.detail = expired_ ? "client stopped reading" : ec.message();
      co_return false;
    }
    if (info.head() || length == 0) {
      exchange.completed = true;
      co_return true;
    }

    bool sent = tls ? co_await send_file_body_through_tls(reply, first, length, exchange)
                    : co_await send_file_body_with_sendfile(reply, first, length, exchange);
    if (!sent) co_return false;
    exchange.completed = true;
    co_return true;
  }

  asio::awaitable<bool> send_file_body_through_tls(const HttpReply& reply, std::uint64_t first, std::uint64_t length,
                                                   HttpExchange& exchange) {
    std::vector<char> chunk(static_cast<std::size_t>(std::min<std::uint64_t>(length, tls_file_chunk)));
    auto offset = static_cast<off_t>(first);
    std::uint64_t remaining = length;
    while (remaining > 0) {
      if (state_->stopping) {
        exchange.detail = "server stopping";
        co_return false;
      }
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, chunk.size()));
      ssize_t got = ::pread(reply.file.get(), chunk.data(), want, offset);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        exchange.detail = got == 0 ? "file shorter than its announced length" : std::strerror(errno);
        co_return false;
      }
      set_deadline(state_->config.idle_timeout);
      boost::system::error_code ec;
      co_await asio::async_write(stream_, asio::buffer(chunk.data(), static_cast<std::size_t>(got)),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        exchange.detail = expired_ ? "client stopped reading" : ec.message();
        co_return false;
      }
      offset += got;
      remaining -= static_cast<std::uint64_t>(got);
      exchange.bytes_sent += static_cast<std::uint64_t>(got);
    }
    co_return true;
  }

  asio::awaitable<bool> send_file_body_with_sendfile(const HttpReply& reply, std::uint64_t first, std::uint64_t length,
                                                     HttpExchange& exchange) {
    // sendfile(2): the kernel copies from the page cache to the socket, as nginx does; nothing of the
    // file passes through this process. The socket is non-blocking; a full send buffer is waited for
    // on the io_context, with the idle timeout restarted whenever bytes move.
    boost::system::error_code ec;
    tcp::socket& socket = tcp_socket();
    socket.non_blocking(true);
    auto offset = static_cast<off_t>(first);
    std::uint64_t remaining = length;
    while (remaining > 0) {
      if (state_->stopping) {
        exchange.detail = "server stopping";
        co_return false;
      }
      std::size_t chunk = remaining < sendfile_chunk ? static_cast<std::size_t>(remaining) : sendfile_chunk;
      ssize_t sent = ::sendfile(socket.native_handle(), reply.file.get(), &offset, chunk);
      if (sent > 0) {
        remaining -= static_cast<std::uint64_t>(sent);
        exchange.bytes_sent += static_cast<std::uint64_t>(sent);
        set_deadline(state_->config.idle_timeout);
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        co_await socket.async_wait(tcp::socket::wait_write, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
          exchange.detail = expired_ ? "client stopped reading" : ec.message();
          co_return false;
        }
        continue;
      }
      exchange.detail = sent == 0 ? "file shorter than its announced length" : std::strerror(errno);
      co_return false;
    }
    co_return true;
  }

  // One timer per connection, re-armed lazily (deadlines only move forward): when the deadline really
  // passes it cancels whatever the connection waits for, which then sees operation_aborted.
  void set_deadline(std::chrono::milliseconds from_now) {
    deadline_ = Clock::now() + from_now;
    expired_ = false;
    arm_watchdog();
  }

  void arm_watchdog() {
    if (watchdog_armed_) return;
    watchdog_armed_ = true;
    watchdog_.expires_at(deadline_);
    watchdog_.async_wait([self = this->shared_from_this()](const boost::system::error_code& ec) {
      self->watchdog_armed_ = false;
      if (ec || self->state_->stopping || !self->tcp_socket().is_open()) return;
      if (Clock::now() < self->deadline_) {
        self->arm_watchdog();
        return;
      }
      self->expired_ = true;
      boost::system::error_code ignored;
      self->tcp_socket().cancel(ignored);
    });
  }

  std::shared_ptr<HttpServer::State> state_;
  // Held so a reload that replaces the server's context does not free this connection's.
  std::shared_ptr<HttpTlsContext> tls_context_;
  Stream stream_;
  asio::steady_timer watchdog_;
  tcp::endpoint peer_;
  Clock::time_point deadline_{};
  bool watchdog_armed_ = false;
  bool expired_ = false;
  bool handshake_done_ = false;
};

namespace {

asio::awaitable<void> accept_connections(std::shared_ptr<HttpServer::State> state) {
  while (!state->stopping) {
    boost::system::error_code ec;
    tcp::socket socket = co_await state->acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (state->stopping || ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) break;
    if (ec) {
      // EMFILE and friends: say so and keep accepting; the connections in flight are unaffected.
      log::warning("http: accept failed: ", ec.message());
      asio::steady_timer pause(state->io, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    ++state->accepted;
    if (state->connections.size() >= state->config.max_connections) {
      boost::system::error_code ignored;
      auto peer = socket.remote_endpoint(ignored);
      ++state->rejected;
      if (state->config.tls) {
        // A reply would need a TLS handshake first, which is the work being refused.
        state->config.handler->rejected(peer.address(), 503, "too many connections: closed before the TLS handshake, no reply");
      } else {
        // One short reply, written without waiting: a client that does not read it loses it, nothing more.
        static constexpr std::string_view busy =
            "HTTP/1.1 503 Service Unavailable\r\nServer: aggrik8s-image\r\nRetry-After: 1\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\nConnection: close\r\n\r\n"
            "too many connections\n";
        socket.non_blocking(true, ignored);
        socket.write_some(asio::buffer(busy.data(), busy.size()), ignored);
        socket.shutdown(tcp::socket::shutdown_send, ignored);
        state->config.handler->rejected(peer.address(), 503, "too many connections");
      }
      socket.close(ignored);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    if (state->config.tls) {
      auto connection = std::make_shared<HttpConnection<TlsStream>>(state, std::move(socket), state->config.tls);
      asio::co_spawn(state->io, HttpConnection<TlsStream>::run(std::move(connection)), asio::detached);
    } else {
      auto connection = std::make_shared<HttpConnection<tcp::socket>>(state, std::move(socket), nullptr);
      asio::co_spawn(state->io, HttpConnection<tcp::socket>::run(std::move(connection)), asio::detached);
    }
  }
}

}  // namespace

HttpServer::HttpServer(asio::io_context& io, HttpServerConfig config)
    : state_(std::make_shared<State>(io, std::move(config))) {
  if (!state_->config.handler) throw Error("HTTP server needs a handler");
  // sendfile(2) to a socket whose peer has gone raises SIGPIPE (unlike send(), it has no MSG_NOSIGNAL);
  // the error code is what the server wants, not the death of the process.
  std::signal(SIGPIPE, SIG_IGN);
  boost::system::error_code ec;
  state_->acceptor.open(state_->config.listen.protocol(), ec);
  if (!ec) state_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) state_->acceptor.bind(state_->config.listen, ec);
  if (!ec) state_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    ListenFailure failure{"HTTP", describe(state_->config.listen), state_->config.listen.port(), false,
                          "http.port or http.tls_port (--http-port)", {}, "a web server or another serve"};
    throw Error(listen_failure_message(failure, ec.value(), ec.message()));
  }
  state_->listening_on = state_->acceptor.local_endpoint();
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() { asio::co_spawn(state_->io, accept_connections(state_), asio::detached); }

void HttpServer::stop() {
  asio::post(state_->io, [state = state_]() {
    if (state->stopping) return;
    state->stopping = true;
    boost::system::error_code ignored;
    state->acceptor.close(ignored);
    for (HttpConnectionBase* connection : state->connections) connection->abort();
  });
}

void HttpServer::set_tls(std::shared_ptr<HttpTlsContext> tls) {
  asio::post(state_->io, [state = state_, tls = std::move(tls)]() mutable { state->config.tls = std::move(tls); });
}

tcp::endpoint HttpServer::local_endpoint() const { return state_->listening_on; }

HttpServerCounters HttpServer::counters() const {
  const auto& s = *state_;
  return HttpServerCounters{s.accepted, s.active, s.requests, s.rejected, s.bytes_sent};
}

}  // namespace aggrik8s::netboot
