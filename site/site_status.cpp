#include "site/site_status.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/identifiers.hpp"
#include "core/log_escape.hpp"

namespace aggrik8s::site {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- times ----

std::string utc_time_text(StatusClock::time_point time) {
  std::time_t seconds = StatusClock::to_time_t(time);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[40];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::optional<StatusClock::time_point> parse_utc_time(std::string_view text) {
  // The form boot_event_log.cpp writes: YYYY-MM-DDTHH:MM:SS, optional .fraction, Z.
  auto digits = [&](std::size_t at, std::size_t count) -> std::optional<int> {
    if (at + count > text.size()) return std::nullopt;
    int value = 0;
    for (std::size_t i = at; i < at + count; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
      value = value * 10 + (text[i] - '0');
    }
    return value;
  };
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' || text[16] != ':') {
    return std::nullopt;
  }
  auto year = digits(0, 4), month = digits(5, 2), day = digits(8, 2);
  auto hour = digits(11, 2), minute = digits(14, 2), second = digits(17, 2);
  if (!year || !month || !day || !hour || !minute || !second) return std::nullopt;
  if (*month < 1 || *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  std::size_t at = 19;
  long long millis = 0;
  if (text[at] == '.') {
    ++at;
    int scale = 100;
    std::size_t first = at;
    while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) {
      millis += (text[at] - '0') * scale;
      scale /= 10;
      ++at;
    }
    if (at == first) return std::nullopt;
  }
  if (at + 1 != text.size() || text[at] != 'Z') return std::nullopt;
  std::tm parts{};
  parts.tm_year = *year - 1900;
  parts.tm_mon = *month - 1;
  parts.tm_mday = *day;
  parts.tm_hour = *hour;
  parts.tm_min = *minute;
  parts.tm_sec = *second;
  std::time_t seconds = timegm(&parts);
  return StatusClock::from_time_t(seconds) + std::chrono::milliseconds(millis);
}

namespace {

std::optional<StatusClock::time_point> modification_time(const fs::path& file) {
  struct stat info{};
  if (::stat(file.c_str(), &info) != 0) return std::nullopt;
  return StatusClock::time_point(std::chrono::duration_cast<StatusClock::duration>(
      std::chrono::seconds(info.st_mtim.tv_sec) + std::chrono::nanoseconds(info.st_mtim.tv_nsec)));
}

// ---- machine identifiers in requests ----

// The low 8 hex digits, lowercase: what a Pi uses as its TFTP directory and serve matches on.
std::optional<std::string> pi_serial_key(std::string_view text) {
  if (text.size() != 8 && text.size() != 16) return std::nullopt;
  std::string out;
  for (char c : text) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out.substr(out.size() - 8);
}

std::string percent_decoded(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) && std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

// The identifiers a request names its machine by (serve's TFTP lookup and HTTP routes).
std::vector<std::string> request_identifiers(const BootEventRecord& event) {
  std::vector<std::string> ids;
  std::string_view file = event.file;
  if (event.step == "tftp") {
    while (file.starts_with('/')) file.remove_prefix(1);
    std::size_t slash = file.find('/');
    if (slash != std::string_view::npos) ids.emplace_back(file.substr(0, slash));
    return ids;
  }
  if (!file.starts_with('/')) return ids;
  std::size_t question = file.find('?');
  std::string_view path = file.substr(1, question == std::string_view::npos ? std::string_view::npos : question - 1);
  auto segments = split(path, '/');
  if (segments.size() >= 3 && (segments[0] == "talos" || segments[0] == "cloud-init" || segments[0] == "rke2")) {
    ids.push_back(percent_decoded(segments[1]));
  }
  if (question != std::string_view::npos) {
    for (std::string_view pair : split(file.substr(question + 1), '&')) {
      std::size_t equals = pair.find('=');
      if (equals == std::string_view::npos) continue;
      std::string_view key = pair.substr(0, equals);
      if (key == "mac" || key == "uuid" || key == "serial") ids.push_back(percent_decoded(pair.substr(equals + 1)));
    }
  }
  return ids;
}

bool machine_has_identifier(const Machine& machine, const std::string& id) {
  if (auto mac = normalize_mac(id); mac && machine.mac && *machine.mac == *mac) return true;
  if (auto uuid = normalize_uuid(id); uuid && machine.uuid && *machine.uuid == *uuid) return true;
  if (auto serial = pi_serial_key(id); serial && machine.serial && pi_serial_key(*machine.serial) == serial) return true;
  return false;
}

bool is_failure(const std::string& result) {
  return result == "failed" || result == "refused" || result == "not-found";
}

constexpr std::size_t malformed_lines_reported = 20;

}  // namespace

// ---- the boot event log ----

std::optional<BootEventRecord> parse_boot_event_line(std::string_view line, std::string& error) {
  json object = json::parse(line, nullptr, false);
  if (object.is_discarded()) {
    error = "not JSON";
    return std::nullopt;
  }
  if (!object.is_object()) {
    error = "not a JSON object";
    return std::nullopt;
  }
  auto text_field = [&](const char* name, bool required) -> std::optional<std::string> {
    auto it = object.find(name);
    if (it == object.end() || it->is_null()) {
      if (required) error = std::string("no \"") + name + "\"";
      return required ? std::nullopt : std::optional<std::string>("");
    }
    if (!it->is_string()) {
      error = std::string("\"") + name + "\" is not a string";
      return std::nullopt;
    }
    return it->get<std::string>();
  };
  BootEventRecord event;
  auto time = text_field("time", true);
  if (!time) return std::nullopt;
  auto parsed_time = parse_utc_time(*time);
  if (!parsed_time) {
    error = "\"time\" is not a UTC time like 2026-11-24T10:00:00.123Z: '" + log_escape(*time, 64) + "'";
    return std::nullopt;
  }
  event.time = *parsed_time;
  event.time_text = *time;
  auto node = object.find("node");
  if (node != object.end() && !node->is_null()) {
    if (!node->is_string()) {
      error = "\"node\" is neither a string nor null";
      return std::nullopt;
    }
    event.node = node->get<std::string>();
  }
  auto client = text_field("client", true);
  auto step = client ? text_field("step", true) : std::nullopt;
  auto result = step ? text_field("result", true) : std::nullopt;
  auto file = result ? text_field("file", false) : std::nullopt;
  auto detail = file ? text_field("detail", false) : std::nullopt;
  if (!detail) return std::nullopt;
  event.client = *client;
  event.step = *step;
  event.result = *result;
  event.file = *file;
  event.detail = *detail;
  if (auto bytes = object.find("bytes"); bytes != object.end() && bytes->is_number_unsigned()) {
    event.bytes = bytes->get<std::uint64_t>();
  }
  return event;
}

const Machine* machine_of_boot_event(const SiteInventory& site, const BootEventRecord& event) {
  if (event.node) {
    if (const Machine* named = site.find(*event.node)) return named;
  }
  for (const std::string& id : request_identifiers(event)) {
    for (const Machine& machine : site.machines) {
      if (machine_has_identifier(machine, id)) return &machine;
    }
  }
  return nullptr;
}

void add_boot_event(SiteBootHistory& history, const SiteInventory& site, BootEventRecord event) {
  ++history.events;
  const Machine* machine = machine_of_boot_event(site, event);
  if (machine == nullptr) {
    ++history.unmatched;
    return;
  }
  MachineBootHistory& mine = history.machines[machine->name];
  ++mine.events;
  if (is_failure(event.result)) ++mine.failed;
  // The log is appended in time order; comparing times keeps a log cat'ed out of order right too.
  if (event.result == "ok" && (!mine.last_ok || event.time >= mine.last_ok->time)) mine.last_ok = event;
  if (!mine.last || event.time >= mine.last->time) mine.last = std::move(event);
}

void add_boot_event_log(SiteBootHistory& history, const SiteInventory& site, std::istream& log,
                        const std::string& file_name, Diagnostics& diagnostics) {
  history.log_files.push_back(file_name);
  std::size_t malformed_before = history.malformed;
  std::string line;
  int number = 0;
  while (std::getline(log, line)) {
    ++number;
    bool complete = !log.eof();  // getline stopped at a newline, not at the end of the file
    if (line.empty()) continue;
    std::string error;
    auto event = parse_boot_event_line(line, error);
    if (!event) {
      if (!complete) break;  // serve is writing this line right now (or was killed mid-write)
      if (++history.malformed - malformed_before <= malformed_lines_reported) {
        diagnostics.warning({file_name, number, 0}, "not a boot event (" + error + "); line skipped");
      }
      continue;
    }
    event->where = {file_name, number, 0};
    add_boot_event(history, site, std::move(*event));
  }
  std::size_t skipped = history.malformed - malformed_before;
  if (skipped > malformed_lines_reported) {
    diagnostics.warning({file_name, 0, 0}, std::to_string(skipped) + " lines are not boot events (the first " +
                                               std::to_string(malformed_lines_reported) + " are listed)");
  }
}

SiteBootHistory read_boot_history(const SiteInventory& site, const std::vector<fs::path>& log_files,
                                  Diagnostics& diagnostics) {
  SiteBootHistory history;
  for (const fs::path& file : log_files) {
    std::error_code ec;
    if (fs::is_directory(file, ec)) {  // an ifstream opens a directory and reads nothing from it
      diagnostics.error({file.string(), 0, 0}, "cannot read the boot event log: it is a directory");
      continue;
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      diagnostics.error({file.string(), 0, 0}, "cannot open the boot event log: " + std::string(std::strerror(errno)));
      continue;
    }
    add_boot_event_log(history, site, in, file.string(), diagnostics);
  }
  return history;
}

// ---- build manifests ----

namespace {

bool is_sha256_hex(const std::string& text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

// The order a row shows a node's files in: its main product first.
int file_rank(const std::string& role) {
  static const char* const order[] = {"image", "iso", "config-iso", "boot_img", "ephemeral-layer"};
  for (int i = 0; i < 5; ++i) {
    if (role == order[i]) return i;
  }
  return 5;
}

// Every {"file", "sha256"} object under a node's manifest entry, named by the key it sits under.
void collect_node_files(const json& value, const std::string& key, const std::string& where,
                        std::vector<BuiltNodeFile>& files, Diagnostics& diagnostics, const std::string& file_name) {
  if (value.is_array()) {
    for (std::size_t i = 0; i < value.size(); ++i) {
      collect_node_files(value[i], key, where + "[" + std::to_string(i) + "]", files, diagnostics, file_name);
    }
    return;
  }
  if (!value.is_object()) return;
  auto file = value.find("file");
  auto sha256 = value.find("sha256");
  if (file != value.end() && sha256 != value.end()) {
    if (!file->is_string() || !sha256->is_string() || !is_sha256_hex(sha256->get<std::string>())) {
      diagnostics.error({file_name, 0, 0}, where + ": expected {\"file\": path, \"sha256\": 64 lowercase hex digits}");
      return;
    }
    BuiltNodeFile built{key, file->get<std::string>(), 0, sha256->get<std::string>()};
    if (auto size = value.find("size"); size != value.end() && size->is_number_unsigned()) {
      built.size = size->get<std::uint64_t>();
    }
    files.push_back(std::move(built));
    return;
  }
  for (const auto& [child_key, child] : value.items()) {
    collect_node_files(child, child_key, where + "." + child_key, files, diagnostics, file_name);
  }
}

}  // namespace

std::optional<ProfileBuildRecord> parse_build_manifest(std::string_view text, const std::string& file_name,
                                                       Diagnostics& diagnostics) {
  json manifest = json::parse(text, nullptr, false);
  SourceLocation where{file_name, 0, 0};
  if (manifest.is_discarded() || !manifest.is_object()) {
    diagnostics.error(where, "not a build manifest: expected a JSON object as `build` writes it");
    return std::nullopt;
  }
  std::size_t errors_before = diagnostics.error_count();
  ProfileBuildRecord record;
  record.manifest = file_name;
  if (auto tool = manifest.find("tool"); tool != manifest.end() && tool->is_object()) {
    if (auto version = tool->find("version"); version != tool->end() && version->is_string()) {
      record.tool_version = version->get<std::string>();
    }
  }
  if (auto epoch = manifest.find("source_date_epoch"); epoch != manifest.end()) {
    if (!epoch->is_number_integer()) {
      diagnostics.error(where, "source_date_epoch: expected an integer (seconds since 1970)");
    } else {
      record.source_date_epoch = epoch->get<std::int64_t>();
    }
  }
  auto nodes = manifest.find("nodes");
  if (nodes == manifest.end() || !nodes->is_array()) {
    diagnostics.error(where, "nodes: expected the list of the nodes the build wrote");
    return std::nullopt;
  }
  for (std::size_t i = 0; i < nodes->size(); ++i) {
    const json& node = (*nodes)[i];
    std::string at = "nodes[" + std::to_string(i) + "]";
    auto name = node.is_object() ? node.find("name") : node.end();
    if (!node.is_object() || name == node.end() || !name->is_string()) {
      diagnostics.error(where, at + ": expected an object with the node's \"name\"");
      continue;
    }
    std::vector<BuiltNodeFile>& files = record.node_files[name->get<std::string>()];
    for (const auto& [key, value] : node.items()) collect_node_files(value, key, at + "." + key, files, diagnostics, file_name);
  }
  // An ephemeral build's per-node layer (the node's own part of what it boots).
  auto ephemeral = manifest.find("ephemeral");
  if (ephemeral != manifest.end() && ephemeral->is_object() && ephemeral->contains("nodes") &&
      (*ephemeral)["nodes"].is_object()) {
    std::string directory = ephemeral->value("directory", std::string());
    for (const auto& [node, entry] : (*ephemeral)["nodes"].items()) {
      if (!entry.is_object() || !entry.contains("layer") || !entry.contains("layer_sha256")) continue;
      if (!entry["layer"].is_string() || !entry["layer_sha256"].is_string() ||
          !is_sha256_hex(entry["layer_sha256"].get<std::string>())) {
        diagnostics.error(where, "ephemeral.nodes." + node + ": expected \"layer\" and its \"layer_sha256\"");
        continue;
      }
      std::string layer = entry["layer"].get<std::string>();
      record.node_files[node].push_back(
          {"ephemeral-layer", directory.empty() ? layer : directory + "/" + layer, 0, entry["layer_sha256"].get<std::string>()});
    }
  }
  for (auto& [node, files] : record.node_files) {
    std::stable_sort(files.begin(), files.end(),
                     [](const BuiltNodeFile& a, const BuiltNodeFile& b) { return file_rank(a.role) < file_rank(b.role); });
  }
  if (diagnostics.error_count() != errors_before) return std::nullopt;
  return record;
}

std::optional<std::string> parse_ephemeral_current(std::string_view text, const std::string& file_name,
                                                   Diagnostics& diagnostics) {
  json current = json::parse(text, nullptr, false);
  if (current.is_object() && current.contains("build") && current["build"].is_string() &&
      !current["build"].get<std::string>().empty()) {
    return current["build"].get<std::string>();
  }
  diagnostics.error({file_name, 0, 0}, "expected {\"build\": \"<ephemeral build id>\"} as `build` writes it");
  return std::nullopt;
}

namespace {

std::optional<std::string> read_text(const fs::path& file, Diagnostics& diagnostics) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    diagnostics.error({file.string(), 0, 0}, "cannot be read: " + std::string(std::strerror(errno)));
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::map<fs::path, ProfileBuildRecord> read_site_builds(const LoadedSite& site, Diagnostics& diagnostics) {
  std::map<fs::path, ProfileBuildRecord> builds;
  for (const auto& [profile_file, profile] : site.profiles) {
    fs::path directory = profile_output_directory(site.site, profile);
    fs::path manifest = directory / "manifest.json";
    std::error_code ec;
    if (!fs::exists(manifest, ec)) continue;  // never built
    auto text = read_text(manifest, diagnostics);
    if (!text) continue;
    auto record = parse_build_manifest(*text, manifest.string(), diagnostics);
    if (!record) continue;
    record->written = modification_time(manifest);
    fs::path current = directory / "ephemeral" / profile.name / "current.json";
    if (profile.output.ephemeral && fs::exists(current, ec)) {
      if (auto current_text = read_text(current, diagnostics)) {
        record->ephemeral_build = parse_ephemeral_current(*current_text, current.string(), diagnostics);
        record->ephemeral_published = modification_time(current);
      }
    }
    builds.emplace(profile_file, std::move(*record));
  }
  return builds;
}

// ---- rows ----

std::vector<MachineStatus> machine_statuses(const LoadedSite& site, const std::map<fs::path, ProfileBuildRecord>& builds,
                                            const SiteBootHistory& history) {
  std::vector<MachineStatus> rows;
  for (const Machine& machine : site.site.machines) {
    MachineStatus row;
    row.machine = machine.name;
    row.platform = machine.platform;
    row.boot = machine.boot;
    if (auto profile = site.profiles.find(machine.profile); profile != site.profiles.end()) {
      row.profile = profile->second.name;
    }
    row.address = machine.address.substr(0, machine.address.find('/'));
    if (auto build = builds.find(machine.profile); build != builds.end()) {
      const ProfileBuildRecord& record = build->second;
      auto files = record.node_files.find(machine.name);
      bool ephemeral_pi = machine.platform == Platform::rpi5 && machine.boot == BootMethod::ephemeral;
      if (files != record.node_files.end()) row.built_files = files->second;
      if (ephemeral_pi && record.ephemeral_build && files != record.node_files.end()) {
        // What an ephemeral Pi boots is the build current.json names, published when current.json was.
        row.ephemeral_build = record.ephemeral_build;
        row.built_at = record.ephemeral_published;
      } else if (!row.built_files.empty()) {
        row.built_at = record.written;
      }
      if (row.built()) {
        row.source_date_epoch = record.source_date_epoch;
        row.tool_version = record.tool_version;
      }
    }
    if (auto seen = history.machines.find(machine.name); seen != history.machines.end()) row.history = seen->second;
    rows.push_back(std::move(row));
  }
  return rows;
}

namespace {

std::string age_text(StatusClock::time_point then, StatusClock::time_point now) {
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now - then).count();
  if (seconds < 0) return "in the future";
  if (seconds < 120) return std::to_string(seconds) + "s ago";
  if (seconds < 2 * 3600) return std::to_string(seconds / 60) + "m ago";
  if (seconds < 2 * 86400) return std::to_string(seconds / 3600) + "h ago";
  return std::to_string(seconds / 86400) + "d ago";
}

// An event's time as logged, cut to whole seconds for the table.
std::string event_time(const BootEventRecord& event) { return utc_time_text(event.time); }

std::string built_cell(const MachineStatus& row) {
  if (!row.built()) return "not built";
  std::string cell = row.ephemeral_build ? "ephemeral " + *row.ephemeral_build : row.built_files.front().sha256.substr(0, 12);
  if (row.built_at) cell += " " + utc_time_text(*row.built_at);
  return cell;
}

std::string last_boot_cell(const MachineStatus& row, bool have_log) {
  if (!have_log) return "no boot log";
  const auto& history = row.history;
  if (history.events == 0) return "never seen";
  if (!history.last_ok) return "no step succeeded (" + std::to_string(history.events) + " events)";
  const BootEventRecord& boot = *history.last_ok;
  std::string what = log_escape(boot.step, 32);
  if (!boot.file.empty()) what += " " + log_escape(boot.file, 48);
  return event_time(boot) + " " + what;
}

std::string from_cell(const MachineStatus& row) {
  const auto& history = row.history;
  const BootEventRecord* event = history.last_ok ? &*history.last_ok : history.last ? &*history.last : nullptr;
  if (event == nullptr) return "-";
  std::string cell = log_escape(event->client, 48);
  // A different address than the site gives it: a lease, a typo in the site, or another machine.
  // Compared as addresses: the site's FD00:10::11 is the fd00:10::11 serve logs.
  if (!row.address.empty() && canonical_ip_address(event->client).value_or(event->client) !=
                                  canonical_ip_address(row.address).value_or(row.address)) {
    cell += " (site: " + row.address + ")";
  }
  return cell;
}

std::string last_seen_cell(const MachineStatus& row, bool have_log, StatusClock::time_point now) {
  if (!have_log) return "-";
  if (!row.history.last) return "never seen";
  const BootEventRecord& last = *row.history.last;
  std::string cell = event_time(last) + " (" + age_text(last.time, now) + ")";
  if (last.result != "ok") cell += " " + log_escape(last.step, 32) + " " + log_escape(last.result, 32);
  return cell;
}

json event_json(const BootEventRecord& event) {
  json out{{"time", event.time_text}, {"client", event.client}, {"step", event.step},
           {"file", event.file},      {"bytes", event.bytes},   {"result", event.result},
           {"log", event.where.str()}};
  if (event.node) out["node"] = *event.node;
  if (!event.detail.empty()) out["detail"] = event.detail;
  return out;
}

}  // namespace

std::string status_table(const std::vector<MachineStatus>& rows, const SiteBootHistory& history,
                         StatusClock::time_point now) {
  bool have_log = !history.log_files.empty();
  std::vector<std::vector<std::string>> cells{{"MACHINE", "PLATFORM", "BOOT", "BUILT", "LAST BOOT", "FROM", "LAST SEEN"}};
  for (const MachineStatus& row : rows) {
    cells.push_back({row.machine, to_string(row.platform), to_string(row.boot), built_cell(row),
                     last_boot_cell(row, have_log), have_log ? from_cell(row) : "-", last_seen_cell(row, have_log, now)});
  }
  std::vector<std::size_t> widths(cells.front().size(), 0);
  for (const auto& line : cells) {
    for (std::size_t i = 0; i < line.size(); ++i) widths[i] = std::max(widths[i], line[i].size());
  }
  std::string out;
  for (const auto& line : cells) {
    std::string text;
    for (std::size_t i = 0; i < line.size(); ++i) {
      text += line[i];
      if (i + 1 < line.size()) text += std::string(widths[i] - line[i].size() + 2, ' ');
    }
    out += text + "\n";
  }
  if (have_log && history.unmatched > 0) {
    out += std::to_string(history.unmatched) + " of " + std::to_string(history.events) +
           " boot events are from machines not in the site\n";
  }
  return out;
}

std::string status_json(const std::string& site_name, const std::vector<MachineStatus>& rows,
                        const SiteBootHistory& history) {
  json machines = json::array();
  for (const MachineStatus& row : rows) {
    json entry{{"name", row.machine},
               {"platform", to_string(row.platform)},
               {"boot", to_string(row.boot)},
               {"profile", row.profile},
               {"address", row.address},
               {"built", nullptr},
               {"booted", row.history.last_ok.has_value()},
               {"events", row.history.events},
               {"failed_events", row.history.failed},
               {"last_boot", nullptr},
               {"last_seen", nullptr}};
    if (row.built()) {
      json files = json::array();
      for (const auto& f : row.built_files) {
        files.push_back({{"role", f.role}, {"file", f.file}, {"size", f.size}, {"sha256", f.sha256}});
      }
      json built{{"files", files}, {"tool_version", row.tool_version}};
      if (!row.built_files.empty()) built["sha256"] = row.built_files.front().sha256;
      if (row.ephemeral_build) built["ephemeral_build"] = *row.ephemeral_build;
      if (row.built_at) built["time"] = utc_time_text(*row.built_at);
      if (row.source_date_epoch) built["source_date_epoch"] = *row.source_date_epoch;
      entry["built"] = built;
    }
    if (row.history.last_ok) entry["last_boot"] = event_json(*row.history.last_ok);
    if (row.history.last) entry["last_seen"] = event_json(*row.history.last);
    machines.push_back(entry);
  }
  json out{{"site", site_name},
           {"boot_logs", history.log_files},
           {"events", history.events},
           {"unmatched_events", history.unmatched},
           {"malformed_lines", history.malformed},
           {"machines", machines}};
  // A client's bytes in file names may not be UTF-8: replaced, as serve's own log writer does.
  return out.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace aggrik8s::site
