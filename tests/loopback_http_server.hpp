#pragma once
// A deliberately misbehaving HTTP/1.1 server on 127.0.0.1 for fetch tests: each path can serve its
// bytes normally (with Range support), drop the connection part-way, serve other bytes, fail with a
// status a few times first, or ignore Range requests. One thread per connection; stops in the
// destructor.
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace aggrik8s::test {

struct LoopbackResponse {
  std::string body;
  int status = 200;
  // Close the connection after this many body bytes for the first `drop_count` requests.
  std::size_t drop_after = 0;
  int drop_count = 0;
  // Answer `fail_status` for the first `fail_count` requests.
  int fail_status = 503;
  int fail_count = 0;
  bool ignore_range = false;
  std::string content_type = "application/octet-stream";
};

class LoopbackHttpServer {
 public:
  LoopbackHttpServer();
  ~LoopbackHttpServer();
  LoopbackHttpServer(const LoopbackHttpServer&) = delete;
  LoopbackHttpServer& operator=(const LoopbackHttpServer&) = delete;

  void serve(const std::string& path, LoopbackResponse response);
  std::string url(const std::string& path) const;
  std::uint16_t port() const { return port_; }
  // Requests seen for a path, and the Range header of each ("" when none).
  std::vector<std::string> ranges_requested(const std::string& path);
  int request_count(const std::string& path);

 private:
  void accept_loop();
  void handle(int client);

  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mutex_;
  std::map<std::string, LoopbackResponse> routes_;
  std::map<std::string, std::vector<std::string>> requests_;
  std::vector<std::thread> workers_;
};

}  // namespace aggrik8s::test
