// What serve reads of an ephemeral Pi build: the manifest, current.json, the cmdline it writes for a
// node, and which build a booting node gets while rebuilds land (pins, pruning) — on real directories.
#include "netboot/service/ephemeral_pi_build.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
using Catch::Matchers::Contains;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;
namespace fs = std::filesystem;

namespace {

const std::string sha_a(64, 'a');

std::string manifest(const std::string& id, const std::string& root_file = "root.squashfs") {
  return R"({"format": 1, "build": ")" + id + R"(", "profile": "pi-workers",
    "root": {"file": ")" + root_file + R"(", "sha256": ")" + sha_a + R"(", "size": 4096},
    "nodes": {"w1": {"hostname": "worker-1", "cmdline": "console=serial0,115200 quiet cgroup_enable=memory",
                     "config_txt": "nodes/w1/config.txt", "layer": "nodes/w1/layer.tar"}}})";
}

void write_build(const fs::path& dir, const std::string& id) {
  fs::create_directories(dir / id / "nodes" / "w1");
  write_file(dir / id / "ephemeral.json", manifest(id));
}

void make_current(const fs::path& dir, const std::string& id) {
  write_file(dir / "current.json.partial", R"({"build": ")" + id + "\"}");
  fs::rename(dir / "current.json.partial", dir / "current.json");
  // A rebuild within the filesystem's timestamp granularity must still be seen.
  fs::last_write_time(dir / "current.json", fs::last_write_time(dir / "current.json") + std::chrono::seconds(1));
}

}  // namespace

TEST_CASE("ephemeral builds: the manifest is parsed and the node's cmdline names its root, sha256 and identity", "[ephemeral]") {
  EphemeralBuildManifest m = parse_ephemeral_manifest(manifest("0123456789abcdef"), "x/ephemeral.json");
  CHECK(m.id == "0123456789abcdef");
  CHECK(m.root_size == 4096);
  REQUIRE(m.nodes.count("w1") == 1);
  CHECK(m.nodes.at("w1").hostname == "worker-1");
  CHECK(ephemeral_node_cmdline(m, "w1", "http://10.0.0.2:8080/ephemeral/pi") ==
        "console=serial0,115200 quiet cgroup_enable=memory "
        "aggrik8s.root=http://10.0.0.2:8080/ephemeral/pi/0123456789abcdef/root.squashfs aggrik8s.root_sha256=" + sha_a +
        " aggrik8s.identity=http://10.0.0.2:8080/ephemeral/pi/0123456789abcdef/identity/w1\n");
  CHECK_FALSE(m.http_boot_url_base);  // a build without output.http_boot

  // With it, the URL base its signed boot.imgs carry: serve compares it with where it answers.
  nlohmann::json doc = nlohmann::json::parse(manifest("0123456789abcdef"));
  doc["http_boot_url_base"] = "http://10.0.0.2:8080/ephemeral/eph";
  EphemeralBuildManifest with = parse_ephemeral_manifest(doc.dump(), "x/ephemeral.json");
  CHECK(with.http_boot_url_base == "http://10.0.0.2:8080/ephemeral/eph");
  doc["http_boot_url_base"] = 7;
  CHECK_THROWS_WITH(parse_ephemeral_manifest(doc.dump(), "m.json"), Contains("'http_boot_url_base' must be a string"));
}

TEST_CASE("ephemeral builds: a manifest that names files outside the build or is malformed is refused", "[ephemeral]") {
  CHECK_THROWS_WITH(parse_ephemeral_manifest(manifest("0123456789abcdef", "../root.squashfs"), "m.json"),
                    Contains("m.json: root: 'file' must be a relative path inside the build, got '../root.squashfs'"));
  CHECK_THROWS_WITH(parse_ephemeral_manifest(manifest("../../etc"), "m.json"), Contains("'build' must be lowercase hex"));
  CHECK_THROWS_WITH(parse_ephemeral_manifest("{\"format\": 2}", "m.json"), Contains("'format' must be 1"));
  CHECK_THROWS_WITH(parse_ephemeral_manifest("not json", "m.json"), Contains("m.json: not JSON"));
  CHECK_THROWS_WITH(parse_ephemeral_current("{\"build\": \"x/y\"}", "c.json"), Contains("c.json: 'build' must be lowercase hex"));
}

TEST_CASE("ephemeral builds: a boot keeps the build it started with, the next boot gets the rebuild", "[ephemeral]") {
  TempDir temp;
  fs::path dir = temp.path() / "ephemeral" / "pi-workers";
  write_build(dir, "1111111111111111");
  make_current(dir, "1111111111111111");
  EphemeralPiBuilds builds(dir, std::chrono::minutes(10));
  auto t0 = EphemeralPiBuilds::Clock::now();
  CHECK(builds.for_boot("w1", true, t0)->manifest.id == "1111111111111111");

  // A rebuild lands in the middle of w1's boot.
  write_build(dir, "2222222222222222");
  make_current(dir, "2222222222222222");
  CHECK(builds.current()->manifest.id == "2222222222222222");
  CHECK(builds.for_boot("w1", false, t0 + std::chrono::seconds(30))->manifest.id == "1111111111111111");
  // Another node starting now gets the new build.
  CHECK(builds.for_boot("w2", true, t0 + std::chrono::seconds(30))->manifest.id == "2222222222222222");
  // w1's next boot (config.txt again) takes the current build; so does a file long after its pin.
  CHECK(builds.for_boot("w1", true, t0 + std::chrono::minutes(2))->manifest.id == "2222222222222222");
  CHECK(builds.for_boot("w3", false, t0)->manifest.id == "2222222222222222");

  // Retired builds stay for the keep time after current.json changed (a node may have started with
  // them just before, and a restarted serve has no pins to tell), then go unless a node was pinned to
  // one within the keep time.
  write_build(dir, "3333333333333333");
  make_current(dir, "3333333333333333");
  auto retired_at = fs::last_write_time(dir / "current.json");
  std::vector<std::string> none;
  CHECK(builds.prune(t0 + std::chrono::minutes(3), std::chrono::hours(1), retired_at + std::chrono::minutes(59)) == none);
  CHECK(fs::exists(dir / "1111111111111111"));
  // An hour after the rebuild: build 1 goes; build 2 stays, w2 was pinned to it 3 minutes ago.
  CHECK(builds.prune(t0 + std::chrono::minutes(3), std::chrono::hours(1), retired_at + std::chrono::hours(1)) ==
        std::vector<std::string>{"1111111111111111"});
  CHECK(fs::exists(dir / "2222222222222222"));
  CHECK(builds.prune(t0 + std::chrono::hours(2), std::chrono::hours(1), retired_at + std::chrono::hours(2)) ==
        std::vector<std::string>{"2222222222222222"});
  CHECK(fs::exists(dir / "3333333333333333"));
  // A new serve (no pins) after a rebuild keeps the retired build too.
  write_build(dir, "4444444444444444");
  make_current(dir, "4444444444444444");
  EphemeralPiBuilds restarted(dir, std::chrono::minutes(10));
  CHECK(restarted.prune(t0, std::chrono::hours(1), fs::last_write_time(dir / "current.json") + std::chrono::minutes(5)) == none);
  CHECK(fs::exists(dir / "3333333333333333"));
  CHECK(builds.find("2222222222222222") == nullptr);
  CHECK(builds.find("../pi-workers") == nullptr);
  CHECK(builds.find("4444444444444444")->manifest.id == "4444444444444444");
}

TEST_CASE("ephemeral builds: a missing or broken current.json is an error naming it", "[ephemeral]") {
  TempDir temp;
  EphemeralPiBuilds builds(temp.path(), std::chrono::minutes(10));
  CHECK_THROWS_WITH(builds.current(), Contains((temp.path() / "current.json").string()));
  write_file(temp.path() / "current.json", "{\"build\": \"4444444444444444\"}");
  CHECK_THROWS_WITH(builds.current(), Contains("cannot read " + (temp.path() / "4444444444444444" / "ephemeral.json").string()));
}
