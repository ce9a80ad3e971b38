#pragma once
// Counters for Prometheus /metrics and the per-node state behind the status page. Rendering is pure
// (text out), so the exposition format and the HTML escaping are unit-testable.
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "netboot/service/boot_event_log.hpp"

namespace aggrik8s::netboot {

struct NodeBootStatus {
  std::string node;
  std::string profile;
  std::string address;
  std::string last_step;
  std::string last_file;
  std::string last_result;
  std::chrono::system_clock::time_point last_time{};
};

class NetbootMetrics {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  void add(const std::string& name, const Labels& labels, std::uint64_t value = 1);
  void set_gauge(const std::string& name, const Labels& labels, std::uint64_t value);
  // A counter whose total is kept elsewhere (the DHCP server's own atomics), copied in before a scrape.
  void set_counter(const std::string& name, const Labels& labels, std::uint64_t value);
  // Every boot step: counted per node and result, and remembered as the node's last step.
  void boot_step(const BootEvent& event);
  std::string prometheus_text() const;
  std::vector<NodeBootStatus> last_steps() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::map<Labels, std::uint64_t>> counters_, gauges_;
  std::map<std::string, NodeBootStatus> last_;
};

// `help` maps metric names to their HELP text; names not in it get none.
std::string render_prometheus(const std::map<std::string, std::map<NetbootMetrics::Labels, std::uint64_t>>& counters,
                              const std::map<std::string, std::map<NetbootMetrics::Labels, std::uint64_t>>& gauges);
std::string html_escape(const std::string& text);
// A status page listing every inventory node (with the last step seen) and unknown machines seen.
std::string render_status_page(const std::vector<NodeBootStatus>& nodes, const std::string& summary);

}  // namespace aggrik8s::netboot
