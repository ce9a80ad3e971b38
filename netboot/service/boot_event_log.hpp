#pragma once
// The boot event log: one JSON object per line for every step a node takes (TFTP file, boot script,
// kernel, config), so "what did node X fetch, and did it get it" is a grep or a jq away. Also the
// status page's source of "last step" per node.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>

namespace aggrik8s::netboot {

struct BootEvent {
  std::chrono::system_clock::time_point time{};
  std::string node;    // "" for an unknown machine
  std::string client;  // address
  std::string step;    // "tftp", "ipxe-script", "asset", "talos-config", "cloud-init", "rke2-config", ...
  std::string file;
  std::uint64_t bytes = 0;
  std::string result;  // "ok", "probe", "failed", "refused", "not-found"
  std::chrono::milliseconds duration{0};
  std::string detail;
};

std::string boot_event_json(const BootEvent& event);

class BootEventLog {
 public:
  // No path: events are dropped (the status page still sees them through the service).
  explicit BootEventLog(std::optional<std::filesystem::path> path);
  void write(const BootEvent& event);
  // After logrotate moved the file (SIGHUP): opens the path again.
  void reopen();

 private:
  std::mutex mutex_;
  std::optional<std::filesystem::path> path_;
  std::ofstream out_;
};

}  // namespace aggrik8s::netboot
