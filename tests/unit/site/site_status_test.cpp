// `status`: boot event lines read back, events matched to site machines, build manifests read, rows,
// table and JSON. Event lines are written by serve's own writer (netboot::boot_event_json), so a change
// of the log format breaks this test rather than `status` in the field.
#include "site/site_status.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "netboot/service/boot_event_log.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::site;

namespace {

using namespace std::chrono_literals;

const StatusClock::time_point t0 = StatusClock::from_time_t(1795514400);  // 2026-11-24T10:00:00Z

std::string event_line(std::string node, std::string client, std::string step, std::string file, std::string result,
                       StatusClock::duration after = 0s) {
  netboot::BootEvent event;
  event.time = t0 + after;
  event.node = std::move(node);
  event.client = std::move(client);
  event.step = std::move(step);
  event.file = std::move(file);
  event.result = std::move(result);
  event.bytes = 1234;
  return netboot::boot_event_json(event);
}

Machine machine(std::string name, Platform platform, BootMethod boot, std::string address, std::string profile) {
  Machine m;
  m.name = std::move(name);
  m.platform = platform;
  m.boot = boot;
  m.address = std::move(address);
  m.profile = std::move(profile);
  return m;
}

// Three Pis (one on disk, two ephemeral) and a Talos VM, four profiles built by hand.
LoadedSite lab_site() {
  LoadedSite loaded;
  loaded.site.name = "lab";
  loaded.site.output = "/srv/out/lab";
  Machine cp1 = machine("cp1", Platform::rpi5, BootMethod::disk, "10.0.10.11/24", "/site/rpi5-server.yaml");
  cp1.serial = "10000000a1b2c3d4";
  Machine eph1 = machine("eph1", Platform::rpi5, BootMethod::ephemeral, "10.0.10.31/24", "/site/rpi5-ephemeral.yaml");
  eph1.serial = "9ffefdef";
  eph1.mac = "d8:3a:dd:10:00:31";
  Machine eph2 = machine("eph2", Platform::rpi5, BootMethod::ephemeral, "10.0.10.32/24", "/site/rpi5-ephemeral.yaml");
  eph2.serial = "8ffefdee";
  Machine tcp1 = machine("tcp1", Platform::proxmox_vm, BootMethod::netboot, "10.0.20.11/24", "/site/talos-cp.yaml");
  tcp1.mac = "bc:24:11:00:20:11";
  tcp1.uuid = "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51";
  loaded.site.machines = {cp1, eph1, eph2, tcp1};
  auto add_profile = [&](const std::string& file, const std::string& name, builder::ProfileKind kind) {
    builder::Profile profile;
    profile.file = file;
    profile.name = name;
    profile.kind = kind;
    loaded.profiles.emplace(file, profile);
  };
  add_profile("/site/rpi5-server.yaml", "rpi5-server", builder::ProfileKind::rpi5_rke2);
  add_profile("/site/rpi5-ephemeral.yaml", "rpi5-ephemeral", builder::ProfileKind::rpi5_rke2);
  add_profile("/site/talos-cp.yaml", "talos-cp", builder::ProfileKind::talos_iso);
  return loaded;
}

SiteBootHistory history_of(const SiteInventory& site, const std::string& log_text, Diagnostics& diagnostics) {
  SiteBootHistory history;
  std::istringstream in(log_text);
  add_boot_event_log(history, site, in, "boot.jsonl", diagnostics);
  return history;
}

std::string all_messages(const Diagnostics& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics.all()) out += d.str() + "\n";
  return out;
}

const std::string sha_a(64, 'a');
const std::string sha_b(64, 'b');
const std::string sha_c(64, 'c');

// A Pi build's manifest as rpi_image_builder.cpp writes it (image, bmap, boot_img per node).
std::string pi_manifest() {
  nlohmann::json manifest{
      {"tool", {{"name", "aggrik8s-image"}, {"version", "0.9.0"}}},
      {"profile", {{"name", "rpi5-server"}, {"kind", "rpi5-rke2"}}},
      {"source_date_epoch", 1767225600},
      {"rke2_version", "v1.33.1+rke2r1"},
      {"future_field", {{"anything", 1}}},
      {"nodes",
       {{{"name", "cp1"},
         {"hostname", "cp1"},
         {"changes", {"hostname", "rke2 config"}},
         {"bmap", {{"file", "cp1.img.bmap"}, {"size", 900}, {"sha256", sha_b}}},
         {"image", {{"file", "cp1.img"}, {"size", 4000000000ull}, {"sha256", sha_a}}},
         {"compressed", {{{"file", "cp1.img.zst"}, {"size", 1000}, {"sha256", sha_c}}}}}}}};
  return manifest.dump(2);
}

}  // namespace

TEST_CASE("status: a boot event line as serve writes it is read back field for field") {
  std::string error;
  auto event = parse_boot_event_line(event_line("cp1", "10.0.10.11", "tftp", "a1b2c3d4/start4.elf", "ok", 123ms), error);
  REQUIRE(event);
  CHECK(event->time == t0 + 123ms);
  CHECK(event->time_text == "2026-11-24T10:00:00.123Z");
  CHECK(event->node == std::optional<std::string>("cp1"));
  CHECK(event->client == "10.0.10.11");
  CHECK(event->step == "tftp");
  CHECK(event->file == "a1b2c3d4/start4.elf");
  CHECK(event->bytes == 1234);
  CHECK(event->result == "ok");

  auto unknown = parse_boot_event_line(event_line("", "10.0.10.99", "ipxe-script", "/ipxe?mac=aa", "not-found"), error);
  REQUIRE(unknown);
  CHECK_FALSE(unknown->node.has_value());  // serve writes null for a machine it does not know
}

TEST_CASE("status: unknown fields are ignored, missing or mistyped ones are errors that say which") {
  std::string error;
  auto later = parse_boot_event_line(
      R"({"time":"2026-11-24T10:00:00Z","node":"cp1","client":"10.0.0.1","step":"asset","result":"ok","new":{"x":1}})",
      error);
  REQUIRE(later);
  CHECK(later->file.empty());
  CHECK(later->time == t0);

  CHECK_FALSE(parse_boot_event_line(R"({"time":"2026-11-24T10:00:00Z","client":"10.0.0.1","result":"ok"})", error));
  CHECK(error == "no \"step\"");
  CHECK_FALSE(parse_boot_event_line(R"({"time":"yesterday","client":"a","step":"b","result":"ok"})", error));
  CHECK_THAT(error, Catch::Contains("\"time\" is not a UTC time") && Catch::Contains("'yesterday'"));
  CHECK_FALSE(parse_boot_event_line(R"({"time":"2026-11-24T10:00:00Z","node":5,"client":"a","step":"b","result":"ok"})", error));
  CHECK(error == "\"node\" is neither a string nor null");
  CHECK_FALSE(parse_boot_event_line(R"([1,2])", error));
  CHECK(error == "not a JSON object");
  CHECK_FALSE(parse_boot_event_line(R"({"time":)", error));
  CHECK(error == "not JSON");
}

TEST_CASE("status: UTC times in the log's form, with and without a fraction") {
  CHECK(parse_utc_time("2026-11-24T10:00:00Z") == t0);
  CHECK(parse_utc_time("2026-11-24T10:00:00.5Z") == t0 + 500ms);
  CHECK(parse_utc_time("2026-11-24T10:00:00.123Z") == t0 + 123ms);
  CHECK_FALSE(parse_utc_time("2026-11-24T10:00:00"));
  CHECK_FALSE(parse_utc_time("2026-11-24 10:00:00Z"));
  CHECK_FALSE(parse_utc_time("2026-13-24T10:00:00Z"));
  CHECK_FALSE(parse_utc_time("2026-11-24T10:00:00.Z"));
  CHECK(utc_time_text(t0 + 999ms) == "2026-11-24T10:00:00Z");
}

TEST_CASE("status: events belong to machines by node name, else by the MAC, UUID or serial the request named") {
  LoadedSite loaded = lab_site();
  const SiteInventory& site = loaded.site;
  auto owner = [&](const std::string& node, const std::string& step, const std::string& file) -> std::string {
    std::string error;
    auto event = parse_boot_event_line(event_line(node, "10.0.0.1", step, file, "ok"), error);
    REQUIRE(event);
    const Machine* m = machine_of_boot_event(site, *event);
    return m != nullptr ? m->name : "-";
  };
  CHECK(owner("cp1", "tftp", "config.txt") == "cp1");
  // serve's nodes file named it otherwise (a hand-written file): the identifiers decide.
  CHECK(owner("old-name", "tftp", "a1b2c3d4/start4.elf") == "cp1");  // low 8 digits of the 16-digit serial
  CHECK(owner("", "tftp", "/9FFEFDEF/config.txt") == "eph1");
  CHECK(owner("", "tftp", "d8-3a-dd-10-00-31/config.txt") == "eph1");  // TFTP_PREFIX=2: the MAC
  CHECK(owner("", "ipxe-script", "/ipxe?mac=bc-24-11-00-20-11&platform=efi") == "tcp1");
  CHECK(owner("", "ipxe-script", "/ipxe?uuid=7C1E2F0A-3B4D-4E5F-8A9B-0C1D2E3F4A51") == "tcp1");
  CHECK(owner("", "ipxe-script", "/ipxe?serial=8ffefdee") == "eph2");
  CHECK(owner("", "talos-config", "/talos/bc%3A24%3A11%3A00%3A20%3A11/config.yaml") == "tcp1");
  CHECK(owner("", "cloud-init", "/cloud-init/9ffefdef/user-data") == "eph1");
  // Nothing that names a site machine.
  CHECK(owner("", "tftp", "ipxe.efi") == "-");
  CHECK(owner("", "tftp", "12345678") == "-");  // no directory: a file name, not a serial
  CHECK(owner("", "asset", "/assets/talos/vmlinuz-amd64") == "-");
  CHECK(owner("", "ipxe-script", "/ipxe?mac=52-54-00-00-00-99") == "-");
  CHECK(owner("", "ephemeral-root", "/ephemeral/rpi5-ephemeral/9ffefdef9ffefdef/root.squashfs") == "-");
}

TEST_CASE("status: the log keeps each machine's newest success and newest event, and counts the rest") {
  LoadedSite loaded = lab_site();
  std::string log = event_line("eph1", "10.0.10.31", "tftp", "9ffefdef/start4.elf", "probe", 1s) + "\n" +
                    event_line("eph1", "10.0.10.31", "tftp", "9ffefdef/start4.elf", "ok", 2s) + "\n" +
                    event_line("eph1", "10.0.10.31", "ephemeral-root", "/ephemeral/p/b/root.squashfs", "ok", 9s) + "\n" +
                    event_line("eph1", "10.0.10.77", "ephemeral-identity", "/ephemeral/p/b/identity/eph1", "refused", 12s) +
                    "\n" + event_line("", "10.0.10.200", "tftp", "ipxe.efi", "ok", 13s) + "\n";
  Diagnostics diagnostics;
  SiteBootHistory history = history_of(loaded.site, log, diagnostics);
  CHECK(diagnostics.all().empty());
  CHECK(history.events == 5);
  CHECK(history.unmatched == 1);
  REQUIRE(history.machines.count("eph1") == 1);
  const MachineBootHistory& eph1 = history.machines.at("eph1");
  CHECK(eph1.events == 4);
  CHECK(eph1.failed == 1);
  REQUIRE(eph1.last_ok);
  CHECK(eph1.last_ok->step == "ephemeral-root");
  CHECK(eph1.last_ok->where.str() == "boot.jsonl:3");
  REQUIRE(eph1.last);
  CHECK(eph1.last->result == "refused");
  CHECK(eph1.last->client == "10.0.10.77");
  CHECK(history.machines.count("cp1") == 0);
}

TEST_CASE("status: a malformed line is a warning with file:line and skipped, a torn last line is skipped silently") {
  LoadedSite loaded = lab_site();
  std::string good = event_line("cp1", "10.0.10.11", "tftp", "a1b2c3d4/config.txt", "ok", 5s);
  std::string torn = event_line("cp1", "10.0.10.11", "tftp", "a1b2c3d4/kernel_2712.img", "ok", 6s);
  torn.resize(torn.size() / 2);
  std::string log = "garbage\n" + good + "\n\n{\"time\":\"2026-11-24T10:00:00Z\"}\n" + torn;
  Diagnostics diagnostics;
  SiteBootHistory history = history_of(loaded.site, log, diagnostics);
  CHECK_FALSE(diagnostics.has_errors());
  CHECK(all_messages(diagnostics) ==
        "boot.jsonl:1: warning: not a boot event (not JSON); line skipped\n"
        "boot.jsonl:4: warning: not a boot event (no \"client\"); line skipped\n");
  CHECK(history.malformed == 2);
  CHECK(history.events == 1);
  CHECK(history.machines.at("cp1").last->file == "a1b2c3d4/config.txt");

  // The same torn text followed by a newline is a finished line: then it is malformed.
  Diagnostics again;
  history_of(loaded.site, torn + "\n", again);
  CHECK_THAT(all_messages(again), Catch::Contains("boot.jsonl:1: warning: not a boot event (not JSON)"));

  // A complete last line without its newline is read.
  Diagnostics complete;
  CHECK(history_of(loaded.site, good, complete).events == 1);
}

TEST_CASE("status: a flood of malformed lines is summed up after the first 20") {
  LoadedSite loaded = lab_site();
  std::string log;
  for (int i = 0; i < 25; ++i) log += "x\n";
  Diagnostics diagnostics;
  SiteBootHistory history = history_of(loaded.site, log, diagnostics);
  CHECK(history.malformed == 25);
  REQUIRE(diagnostics.all().size() == 21);
  CHECK(diagnostics.all().back().str() == "boot.jsonl: warning: 25 lines are not boot events (the first 20 are listed)");
}

TEST_CASE("status: a Pi build manifest gives each node's files, its image first") {
  Diagnostics diagnostics;
  auto record = parse_build_manifest(pi_manifest(), "out/manifest.json", diagnostics);
  REQUIRE(record);
  CHECK(record->tool_version == "0.9.0");
  CHECK(record->source_date_epoch == std::optional<std::int64_t>(1767225600));
  const auto& files = record->node_files.at("cp1");
  REQUIRE(files.size() == 3);
  CHECK(files[0].role == "image");
  CHECK(files[0].file == "cp1.img");
  CHECK(files[0].sha256 == sha_a);
  CHECK(files[0].size == 4000000000ull);
  CHECK(files[1].role == "bmap");
  CHECK(files[2].role == "compressed");
}

TEST_CASE("status: a Talos manifest gives the ISO, the config ISO and the netboot files") {
  nlohmann::json manifest{
      {"tool", {{"version", "0.9.0"}}},
      {"nodes",
       {{{"name", "tcp1"},
         {"config_sha256", sha_c},
         {"outputs",
          {{"config-iso", {{"file", "tcp1-config.iso"}, {"size", 1}, {"sha256", sha_b}}},
           {"iso", {{"file", "tcp1.iso"}, {"size", 2}, {"sha256", sha_a}, {"kernel_args", "x"}}},
           {"netboot",
            {{"files", {{{"file", "netboot/tcp1/vmlinuz"}, {"size", 3}, {"sha256", sha_c}}}}, {"kernel_args", "y"}}}}}}}}};
  Diagnostics diagnostics;
  auto record = parse_build_manifest(manifest.dump(), "m.json", diagnostics);
  REQUIRE(record);
  CHECK_FALSE(record->source_date_epoch);
  const auto& files = record->node_files.at("tcp1");
  REQUIRE(files.size() == 3);
  CHECK(files[0].file == "tcp1.iso");
  CHECK(files[1].file == "tcp1-config.iso");
  CHECK(files[2].role == "files");
}

TEST_CASE("status: a malformed manifest is an error naming the file and field") {
  Diagnostics not_json;
  CHECK_FALSE(parse_build_manifest("{", "out/manifest.json", not_json));
  CHECK(all_messages(not_json) == "out/manifest.json: not a build manifest: expected a JSON object as `build` writes it\n");
  Diagnostics no_nodes;
  CHECK_FALSE(parse_build_manifest(R"({"tool":{}})", "m.json", no_nodes));
  CHECK(all_messages(no_nodes) == "m.json: nodes: expected the list of the nodes the build wrote\n");
  Diagnostics bad_sha;
  CHECK_FALSE(parse_build_manifest(R"({"nodes":[{"name":"a","image":{"file":"a.img","sha256":"xyz"}}]})", "m.json", bad_sha));
  CHECK(all_messages(bad_sha) ==
        "m.json: nodes[0].image: expected {\"file\": path, \"sha256\": 64 lowercase hex digits}\n");
  Diagnostics bad_epoch;
  CHECK_FALSE(parse_build_manifest(R"({"source_date_epoch":"x","nodes":[]})", "m.json", bad_epoch));
  CHECK(all_messages(bad_epoch) == "m.json: source_date_epoch: expected an integer (seconds since 1970)\n");
  Diagnostics bad_current;
  CHECK_FALSE(parse_ephemeral_current(R"({"build": 5})", "current.json", bad_current));
  CHECK(all_messages(bad_current) == "current.json: expected {\"build\": \"<ephemeral build id>\"} as `build` writes it\n");
  Diagnostics good_current;
  CHECK(parse_ephemeral_current("{\"build\":\"0123456789abcdef\"}\n", "current.json", good_current) ==
        std::optional<std::string>("0123456789abcdef"));
}

TEST_CASE("status: rows say what was built and booted, 'not built' and 'never seen'") {
  LoadedSite loaded = lab_site();
  std::map<std::filesystem::path, ProfileBuildRecord> builds;
  Diagnostics diagnostics;
  auto pi = parse_build_manifest(pi_manifest(), "/srv/out/lab/rpi5-server/manifest.json", diagnostics);
  REQUIRE(pi);
  pi->written = t0 - 3600s;
  builds.emplace("/site/rpi5-server.yaml", *pi);
  // The ephemeral profile: nodes' layers in the manifest, and the build current.json names.
  nlohmann::json ephemeral_manifest{
      {"nodes", nlohmann::json::array()},
      {"ephemeral",
       {{"build", "0123456789abcdef"},
        {"directory", "ephemeral/rpi5-ephemeral/0123456789abcdef"},
        {"nodes", {{"eph1", {{"layer", "nodes/eph1/layer.tar"}, {"layer_sha256", sha_c}}}}}}}};
  auto eph = parse_build_manifest(ephemeral_manifest.dump(), "/srv/out/lab/rpi5-ephemeral/manifest.json", diagnostics);
  REQUIRE(eph);
  CHECK(eph->node_files.at("eph1").front().file == "ephemeral/rpi5-ephemeral/0123456789abcdef/nodes/eph1/layer.tar");
  eph->written = t0 - 7200s;
  eph->ephemeral_build = "0123456789abcdef";
  eph->ephemeral_published = t0 - 7000s;
  builds.emplace("/site/rpi5-ephemeral.yaml", *eph);

  std::string log = event_line("eph1", "10.0.10.31", "tftp", "9ffefdef/start4.elf", "ok", 10s) + "\n" +
                    event_line("", "10.0.20.57", "ipxe-script", "/ipxe?mac=bc-24-11-00-20-11", "ok", 20s) + "\n" +
                    event_line("tcp1", "10.0.20.57", "talos-config", "/talos/bc-24-11-00-20-11/config.yaml", "refused", 30s) +
                    "\n";
  SiteBootHistory history = history_of(loaded.site, log, diagnostics);
  REQUIRE(diagnostics.all().empty());
  auto rows = machine_statuses(loaded, builds, history);
  REQUIRE(rows.size() == 4);

  CHECK(rows[0].machine == "cp1");
  CHECK(rows[0].profile == "rpi5-server");
  CHECK(rows[0].address == "10.0.10.11");
  CHECK(rows[0].built());
  CHECK(rows[0].built_files.front().sha256 == sha_a);
  CHECK(rows[0].built_at == std::optional(t0 - 3600s));
  CHECK(rows[0].history.events == 0);

  CHECK(rows[1].ephemeral_build == std::optional<std::string>("0123456789abcdef"));
  CHECK(rows[1].built_at == std::optional(t0 - 7000s));
  CHECK(rows[1].history.last_ok->client == "10.0.10.31");

  CHECK_FALSE(rows[2].built());  // eph2: not in the build
  CHECK_FALSE(rows[3].built());  // talos-cp never built
  CHECK(rows[3].history.events == 2);

  std::string table = status_table(rows, history, t0 + 90s);
  INFO(table);
  std::istringstream lines(table);
  std::string header, cp1, eph1, eph2, tcp1;
  std::getline(lines, header);
  std::getline(lines, cp1);
  std::getline(lines, eph1);
  std::getline(lines, eph2);
  std::getline(lines, tcp1);
  CHECK(header.starts_with("MACHINE  PLATFORM    BOOT       BUILT"));
  CHECK_THAT(cp1, Catch::StartsWith("cp1 ") && Catch::Contains("rpi5") && Catch::Contains("disk") &&
                      Catch::Contains("aaaaaaaaaaaa 2026-11-24T09:00:00Z") && Catch::Contains("never seen"));
  CHECK_THAT(eph1, Catch::Contains("ephemeral 0123456789abcdef 2026-11-24T08:03:20Z") &&
                       Catch::Contains("2026-11-24T10:00:10Z tftp 9ffefdef/start4.elf") && Catch::Contains("10.0.10.31") &&
                       Catch::Contains("(80s ago)"));
  CHECK_THAT(eph1, !Catch::Contains("(site:"));
  CHECK_THAT(eph2, Catch::Contains("not built") && Catch::Contains("never seen"));
  CHECK_THAT(tcp1, Catch::Contains("proxmox-vm") && Catch::Contains("netboot") && Catch::Contains("not built") &&
                       Catch::Contains("2026-11-24T10:00:20Z ipxe-script /ipxe?mac=bc-24-11-00-20-11") &&
                       Catch::Contains("10.0.20.57 (site: 10.0.20.11)") &&
                       Catch::Contains("2026-11-24T10:00:30Z (60s ago) talos-config refused"));

  nlohmann::json json = nlohmann::json::parse(status_json("lab", rows, history));
  CHECK(json["site"] == "lab");
  CHECK(json["events"] == 3);
  CHECK(json["machines"][0]["built"]["sha256"] == sha_a);
  CHECK(json["machines"][0]["built"]["time"] == "2026-11-24T09:00:00Z");
  CHECK(json["machines"][0]["built"]["source_date_epoch"] == 1767225600);
  CHECK(json["machines"][0]["built"]["files"].size() == 3);
  CHECK(json["machines"][0]["booted"] == false);
  CHECK(json["machines"][0]["last_seen"].is_null());
  CHECK(json["machines"][1]["built"]["ephemeral_build"] == "0123456789abcdef");
  CHECK(json["machines"][1]["booted"] == true);
  CHECK(json["machines"][1]["last_boot"]["time"] == "2026-11-24T10:00:10.000Z");
  CHECK(json["machines"][2]["built"].is_null());
  CHECK(json["machines"][3]["last_seen"]["result"] == "refused");
  CHECK(json["machines"][3]["last_seen"]["log"] == "boot.jsonl:3");
}

TEST_CASE("status: without a boot log the boot columns say so instead of 'never seen'") {
  LoadedSite loaded = lab_site();
  SiteBootHistory none;
  auto rows = machine_statuses(loaded, {}, none);
  std::string table = status_table(rows, none, t0);
  CHECK_THAT(table, Catch::Contains("no boot log") && !Catch::Contains("never seen"));
}

TEST_CASE("status: a client's control bytes in a logged file name do not reach the terminal") {
  LoadedSite loaded = lab_site();
  Diagnostics diagnostics;
  SiteBootHistory history =
      history_of(loaded.site, event_line("cp1", "10.0.10.11", "tftp", "a1b2c3d4/\x1b[2Jx", "ok") + "\n", diagnostics);
  std::string table = status_table(machine_statuses(loaded, {}, history), history, t0);
  CHECK(table.find('\x1b') == std::string::npos);
  CHECK_THAT(table, Catch::Contains("a1b2c3d4/\\x1b[2Jx"));
}

TEST_CASE("status: control bytes in a logged step do not reach the terminal, and a directory is no boot log") {
  LoadedSite loaded = lab_site();
  Diagnostics diagnostics;
  SiteBootHistory history =
      history_of(loaded.site, event_line("cp1", "10.0.10.11", "\x1b]0;owned\x07", "a1b2c3d4/x", "failed") + "\n", diagnostics);
  std::string table = status_table(machine_statuses(loaded, {}, history), history, t0);
  CHECK(table.find('\x1b') == std::string::npos);
  CHECK(table.find('\x07') == std::string::npos);
  aggrik8s::test::TempDir dir;
  Diagnostics directory;
  read_boot_history(loaded.site, {dir.path()}, directory);
  CHECK(directory.has_errors());
  CHECK_THAT(directory.all().front().str(), Catch::Contains("cannot read the boot event log: it is a directory"));
}
