#include "netboot/service/talos_wipe_state_file.hpp"

#include <nlohmann/json.hpp>

#include "core/durable_file.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "netboot/service/state_file_json.hpp"

namespace aggrik8s::netboot {

namespace {

constexpr StateFileFormat file_format{"aggrik8s-talos-wipe", "serve's Talos wipe state", "nodes",
                                      "an object keyed by node name"};

std::int64_t to_ms(WallClock::time_point time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

WallClock::time_point from_ms(std::int64_t ms) {
  return WallClock::time_point(std::chrono::duration_cast<WallClock::duration>(std::chrono::milliseconds(ms)));
}

}  // namespace

std::string talos_wipe_state_json(const TalosWipeCycles& cycles) {
  nlohmann::ordered_json nodes = nlohmann::ordered_json::object();
  for (const auto& [name, cycle] : cycles) {
    nlohmann::ordered_json entry;
    entry["served"] = to_string(cycle.served);
    entry["served_at_ms"] = to_ms(cycle.served_at);
    if (cycle.files_fetched_at) entry["files_fetched_at_ms"] = to_ms(*cycle.files_fetched_at);
    if (!cycle.served_to.empty()) entry["served_to"] = cycle.served_to;
    nodes[name] = std::move(entry);
  }
  return state_file_json(file_format, std::move(nodes));
}

TalosWipeCycles parse_talos_wipe_state_json(std::string_view text, const std::string& file) {
  auto fail = [&](const std::string& field, const std::string& expected) { return state_file_error(file, field, expected); };
  const nlohmann::json nodes = parse_state_file_json(text, file, file_format);
  TalosWipeCycles cycles;
  for (const auto& [name, entry] : nodes.items()) {
    std::string where = "nodes." + name;
    if (!entry.is_object()) throw fail(where, "an object");
    TalosWipeCycle cycle;
    auto served = entry.contains("served") && entry["served"].is_string()
                      ? parse_talos_boot_kind(entry["served"].get<std::string>())
                      : std::nullopt;
    if (!served) throw fail(where + ".served", "\"wipe\" or \"normal\"");
    cycle.served = *served;
    if (!entry.contains("served_at_ms") || !entry["served_at_ms"].is_number_integer()) {
      throw fail(where + ".served_at_ms", "an integer (milliseconds since the epoch)");
    }
    cycle.served_at = from_ms(entry["served_at_ms"].get<std::int64_t>());
    if (entry.contains("files_fetched_at_ms")) {
      if (!entry["files_fetched_at_ms"].is_number_integer()) {
        throw fail(where + ".files_fetched_at_ms", "an integer (milliseconds since the epoch)");
      }
      cycle.files_fetched_at = from_ms(entry["files_fetched_at_ms"].get<std::int64_t>());
    }
    if (entry.contains("served_to")) {
      if (!entry["served_to"].is_string()) throw fail(where + ".served_to", "a string (the client address)");
      cycle.served_to = entry["served_to"].get<std::string>();
    }
    for (const auto& [key, value] : entry.items()) {
      if (key != "served" && key != "served_at_ms" && key != "files_fetched_at_ms" && key != "served_to") {
        throw fail(where + "." + key, "no such field (served, served_at_ms, files_fetched_at_ms, served_to)");
      }
    }
    cycles.emplace(name, cycle);
  }
  return cycles;
}

std::optional<std::filesystem::path> talos_wipe_state_path(const NetbootConfig& config, const NodeInventory& inventory) {
  const BootProfile* needing = nullptr;
  for (const auto& [name, profile] : inventory.profiles) {
    if (profile.mode == BootMode::ephemeral && std::holds_alternative<TalosBoot>(profile.target)) {
      needing = &profile;
      break;
    }
  }
  if (needing == nullptr) return std::nullopt;
  std::string subject = "profile '" + needing->name + "' (" + needing->where.str() +
                        ") is a rebuild-on-reboot Talos profile (talos, mode: ephemeral): serve keeps each of its "
                        "nodes' wipe cycle in " + std::string(talos_wipe_state_file_name) + ", ";
  auto directory = state_directory(config);
  if (!directory) {
    throw Error(subject + "but the netboot configuration has no state_dir (nor dhcp.lease_file, whose directory is "
                          "the default): set state_dir (serve --state-dir)");
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(*directory, ec)) {
    throw Error(subject + "but its state directory " + directory->string() + " is not an existing directory");
  }
  return *directory / talos_wipe_state_file_name;
}

TalosWipeStateStore::TalosWipeStateStore(std::filesystem::path file) : file_(std::move(file)) {
  if (auto text = read_state_file(file_)) cycles_ = parse_talos_wipe_state_json(*text, file_.string());
}

void TalosWipeStateStore::save_locked() {
  try {
    replace_file_durably(file_, talos_wipe_state_json(cycles_), 0644);
  } catch (const std::exception& e) {
    log::error("talos wipe state not saved (a restart now falls back to a wipe boot): ", e.what());
  }
}

TalosWipeDecision TalosWipeStateStore::script_requested(const std::string& node, WallClock::time_point now,
                                                        std::chrono::seconds reboot_window, const std::string& client) {
  std::lock_guard lock(mutex_);
  auto found = cycles_.find(node);
  std::optional<TalosWipeCycle> state;
  if (found != cycles_.end()) state = found->second;
  TalosWipeDecision decision = decide_talos_wipe_boot(state, now, reboot_window, client);
  if (!state || !(*state == decision.next)) {
    cycles_[node] = decision.next;
    save_locked();
  }
  return decision;
}

std::optional<TalosWipeFilesFetched> TalosWipeStateStore::boot_files_fetched(const std::string& node,
                                                                             WallClock::time_point now,
                                                                             const std::string& client) {
  std::lock_guard lock(mutex_);
  auto found = cycles_.find(node);
  if (found == cycles_.end()) return std::nullopt;
  auto fetched = note_talos_boot_files_fetched(found->second, now, client);
  if (fetched) {
    found->second = fetched->next;
    save_locked();
  }
  return fetched;
}

std::optional<TalosWipeCycle> TalosWipeStateStore::find(const std::string& node) const {
  std::lock_guard lock(mutex_);
  auto found = cycles_.find(node);
  if (found == cycles_.end()) return std::nullopt;
  return found->second;
}

}  // namespace aggrik8s::netboot
