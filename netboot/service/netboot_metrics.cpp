#include "netboot/service/netboot_metrics.hpp"

#include <ctime>

namespace aggrik8s::netboot {

namespace {

const std::map<std::string, std::string>& help_texts() {
  static const std::map<std::string, std::string> help{
      {"aggrik8s_http_requests_total", "HTTP requests answered, by route and status"},
      {"aggrik8s_http_sent_bytes_total", "HTTP body bytes sent"},
      {"aggrik8s_tftp_transfers_total", "TFTP transfers ended, by result"},
      {"aggrik8s_tftp_sent_bytes_total", "TFTP payload bytes sent in completed transfers"},
      {"aggrik8s_boot_steps_total", "Boot steps by node, step and result"},
      {"aggrik8s_errors_total", "Requests refused or failed, by kind"},
      {"aggrik8s_reloads_total", "Configuration reloads, by result"},
      {"aggrik8s_inventory_nodes", "Nodes in the inventory"},
      {"aggrik8s_http_connections_active", "Open HTTP connections"},
      {"aggrik8s_tftp_transfers_active", "TFTP transfers in progress"},
      {"aggrik8s_tftp_retransmissions_total", "TFTP windows and OACKs resent after a timeout"},
      {"aggrik8s_tftp_malformed_total", "TFTP datagrams that did not parse, on any socket"},
      {"aggrik8s_dhcp_received_total", "DHCP requests received, by message type"},
      {"aggrik8s_dhcp_sent_total", "DHCP replies sent, by message type"},
      {"aggrik8s_dhcp_dropped_total", "DHCP requests that got no reply, by reason"},
      {"aggrik8s_dhcp_journal_writes_total", "Lease journal writes: fdatasync'ed appends and compactions"},
      {"aggrik8s_dhcp_leases_active", "Granted DHCP leases not yet expired"},
      {"aggrik8s_dhcp_leases_total", "DHCP leases granted (ACKs after the lease was on disk)"},
  };
  return help;
}

std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void render_family(std::string& out, const std::string& name, const char* type,
                   const std::map<NetbootMetrics::Labels, std::uint64_t>& series) {
  auto help = help_texts().find(name);
  if (help != help_texts().end()) out += "# HELP " + name + " " + help->second + "\n";
  out += "# TYPE " + name + " " + type + "\n";
  for (const auto& [labels, value] : series) {
    out += name;
    if (!labels.empty()) {
      out += '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) out += ',';
        out += labels[i].first + "=\"" + escape_label(labels[i].second) + "\"";
      }
      out += '}';
    }
    out += " " + std::to_string(value) + "\n";
  }
}

std::string format_time(std::chrono::system_clock::time_point time) {
  if (time == std::chrono::system_clock::time_point{}) return "";
  std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &parts);
  return text;
}

}  // namespace

void NetbootMetrics::add(const std::string& name, const Labels& labels, std::uint64_t value) {
  std::lock_guard lock(mutex_);
  counters_[name][labels] += value;
}

void NetbootMetrics::set_gauge(const std::string& name, const Labels& labels, std::uint64_t value) {
  std::lock_guard lock(mutex_);
  gauges_[name][labels] = value;
}

void NetbootMetrics::set_counter(const std::string& name, const Labels& labels, std::uint64_t value) {
  std::lock_guard lock(mutex_);
  counters_[name][labels] = value;
}

void NetbootMetrics::boot_step(const BootEvent& event) {
  std::string node = event.node.empty() ? "unknown" : event.node;
  add("aggrik8s_boot_steps_total", {{"node", node}, {"step", event.step}, {"result", event.result}});
  std::lock_guard lock(mutex_);
  // Unknown machines are listed by address so an operator can see who is knocking.
  std::string key = event.node.empty() ? "unknown@" + event.client : event.node;
  auto& status = last_[key];
  status.node = event.node.empty() ? "(unknown)" : event.node;
  status.address = event.client;
  status.last_step = event.step;
  status.last_file = event.file;
  status.last_result = event.result;
  status.last_time = event.time;
}

std::string NetbootMetrics::prometheus_text() const {
  std::lock_guard lock(mutex_);
  return render_prometheus(counters_, gauges_);
}

std::vector<NodeBootStatus> NetbootMetrics::last_steps() const {
  std::lock_guard lock(mutex_);
  std::vector<NodeBootStatus> out;
  for (const auto& [key, status] : last_) out.push_back(status);
  return out;
}

std::string render_prometheus(const std::map<std::string, std::map<NetbootMetrics::Labels, std::uint64_t>>& counters,
                              const std::map<std::string, std::map<NetbootMetrics::Labels, std::uint64_t>>& gauges) {
  std::string out;
  for (const auto& [name, series] : counters) render_family(out, name, "counter", series);
  for (const auto& [name, series] : gauges) render_family(out, name, "gauge", series);
  return out;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string render_status_page(const std::vector<NodeBootStatus>& nodes, const std::string& summary) {
  std::string out =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>aggrik8s-image netboot</title>\n"
      "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
      "padding:2px 8px}.failed,.refused,.not-found{color:#b00}.ok{color:#070}</style></head><body>\n"
      "<h1>aggrik8s-image netboot</h1>\n<p>" +
      html_escape(summary) +
      "</p>\n<table>\n<tr><th>node</th><th>profile</th><th>address</th><th>last step</th><th>file</th>"
      "<th>result</th><th>when</th></tr>\n";
  for (const auto& node : nodes) {
    out += "<tr><td>" + html_escape(node.node) + "</td><td>" + html_escape(node.profile) + "</td><td>" +
           html_escape(node.address) + "</td><td>" + html_escape(node.last_step) + "</td><td>" +
           html_escape(node.last_file) + "</td><td class=\"" + html_escape(node.last_result) + "\">" +
           html_escape(node.last_result) + "</td><td>" + format_time(node.last_time) + "</td></tr>\n";
  }
  out += "</table>\n<p><a href=\"/metrics\">metrics</a></p>\n</body></html>\n";
  return out;
}

}  // namespace aggrik8s::netboot
