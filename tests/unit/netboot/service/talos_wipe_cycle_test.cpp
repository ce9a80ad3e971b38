// The rebuild-on-reboot Talos cycle (netboot/service/talos_wipe_cycle.hpp): every transition, the
// window's edges, clocks that jump, repeated script requests within one boot, a restart in between
// (the state through its JSON file format), and the nodes file keys that configure it.
#include <catch2/catch.hpp>

#include "core/config_node.hpp"
#include "core/error.hpp"
#include "netboot/service/ipxe_kernel_line.hpp"
#include "netboot/service/node_inventory.hpp"
#include "netboot/service/talos_wipe_cycle.hpp"
#include "netboot/service/talos_wipe_state_file.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;
using namespace std::chrono_literals;

namespace {

const WallClock::time_point t0 = WallClock::time_point(std::chrono::seconds(1767225600));
constexpr std::chrono::seconds window = 600s;
constexpr const char* node_address = "10.0.0.31";

// One script request and the state it leaves.
struct Step {
  TalosWipeDecision decision;
  std::optional<TalosWipeCycle> state;
};
Step request(const std::optional<TalosWipeCycle>& state, WallClock::time_point now) {
  TalosWipeDecision decision = decide_talos_wipe_boot(state, now, window, node_address);
  return {decision, decision.next};
}
std::optional<TalosWipeCycle> fetched(const std::optional<TalosWipeCycle>& state, WallClock::time_point now) {
  auto noted = note_talos_boot_files_fetched(state, now, node_address);
  REQUIRE(noted);
  return noted->next;
}

}  // namespace

TEST_CASE("talos wipe cycle: a power-on is a wipe boot, then the normal boot, then a wipe again", "[netboot][talos-wipe]") {
  auto first = request(std::nullopt, t0);
  CHECK(first.decision.boot == TalosBootKind::wipe);
  CHECK(first.decision.transition == TalosWipeTransition::power_on_wipe);
  CHECK(std::string(to_string(first.decision.transition)) == "power-on-wipe");
  CHECK(std::string(talos_wipe_cycle_state(*first.state)) == "wipe-served");

  auto noted = note_talos_boot_files_fetched(first.state, t0 + 2s, node_address);
  REQUIRE(noted);
  CHECK(noted->transition == TalosWipeTransition::wipe_files_fetched);
  CHECK(std::string(talos_wipe_cycle_state(noted->next)) == "wipe-running");
  // The initramfs after the kernel changes nothing more.
  CHECK_FALSE(note_talos_boot_files_fetched(noted->next, t0 + 3s, node_address));

  auto reboot = request(noted->next, t0 + 40s);
  CHECK(reboot.decision.boot == TalosBootKind::normal);
  CHECK(reboot.decision.transition == TalosWipeTransition::wipe_reboot_normal);
  CHECK(reboot.state->served_at == t0 + 40s);
  CHECK_FALSE(reboot.state->files_fetched_at);

  auto running = note_talos_boot_files_fetched(reboot.state, t0 + 42s, node_address);
  REQUIRE(running);
  CHECK(running->transition == TalosWipeTransition::normal_files_fetched);
  CHECK(std::string(talos_wipe_cycle_state(running->next)) == "normal-running");

  // The next request after a running normal boot is the next power-on, whenever it comes: soon (a
  // `talosctl reboot`) or days later.
  for (auto later : {5s, 3600s * 24 * 7}) {
    auto next = request(running->next, t0 + 42s + later);
    CHECK(next.decision.boot == TalosBootKind::wipe);
    CHECK(next.decision.transition == TalosWipeTransition::power_on_wipe);
  }
}

TEST_CASE("talos wipe cycle: the wipe boot's reboot counts only within the window after its files", "[netboot][talos-wipe]") {
  auto state = fetched(request(std::nullopt, t0).state, t0 + 5s);
  SECTION("exactly at the window's end: still its reboot") {
    auto at_edge = request(state, t0 + 5s + window);
    CHECK(at_edge.decision.boot == TalosBootKind::normal);
    CHECK(at_edge.decision.transition == TalosWipeTransition::wipe_reboot_normal);
  }
  SECTION("one millisecond later: the wipe boot never came back, this is a new power-on") {
    auto late = request(state, t0 + 5s + window + 1ms);
    CHECK(late.decision.boot == TalosBootKind::wipe);
    CHECK(late.decision.transition == TalosWipeTransition::wipe_expired);
    CHECK(late.state->served_at == t0 + 5s + window + 1ms);
    // ... and it starts a fresh cycle: its own reboot gets the normal boot.
    auto again = request(fetched(late.state, t0 + 700s), t0 + 730s);
    CHECK(again.decision.boot == TalosBootKind::normal);
  }
  SECTION("the window runs from the files, not from the script: a slow download does not eat it") {
    auto slow = fetched(request(std::nullopt, t0).state, t0 + 500s);
    CHECK(request(slow, t0 + 500s + window).decision.boot == TalosBootKind::normal);
  }
}

TEST_CASE("talos wipe cycle: a boot asking again before its files gets the same boot", "[netboot][talos-wipe]") {
  SECTION("the wipe boot asks twice (iPXE retried, a second NIC): wipe both times") {
    auto first = request(std::nullopt, t0);
    auto second = request(first.state, t0 + 3s);
    CHECK(second.decision.boot == TalosBootKind::wipe);
    CHECK(second.decision.transition == TalosWipeTransition::wipe_repeat);
    CHECK(second.state->served_at == t0);  // a repeat keeps the first time
    CHECK(request(fetched(second.state, t0 + 5s), t0 + 60s).decision.boot == TalosBootKind::normal);
  }
  SECTION("a wipe script whose files never came, asked again after the window: a new power-on's wipe") {
    auto first = request(std::nullopt, t0);
    auto late = request(first.state, t0 + window + 1s);
    CHECK(late.decision.boot == TalosBootKind::wipe);
    CHECK(late.decision.transition == TalosWipeTransition::power_on_wipe);
  }
  SECTION("the normal boot asks twice before its files: normal both times") {
    auto normal = request(fetched(request(std::nullopt, t0).state, t0 + 5s), t0 + 40s);
    auto repeat = request(normal.state, t0 + 45s);
    CHECK(repeat.decision.boot == TalosBootKind::normal);
    CHECK(repeat.decision.transition == TalosWipeTransition::normal_repeat);
    CHECK(repeat.state->served_at == t0 + 40s);
    SECTION("repeats cannot stretch the window: the first serve time counts") {
      auto much_later = request(repeat.state, t0 + 40s + window + 1s);
      CHECK(much_later.decision.boot == TalosBootKind::wipe);
      CHECK(much_later.decision.transition == TalosWipeTransition::power_on_wipe);
    }
    SECTION("exactly at the window's end: still the same boot") {
      CHECK(request(repeat.state, t0 + 40s + window).decision.boot == TalosBootKind::normal);
    }
  }
}

TEST_CASE("talos wipe cycle: clock steps", "[netboot][talos-wipe]") {
  auto running_wipe = fetched(request(std::nullopt, t0).state, t0 + 5s);
  SECTION("set back before the last recorded time: doubt, so a wipe") {
    auto back = request(running_wipe, t0 + 4s);
    CHECK(back.decision.boot == TalosBootKind::wipe);
    CHECK(back.decision.transition == TalosWipeTransition::clock_went_back);
    CHECK(back.state->served_at == t0 + 4s);
    // From there the cycle goes on with the new clock.
    CHECK(request(fetched(back.state, t0 + 6s), t0 + 30s).decision.boot == TalosBootKind::normal);
  }
  SECTION("set back before a served script whose files never came") {
    auto served = request(std::nullopt, t0).state;
    CHECK(request(served, t0 - 1h).decision.transition == TalosWipeTransition::clock_went_back);
  }
  SECTION("jumped forward past the window: the wipe boot counts as never come back") {
    CHECK(request(running_wipe, t0 + 24h).decision.transition == TalosWipeTransition::wipe_expired);
  }
  SECTION("files fetched at a time before the script (the clock went back in between): still noted") {
    auto served = request(std::nullopt, t0).state;
    auto noted = note_talos_boot_files_fetched(served, t0 - 10s, node_address);
    REQUIRE(noted);
    // The next request then sees a files time it can measure from.
    CHECK(request(noted->next, t0).decision.boot == TalosBootKind::normal);
  }
}

TEST_CASE("talos wipe cycle: requests and fetches from another address cannot turn a power-on into a reboot", "[netboot][talos-wipe]") {
  // Found fetching /ipxe?mac=<node> and the kernel from another host while the node ran its normal
  // boot: the cycle took that for a wipe boot that fetched its files, and the node's next power-on got
  // the normal boot (wipe-reboot-normal): no wipe, the old STATE back.
  const char* other = "10.0.0.99";
  auto running = fetched(request(std::nullopt, t0).state, t0 + 2s);  // the node's own wipe boot
  running = fetched(request(running, t0 + 40s).state, t0 + 42s);     // and its normal boot, running
  auto probe = decide_talos_wipe_boot(running, t0 + 100s, window, other);
  CHECK(probe.boot == TalosBootKind::wipe);
  CHECK(probe.transition == TalosWipeTransition::other_address);
  CHECK(probe.next.served_to == other);
  // Its kernel fetch from the same other address counts for that script, and so would make the next
  // request from that address a reboot; but the node's own power-on comes from its address: doubt.
  auto probe_files = note_talos_boot_files_fetched(probe.next, t0 + 101s, other);
  REQUIRE(probe_files);
  auto power_on = decide_talos_wipe_boot(probe_files->next, t0 + 200s, window, node_address);
  CHECK(power_on.boot == TalosBootKind::wipe);
  CHECK(power_on.transition == TalosWipeTransition::other_address);
  CHECK(std::string(to_string(power_on.transition)) == "other-address");
  // A fetch from another address while the node's wipe boot runs is not the node's: not noted, and the
  // node's reboot is still told from a repeat by its own fetch.
  auto wipe = request(std::nullopt, t0).state;
  CHECK_FALSE(note_talos_boot_files_fetched(wipe, t0 + 1s, other));
  CHECK(request(wipe, t0 + 30s).decision.transition == TalosWipeTransition::wipe_repeat);
  // A state without an address (a file written before served_to existed) is doubt.
  auto old = *fetched(request(std::nullopt, t0).state, t0 + 2s);
  old.served_to.clear();
  CHECK(request(old, t0 + 40s).decision.transition == TalosWipeTransition::other_address);
  CHECK_FALSE(note_talos_boot_files_fetched(TalosWipeCycle{TalosBootKind::wipe, t0, std::nullopt, ""}, t0 + 1s, node_address));
}

TEST_CASE("talos wipe cycle: files fetched without a script record change nothing", "[netboot][talos-wipe]") {
  CHECK_FALSE(note_talos_boot_files_fetched(std::nullopt, t0, node_address));
}

TEST_CASE("talos wipe cycle: a restart between the wipe boot and its reboot keeps the cycle", "[netboot][talos-wipe]") {
  TalosWipeCycles before;
  before["talos-1"] = *fetched(request(std::nullopt, t0).state, t0 + 5s);
  before["talos-2"] = *request(std::nullopt, t0 + 1ms).state;
  std::string text = talos_wipe_state_json(before);
  CHECK(text.find("\"served\": \"wipe\"") != std::string::npos);
  CHECK(text.find("\"files_fetched_at_ms\": 1767225605000") != std::string::npos);
  CHECK(text.find("\"served_to\": \"10.0.0.31\"") != std::string::npos);
  TalosWipeCycles after = parse_talos_wipe_state_json(text, "state/talos-wipe.json");
  CHECK(after == before);
  CHECK(request(after.at("talos-1"), t0 + 60s).decision.boot == TalosBootKind::normal);
  CHECK(request(after.at("talos-2"), t0 + 60s).decision.transition == TalosWipeTransition::wipe_repeat);
  CHECK(talos_wipe_state_json(after) == text);  // same bytes for the same state
}

TEST_CASE("talos wipe state file: bad content names the file and the field", "[netboot][talos-wipe]") {
  auto error_of = [](const std::string& text) {
    try {
      parse_talos_wipe_state_json(text, "/var/lib/aggrik8s/talos-wipe.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of("{"), Catch::Contains("/var/lib/aggrik8s/talos-wipe.json: not JSON"));
  CHECK_THAT(error_of("[]"), Catch::Contains("the top level: expected an object"));
  CHECK_THAT(error_of(R"({"format": "other", "version": 1, "nodes": {}})"), Catch::Contains("'format'"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-talos-wipe", "version": 2, "nodes": {}})"), Catch::Contains("'version'"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-talos-wipe", "version": 1})"), Catch::Contains("'nodes'"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-talos-wipe", "version": 1, "nodes": {"n": {"served": "maybe", "served_at_ms": 1}}})"),
             Catch::Contains("nodes.n.served: expected \"wipe\" or \"normal\""));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-talos-wipe", "version": 1, "nodes": {"n": {"served": "wipe", "served_at_ms": "x"}}})"),
             Catch::Contains("nodes.n.served_at_ms: expected an integer"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-talos-wipe", "version": 1, "nodes": {"n": {"served": "wipe", "served_at_ms": 1, "files_fetched_at_ms": 1.5}}})"),
             Catch::Contains("nodes.n.files_fetched_at_ms"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-talos-wipe", "version": 1, "nodes": {"n": {"served": "wipe", "served_at_ms": 1, "extra": 1}}})"),
             Catch::Contains("nodes.n.extra: expected no such field"));
  CHECK_THAT(error_of(R"({"format": "aggrik8s-talos-wipe", "version": 1, "nodes": {"n": {"served": "wipe", "served_at_ms": 1, "served_to": 7}}})"),
             Catch::Contains("nodes.n.served_to: expected a string"));
  // Written before served_to existed: read, with no address (doubt at the next request).
  auto old = parse_talos_wipe_state_json(R"({"format": "aggrik8s-talos-wipe", "version": 1, "nodes": {"n": {"served": "wipe", "served_at_ms": 1}}})", "f");
  CHECK(old.at("n").served_to.empty());
}

TEST_CASE("talos wipe argument: Talos' forms only", "[netboot][talos-wipe]") {
  CHECK_FALSE(check_talos_wipe_argument("system"));
  CHECK_FALSE(check_talos_wipe_argument("system:EPHEMERAL,STATE"));
  CHECK_FALSE(check_talos_wipe_argument("system:STATE"));
  CHECK_THAT(*check_talos_wipe_argument("disk"), Catch::Contains("is not a Talos wipe target"));
  CHECK_THAT(*check_talos_wipe_argument("system:"), Catch::Contains("empty partition label"));
  CHECK_THAT(*check_talos_wipe_argument("system:STATE,"), Catch::Contains("empty partition label"));
  CHECK_THAT(*check_talos_wipe_argument("system:state"), Catch::Contains("partition label 'state'"));
  CHECK_THAT(*check_talos_wipe_argument("system:STATE EPHEMERAL"), Catch::Contains("partition label"));
  CHECK(talos_wipe_kernel_argument(default_talos_wipe) == "talos.experimental.wipe=system:EPHEMERAL,STATE");
}

TEST_CASE("talos wipe cycle: the status line says what the next request gets", "[netboot][talos-wipe]") {
  auto running = fetched(request(std::nullopt, t0).state, t0 + 5s);
  CHECK(describe_talos_wipe_cycle(*running, t0 + 10s, window) ==
        "wipe boot running; next script: normal boot (wipe-reboot-normal)");
  CHECK(describe_talos_wipe_cycle(*running, t0 + 5s + window + 1s, window) ==
        "wipe boot running; next script: wipe boot (wipe-expired)");
}

namespace {
NodeInventory parse_nodes(const std::string& yaml, Diagnostics& diagnostics) {
  ConfigNode tree = load_yaml_string(yaml, "nodes.yaml", diagnostics);
  return parse_node_inventory(tree, diagnostics, /*check_files=*/false);
}
std::string messages(const Diagnostics& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics.all()) out += d.str() + "\n";
  return out;
}
}  // namespace

TEST_CASE("nodes file: talos wipe and wipe_reboot_window_s", "[netboot][talos-wipe]") {
  SECTION("defaults for an ephemeral Talos profile") {
    Diagnostics diagnostics;
    auto inventory = parse_nodes(R"(profiles:
  ram: {mode: ephemeral, talos: {kernel: k, initramfs: i}}
nodes: []
)", diagnostics);
    REQUIRE_FALSE(diagnostics.has_errors());
    const auto& talos = std::get<TalosBoot>(inventory.profiles.at("ram").target);
    CHECK(talos.wipe == "system:EPHEMERAL,STATE");
    CHECK(talos.wipe_reboot_window == 600s);
  }
  SECTION("given") {
    Diagnostics diagnostics;
    auto inventory = parse_nodes(R"(profiles:
  ram: {mode: ephemeral, talos: {kernel: k, initramfs: i, wipe: "system:STATE", wipe_reboot_window_s: 120}}
nodes: []
)", diagnostics);
    REQUIRE_FALSE(diagnostics.has_errors());
    const auto& talos = std::get<TalosBoot>(inventory.profiles.at("ram").target);
    CHECK(talos.wipe == "system:STATE");
    CHECK(talos.wipe_reboot_window == 120s);
  }
  SECTION("a bad wipe target is an error at its line") {
    Diagnostics diagnostics;
    parse_nodes("profiles:\n  ram:\n    mode: ephemeral\n    talos: {kernel: k, initramfs: i, wipe: everything}\nnodes: []\n",
                diagnostics);
    CHECK(diagnostics.has_errors());
    CHECK_THAT(messages(diagnostics), Catch::Contains("nodes.yaml:4:") && Catch::Contains("profiles.ram.talos.wipe") &&
                                          Catch::Contains("'everything' is not a Talos wipe target"));
  }
  SECTION("wipe without mode: ephemeral is an error") {
    Diagnostics diagnostics;
    parse_nodes("profiles:\n  cp:\n    talos: {kernel: k, initramfs: i, wipe: system}\nnodes: []\n", diagnostics);
    CHECK_THAT(messages(diagnostics), Catch::Contains("apply only to profiles with mode: ephemeral"));
  }
  SECTION("wipe: system is warned about (META goes too: an install loop with machine.install)") {
    Diagnostics diagnostics;
    parse_nodes("profiles:\n  ram:\n    mode: ephemeral\n    talos: {kernel: k, initramfs: i, wipe: system}\nnodes: []\n",
                diagnostics);
    CHECK_FALSE(diagnostics.has_errors());
    CHECK_THAT(messages(diagnostics), Catch::Contains("META included"));
  }
  SECTION("a window out of range") {
    Diagnostics diagnostics;
    parse_nodes("profiles:\n  ram:\n    mode: ephemeral\n    talos: {kernel: k, initramfs: i, wipe_reboot_window_s: 1}\nnodes: []\n",
                diagnostics);
    CHECK_THAT(messages(diagnostics), Catch::Contains("wipe_reboot_window_s"));
  }
}

TEST_CASE("kernel line check: an ephemeral Talos node's wipe boot is the longer line", "[netboot][talos-wipe]") {
  Diagnostics diagnostics;
  std::string base_url = "http://10.0.0.1:8080";
  auto inventory = parse_nodes(R"(profiles:
  ram: {mode: ephemeral, talos: {kernel: k, initramfs: i}}
nodes:
  - {name: t1, match: {mac: "52:54:00:00:00:01"}, profile: ram, talos_config: {env: T1_CONFIG}}
)", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  std::map<std::filesystem::path, KernelFile> kernels{{"k", assumed_kernel("k", "test")}};
  BootProfile& profile = inventory.profiles.at("ram");
  auto errors_with = [&](std::size_t args_bytes, BootMode mode) {
    std::get<TalosBoot>(profile.target).arguments = std::string(args_bytes, 'a');
    profile.mode = mode;
    Diagnostics check;
    check_ipxe_kernel_lines(inventory, base_url, kernels, check);
    return check.has_errors();
  };
  // The longest args whose normal line fits: its wipe boot, one word longer, does not.
  std::size_t longest = 0;
  for (std::size_t bytes = 1500; bytes < 2047 && !errors_with(bytes, BootMode::install); ++bytes) longest = bytes;
  REQUIRE(longest > 1500);
  CHECK(errors_with(longest, BootMode::ephemeral));
  CHECK_FALSE(errors_with(longest - talos_wipe_kernel_argument(default_talos_wipe).size() - 1, BootMode::ephemeral));
}
