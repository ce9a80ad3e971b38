// Which files `upload` sends: the ISO outputs a build's manifest.json lists (shared boot ISO first,
// then per node config ISO and per-node ISO), checked against the files on disk; and --dry-run, which
// sends nothing and prints no secret. (The upload itself, against a loopback HTTPS stand-in for the
// Proxmox API: tests/e2e/proxmox_upload.sh.)
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "builder/profile.hpp"
#include "deploy/proxmox/proxmox_upload.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

nlohmann::json entry(const test::TempDir& dir, const std::string& name, const std::string& content) {
  test::write_file(dir / name, content);
  return {{"file", name}, {"size", content.size()}, {"sha256", Sha256::of(content).hex()}};
}

Profile profile_named(const std::string& name) {
  Profile p;
  p.name = name;
  p.kind = ProfileKind::talos_iso;
  return p;
}

std::vector<std::string> names(const std::vector<ProxmoxUploadFile>& files) {
  std::vector<std::string> out;
  for (const auto& f : files) out.push_back(f.file_name);
  return out;
}

}  // namespace

TEST_CASE("proxmox upload: the ISO outputs come from the build's manifest", "[proxmox]") {
  test::TempDir dir;
  nlohmann::json manifest{
      {"profile", {{"name", "pve"}, {"kind", "talos-iso"}}},
      {"shared_boot_iso", entry(dir, "talos-metal-iso.iso", "boot iso bytes")},
      {"nodes",
       {{{"name", "cp1"},
         {"outputs",
          {{"config-iso", entry(dir, "cp1-config.iso", "cp1 config")},
           {"iso", entry(dir, "cp1.iso", "cp1 iso bytes")},
           {"netboot", {{"files", nlohmann::json::array()}}}}}},
        {{"name", "cp2"}, {"outputs", {{"config-iso", entry(dir, "cp2-config.iso", "cp2 config!")}}}}}}};
  test::write_file(dir / "manifest.json", manifest.dump(2));

  auto files = talos_iso_outputs(profile_named("pve"), dir.path());
  CHECK(names(files) == std::vector<std::string>{"talos-metal-iso.iso", "cp1-config.iso", "cp1.iso", "cp2-config.iso"});
  CHECK(files[1].path == dir / "cp1-config.iso");
  CHECK(files[1].size == 10);
  CHECK(files[1].sha256 == Sha256::of(std::string("cp1 config")).hex());
  CHECK(names(talos_iso_outputs(profile_named("pve"), dir.path(), {"cp2"})) ==
        std::vector<std::string>{"talos-metal-iso.iso", "cp2-config.iso"});
  CHECK_THROWS_WITH(talos_iso_outputs(profile_named("pve"), dir.path(), {"cp9"}), Catch::Contains("no node named 'cp9'"));
  CHECK_THROWS_WITH(talos_iso_outputs(profile_named("other"), dir.path()),
                    Catch::Contains("holds the outputs of profile 'pve', not 'other'"));

  // A file changed or removed since the build is not uploaded.
  test::write_file(dir / "cp1.iso", "changed");
  CHECK_THROWS_WITH(talos_iso_outputs(profile_named("pve"), dir.path()),
                    Catch::Contains("cp1.iso: is 7 bytes, the manifest says 13; build again"));
  std::filesystem::remove(dir / "cp1.iso");
  CHECK_THROWS_WITH(talos_iso_outputs(profile_named("pve"), dir.path()), Catch::Contains("cp1.iso: cannot read it"));

  test::write_file(dir / "manifest.json", R"({"profile": {"name": "pve"}, "nodes": {"cp1": {}}})");
  CHECK_THROWS_WITH(talos_iso_outputs(profile_named("pve"), dir.path()), Catch::Contains("not a manifest written by build"));

  test::TempDir empty;
  CHECK_THROWS_WITH(talos_iso_outputs(profile_named("pve"), empty.path()), Catch::Contains("build the profile first"));
}

TEST_CASE("proxmox upload: a dry run prints every request, sends nothing, never loads the secret", "[proxmox]") {
  test::TempDir dir;
  ProxmoxSettings settings;
  settings.api_url = "https://127.0.0.1:9/api2/json";  // discard port: nothing may connect
  settings.token_id = "builder@pve!images";
  settings.token_secret = {SecretReference::Kind::env, "AGGRIK8S_TEST_UNSET_PROXMOX_SECRET", {}};
  settings.node = "pve1";
  settings.storage = "local";
  test::write_file(dir / "cp1-config.iso", "0123456789");
  std::vector<ProxmoxUploadFile> files{{dir / "cp1-config.iso", "cp1-config.iso", 10, std::string(64, 'a')}};
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  ProxmoxUploadOptions options;
  options.dry_run = true;
  options.dry_run_output = out;
  auto outcomes = upload_to_proxmox(settings, files, options);
  REQUIRE(outcomes.size() == 1);
  CHECK(outcomes[0].action == ProxmoxUploadOutcome::Action::planned);
  CHECK(outcomes[0].volid == "local:iso/cp1-config.iso");
  std::rewind(out);
  std::string text;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, out)) text.append(buffer, n);
  std::fclose(out);
  CHECK_THAT(text, Catch::Contains("GET https://127.0.0.1:9/api2/json/nodes/pve1/storage/local/content?content=iso\n"));
  CHECK_THAT(text, Catch::Contains("POST https://127.0.0.1:9/api2/json/nodes/pve1/storage/local/upload\n"));
  CHECK_THAT(text, Catch::Contains("Authorization: PVEAPIToken=builder@pve!images=<redacted>"));
  CHECK_THAT(text, Catch::Contains("form filename: file cp1-config.iso (10 bytes"));
  CHECK_THAT(text, Catch::Contains("nothing is sent"));
}

TEST_CASE("proxmox upload: a file is left on the storage only when the record says these bytes went there", "[proxmox]") {
  // Proxmox lists no checksum, and every config ISO is 68 KiB: a file of the same name and size may
  // be another cluster's node of the same name (its PKI), or an older build's uploaded from a
  // directory since removed. Only the output directory's record tells.
  using Action = ProxmoxUploadDecision::Action;
  ProxmoxUploadFile file{"/out/cp1-config.iso", "cp1-config.iso", 69632, std::string(64, 'a')};
  const std::string same = file.sha256, other(64, 'b');
  struct Row {
    const char* what;
    std::optional<std::uint64_t> size_there;
    std::optional<std::string> recorded;
    bool force;
    Action action;
  };
  const std::vector<Row> rows{
      {"not there", std::nullopt, std::nullopt, false, Action::upload},
      {"not there, recorded (removed by hand)", std::nullopt, same, false, Action::upload},
      {"there, these bytes recorded", 69632, same, false, Action::skip},
      {"there, these bytes recorded, forced", 69632, same, true, Action::replace},
      {"there, other bytes recorded (rebuilt)", 69632, other, false, Action::replace},
      {"there with another size than recorded", 1000, same, false, Action::replace},
      {"there, same size, no record (another cluster's cp1)", 69632, std::nullopt, false, Action::conflict},
      {"there, other size, no record", 1000, std::nullopt, false, Action::conflict},
      {"there, no record, forced", 69632, std::nullopt, true, Action::replace},
  };
  for (const auto& row : rows) {
    INFO(row.what);
    auto decision = proxmox_upload_decision(file, row.size_there, row.recorded, row.force);
    CHECK(decision.action == row.action);
    if (row.action != Action::upload) CHECK_FALSE(decision.why.empty());
  }
  CHECK_THAT(proxmox_upload_decision(file, 69632, std::nullopt, false).why,
             Catch::Contains("this output directory did not upload it"));
}
