#include "netboot/service/boot_event_log.hpp"

#include <ctime>
#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace aggrik8s::netboot {

namespace {
std::string utc_iso8601(std::chrono::system_clock::time_point time) {
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  std::time_t seconds = static_cast<std::time_t>(millis / 1000);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[40];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &parts);
  char with_millis[48];
  std::snprintf(with_millis, sizeof with_millis, "%s.%03dZ", text, static_cast<int>(millis % 1000));
  return with_millis;
}
}  // namespace

std::string boot_event_json(const BootEvent& event) {
  nlohmann::json line{{"time", utc_iso8601(event.time)},
                      {"node", event.node.empty() ? nlohmann::json(nullptr) : nlohmann::json(event.node)},
                      {"client", event.client},
                      {"step", event.step},
                      {"file", event.file},
                      {"bytes", event.bytes},
                      {"result", event.result},
                      {"duration_ms", event.duration.count()}};
  if (!event.detail.empty()) line["detail"] = event.detail;
  // Replace invalid UTF-8 (a client's request name) instead of throwing.
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

BootEventLog::BootEventLog(std::optional<std::filesystem::path> path) : path_(std::move(path)) { reopen(); }

void BootEventLog::reopen() {
  std::lock_guard lock(mutex_);
  if (!path_) return;
  if (out_.is_open()) out_.close();
  out_.open(*path_, std::ios::app);
  if (!out_) throw Error("boot event log " + path_->string() + " cannot be opened for appending");
}

void BootEventLog::write(const BootEvent& event) {
  std::lock_guard lock(mutex_);
  if (!out_.is_open()) return;
  out_ << boot_event_json(event) << '\n';
  out_.flush();  // one line per event, visible to `tail -f` at once
}

}  // namespace aggrik8s::netboot
