#pragma once
// The netboot service in-process for integration tests: started on construction with its own
// io_context thread, stopped and joined on destruction. Ports come from the service (tests bind 0).
#include <memory>
#include <string>
#include <thread>

#include "netboot/service/netboot_service.hpp"

namespace aggrik8s::test {

class RunningNetbootService {
 public:
  explicit RunningNetbootService(netboot::NetbootConfig config) {
    service_ = std::make_unique<netboot::NetbootService>(io_, std::move(config));
    service_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningNetbootService() {
    service_->stop();
    thread_.join();
  }
  RunningNetbootService(const RunningNetbootService&) = delete;
  RunningNetbootService& operator=(const RunningNetbootService&) = delete;

  std::string http() const { return "http://127.0.0.1:" + std::to_string(service_->http_endpoint()->port()); }
  std::string https() const { return "https://127.0.0.1:" + std::to_string(service_->https_endpoint()->port()); }
  std::uint16_t http_port() const { return service_->http_endpoint()->port(); }
  std::string tftp_host() const { return "127.0.0.1 " + std::to_string(service_->tftp_endpoint()->port()); }
  netboot::NetbootService& service() { return *service_; }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<netboot::NetbootService> service_;
  std::thread thread_;
};

}  // namespace aggrik8s::test
