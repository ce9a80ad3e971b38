#include "tests/loopback_http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace aggrik8s::test {
namespace {

void send_all(int fd, const char* data, std::size_t length) {
  while (length > 0) {
    ssize_t n = ::send(fd, data, length, MSG_NOSIGNAL);
    if (n <= 0) return;
    data += n;
    length -= static_cast<std::size_t>(n);
  }
}

}  // namespace

LoopbackHttpServer::LoopbackHttpServer() {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener_ < 0) throw std::runtime_error("test server: socket failed");
  int one = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listener_, 64) != 0) {
    throw std::runtime_error("test server: bind/listen on 127.0.0.1 failed");
  }
  socklen_t length = sizeof address;
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

LoopbackHttpServer::~LoopbackHttpServer() {
  stopping_ = true;
  ::shutdown(listener_, SHUT_RDWR);
  acceptor_.join();
  ::close(listener_);
  std::lock_guard lock(mutex_);
  for (auto& w : workers_) w.join();
}

void LoopbackHttpServer::serve(const std::string& path, LoopbackResponse response) {
  std::lock_guard lock(mutex_);
  routes_[path] = std::move(response);
}

std::string LoopbackHttpServer::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

std::vector<std::string> LoopbackHttpServer::ranges_requested(const std::string& path) {
  std::lock_guard lock(mutex_);
  return requests_[path];
}

int LoopbackHttpServer::request_count(const std::string& path) {
  std::lock_guard lock(mutex_);
  return static_cast<int>(requests_[path].size());
}

void LoopbackHttpServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listener_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    std::lock_guard lock(mutex_);
    workers_.emplace_back([this, client] { handle(client); });
  }
}

void LoopbackHttpServer::handle(int client) {
  std::string request;
  char buffer[4096];
  while (request.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
    if (n <= 0) {
      ::close(client);
      return;
    }
    request.append(buffer, static_cast<std::size_t>(n));
  }
  auto first_space = request.find(' ');
  auto second_space = request.find(' ', first_space + 1);
  std::string method = request.substr(0, first_space);
  std::string path = request.substr(first_space + 1, second_space - first_space - 1);
  std::string range;
  if (auto r = request.find("\r\nRange: bytes="); r != std::string::npos) {
    auto start = r + 15;
    range = request.substr(start, request.find("\r\n", start) - start);
  }

  LoopbackResponse response;
  bool found = false;
  bool drop = false;
  bool fail = false;
  {
    std::lock_guard lock(mutex_);
    requests_[path].push_back(range);
    if (auto it = routes_.find(path); it != routes_.end()) {
      found = true;
      if (it->second.fail_count > 0) {
        --it->second.fail_count;
        fail = true;
      } else if (it->second.drop_count > 0) {
        --it->second.drop_count;
        drop = true;
      }
      response = it->second;
    }
  }
  std::string head;
  std::string body;
  if (!found || fail || response.status != 200) {
    int status = !found ? 404 : fail ? response.fail_status : response.status;
    body = "error " + std::to_string(status) + "\n";
    head = "HTTP/1.1 " + std::to_string(status) + " Error\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n";
  } else {
    std::size_t offset = 0;
    if (!range.empty() && !response.ignore_range) offset = std::stoul(range.substr(0, range.find('-')));
    if (offset > response.body.size()) {
      head = "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */" + std::to_string(response.body.size()) +
             "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    } else {
      body = response.body.substr(offset);
      if (offset > 0) {
        head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(offset) + "-" +
               std::to_string(response.body.size() - 1) + "/" + std::to_string(response.body.size()) + "\r\n";
      } else {
        head = "HTTP/1.1 200 OK\r\n";
      }
      head += "Content-Type: " + response.content_type + "\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n";
      if (drop && response.drop_after < body.size()) body.resize(response.drop_after);
    }
  }
  send_all(client, head.data(), head.size());
  if (method != "HEAD") send_all(client, body.data(), body.size());
  ::shutdown(client, SHUT_RDWR);
  ::close(client);
}

}  // namespace aggrik8s::test
