// Proxmox VE API: request building, --dry-run text (secret redacted), answers parsed, Proxmox' error
// messages, the profile's proxmox keys.
#include <catch2/catch.hpp>

#include "builder/profile.hpp"
#include "deploy/proxmox/proxmox_api.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

const ProxmoxTarget target{"https://pve1.lab.example:8006/api2/json", "pve1", "local"};
const ProxmoxUploadFile cp1_iso{"/out/cp1.iso", "cp1.iso", 123456,
                                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"};

std::string all(const Diagnostics& d) {
  std::string out;
  for (const auto& x : d.all()) out += x.str() + "\n";
  return out;
}

}  // namespace

TEST_CASE("proxmox: api_url is normalised to .../api2/json, https only", "[proxmox]") {
  CHECK(proxmox_api_base_url("https://pve1:8006") == "https://pve1:8006/api2/json");
  CHECK(proxmox_api_base_url("https://pve1:8006/") == "https://pve1:8006/api2/json");
  CHECK(proxmox_api_base_url("https://pve1:8006/api2/json/") == "https://pve1:8006/api2/json");
  CHECK(proxmox_api_base_url("https://[fd00::1]:8006") == "https://[fd00::1]:8006/api2/json");
  std::string why;
  CHECK_FALSE(proxmox_api_base_url("http://pve1:8006", &why));
  CHECK_THAT(why, Catch::Contains("https://"));
  CHECK_FALSE(proxmox_api_base_url("https://pve1:8006/api2/extjs", &why));
  CHECK_FALSE(proxmox_api_base_url("https://root:pw@pve1:8006", &why));
  CHECK_FALSE(proxmox_api_base_url("https://", &why));
}

TEST_CASE("proxmox: token ids, storage ids and certificate fingerprints", "[proxmox]") {
  CHECK(is_proxmox_token_id("builder@pve!images"));
  CHECK(is_proxmox_token_id("root@pam!ci-1"));
  CHECK_FALSE(is_proxmox_token_id("builder@pve"));
  CHECK_FALSE(is_proxmox_token_id("builder!images"));
  CHECK_FALSE(is_proxmox_token_id("builder@pve!"));
  CHECK_FALSE(is_proxmox_token_id("builder@pve!a=b"));
  CHECK_FALSE(is_proxmox_token_id("builder@pve!a\r\nX-Injected: 1"));
  CHECK(is_proxmox_storage_id("local"));
  CHECK(is_proxmox_storage_id("iso-store_2.nfs"));
  CHECK_FALSE(is_proxmox_storage_id("2local"));
  CHECK_FALSE(is_proxmox_storage_id("local/"));
  CHECK_FALSE(is_proxmox_storage_id("local-"));
  CHECK(is_proxmox_node_name("pve1"));
  CHECK(is_proxmox_node_name("PVE-Node-2"));
  CHECK_FALSE(is_proxmox_node_name("-pve"));
  CHECK_FALSE(is_proxmox_node_name("pve1.lab.example"));
  CHECK_FALSE(is_proxmox_node_name("pve/1"));
  std::string colon = "B0:88:9E:88:2F:98:51:D2:13:7A:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55";
  auto hex = normalize_certificate_fingerprint(colon);
  REQUIRE(hex);
  CHECK(*hex == "b0889e882f9851d2137a00112233445566778899aabbccddeeff001122334455");
  CHECK(normalize_certificate_fingerprint(*hex) == hex);
  CHECK_FALSE(normalize_certificate_fingerprint(colon.substr(3)));  // 31 bytes: a SHA-1 or a typo
  CHECK_FALSE(normalize_certificate_fingerprint("zz" + colon.substr(2)));
}

TEST_CASE("proxmox: requests are the documented API calls", "[proxmox]") {
  ProxmoxRequest listing = storage_content_request(target);
  CHECK(listing.method == "GET");
  CHECK(listing.url == "https://pve1.lab.example:8006/api2/json/nodes/pve1/storage/local/content?content=iso");
  CHECK_FALSE(listing.file);

  ProxmoxRequest upload = iso_upload_request(target, cp1_iso);
  CHECK(upload.method == "POST");
  CHECK(upload.url == "https://pve1.lab.example:8006/api2/json/nodes/pve1/storage/local/upload");
  REQUIRE(upload.fields.size() == 3);
  CHECK(upload.fields[0].name == "content");
  CHECK(upload.fields[0].value == "iso");
  CHECK(upload.fields[1].name == "checksum-algorithm");
  CHECK(upload.fields[1].value == "sha256");
  CHECK(upload.fields[2].name == "checksum");
  CHECK(upload.fields[2].value == cp1_iso.sha256);
  REQUIRE(upload.file);
  CHECK(upload.file->field == "filename");
  CHECK(upload.file->file_name == "cp1.iso");
  CHECK(upload.file->size == 123456);
  CHECK(upload.what == "upload of cp1.iso to storage local on pve1");

  // The task's own node is asked, and the UPID is one path segment.
  std::string upid = "UPID:pve2:000A1B2C:0BADF00D:6756A1B2:imgcopy::builder@pve!images:";
  ProxmoxRequest status = task_status_request(target, upid);
  CHECK(status.method == "GET");
  CHECK(status.url ==
        "https://pve1.lab.example:8006/api2/json/nodes/pve2/tasks/"
        "UPID%3Apve2%3A000A1B2C%3A0BADF00D%3A6756A1B2%3Aimgcopy%3A%3Abuilder%40pve%21images%3A/status");
  CHECK(upid_node(upid) == "pve2");
  CHECK_FALSE(upid_node("pve2:1234"));
  CHECK_FALSE(upid_node("UPID::x"));
}

TEST_CASE("proxmox: --dry-run text shows method, URL, headers, fields and file, never the secret", "[proxmox]") {
  std::string text = describe_request(iso_upload_request(target, cp1_iso), "builder@pve!images");
  CHECK(text ==
        "POST https://pve1.lab.example:8006/api2/json/nodes/pve1/storage/local/upload\n"
        "  Authorization: PVEAPIToken=builder@pve!images=<redacted>\n"
        "  Content-Type: multipart/form-data\n"
        "  form content=iso\n"
        "  form checksum-algorithm=sha256\n"
        "  form checksum=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
        "  form filename: file cp1.iso (123456 bytes, 121 KiB, from /out/cp1.iso)\n");
  CHECK(proxmox_authorization_prefix("builder@pve!images") == "PVEAPIToken=builder@pve!images=");
  CHECK(redact_secret("a 0f1e-s3cr3t b 0f1e-s3cr3t", "0f1e-s3cr3t") == "a <redacted> b <redacted>");
  CHECK(redact_secret("nothing", "") == "nothing");
}

TEST_CASE("proxmox: answers are parsed, malformed ones named", "[proxmox]") {
  auto volumes = parse_storage_content(
      R"({"data":[{"volid":"local:iso/cp1.iso","size":123456,"format":"iso","content":"iso","ctime":1767225600},
                  {"volid":"local:iso/talos-metal-iso.iso","size":104857600}]})",
      "listing");
  REQUIRE(volumes.size() == 2);
  CHECK(volumes[1].size == 104857600);
  auto found = find_iso_volume(volumes, "local", "cp1.iso");
  REQUIRE(found);
  CHECK(found->size == 123456);
  CHECK_FALSE(find_iso_volume(volumes, "nfs", "cp1.iso"));
  CHECK_FALSE(find_iso_volume(volumes, "local", "cp2.iso"));
  CHECK(parse_storage_content(R"({"data":[]})", "listing").empty());
  CHECK_THROWS_WITH(parse_storage_content("<html>login</html>", "listing"), Catch::Contains("listing: the answer is not JSON"));
  CHECK_THROWS_WITH(parse_storage_content(R"({"data":{}})", "listing"), Catch::Contains("not a list"));

  CHECK(parse_upload_task(R"({"data":"UPID:pve1:1:2:3:imgcopy::root@pam:"})", "upload") == "UPID:pve1:1:2:3:imgcopy::root@pam:");
  CHECK_THROWS_WITH(parse_upload_task(R"({"data":null})", "upload"), Catch::Contains("not a task id"));

  auto running = parse_task_status(R"({"data":{"status":"running","upid":"UPID:x"}})", "status");
  CHECK_FALSE(running.stopped);
  auto ok = parse_task_status(R"({"data":{"status":"stopped","exitstatus":"OK"}})", "status");
  CHECK(ok.stopped);
  CHECK(ok.exitstatus == "OK");
  auto failed = parse_task_status(R"({"data":{"status":"stopped","exitstatus":"checksum mismatch"}})", "status");
  CHECK(failed.exitstatus == "checksum mismatch");
  CHECK(parse_task_status(R"({"data":{"status":"stopped"}})", "status").exitstatus == "no exit status");
  CHECK_THROWS_WITH(parse_task_status(R"({"errors":{}})", "status"), Catch::Contains("no \"data\""));
}

TEST_CASE("proxmox: error answers carry Proxmox' own message", "[proxmox]") {
  CHECK(proxmox_error_text(500, "storage 'nope' does not exist",
                           R"({"data":null,"message":"storage 'nope' does not exist\n"})") ==
        "HTTP 500 storage 'nope' does not exist");
  CHECK(proxmox_error_text(400, "Parameter verification failed.",
                           R"({"data":null,"errors":{"filename":"wrong file extension\n","content":"bad"}})") ==
        "HTTP 400 Parameter verification failed. (content: bad; filename: wrong file extension)");
  CHECK(proxmox_error_text(403, "", R"j({"data":null,"message":"Permission check failed (/storage/local, Datastore.AllocateTemplate)"})j") ==
        "HTTP 403 (Permission check failed (/storage/local, Datastore.AllocateTemplate))");
  CHECK(proxmox_error_text(502, "Bad Gateway", "<html>nginx</html>") == "HTTP 502 Bad Gateway");
  CHECK(percent_encode("a b/c~d") == "a%20b%2Fc~d");
}

TEST_CASE("proxmox: the profile's proxmox section", "[proxmox][profile]") {
  test::TempDir dir;
  test::write_file(dir / "cp.yaml", "version: v1alpha1\n");
  test::write_file(dir / "token", "0f1e2d3c-aaaa-bbbb-cccc-123456789abc\n");
  test::write_file(dir / "ca.pem", "-----BEGIN CERTIFICATE-----\n");
  std::string head =
      "kind: talos-iso\nname: t\ntalos:\n  kernel: {path: k}\n  initramfs: {path: i}\n  config: {file: cp.yaml}\n"
      "nodes:\n  - name: cp1\n";
  test::write_file(dir / "good.yaml", head +
                                          "proxmox:\n  api_url: https://pve1:8006\n  token_id: builder@pve!images\n"
                                          "  token_secret: {file: token}\n  node: pve1\n  storage: local\n"
                                          "  ca_file: ca.pem\n");
  Diagnostics d;
  auto profile = load_profile(dir / "good.yaml", d);
  INFO(all(d));
  REQUIRE(profile);
  REQUIRE(profile->proxmox);
  CHECK(profile->proxmox->api_url == "https://pve1:8006/api2/json");
  CHECK(profile->proxmox->verify_tls);
  CHECK(profile->proxmox->ca_file == dir / "ca.pem");
  CHECK_FALSE(profile->proxmox->fingerprint);

  test::write_file(dir / "bad.yaml", head +
                                         "proxmox:\n  api_url: http://pve1:8006\n  token_id: builder\n"
                                         "  token_secret: 0f1e2d3c-inline\n  node: pve1\n  storage: 9bad\n"
                                         "  fingerprint: AA:BB\n  verify_tls: false\n  ca_file: ca.pem\n");
  Diagnostics bad;
  CHECK_FALSE(load_profile(dir / "bad.yaml", bad));
  std::string text = all(bad);
  CHECK_THAT(text, Catch::Contains("bad.yaml:10:12: 'proxmox.api_url' must be an https:// URL"));
  CHECK_THAT(text, Catch::Contains("bad.yaml:11:13: 'proxmox.token_id' must look like USER@REALM!TOKENID"));
  CHECK_THAT(text, Catch::Contains("bad.yaml:12:17: 'proxmox.token_secret' is a secret and must not be written inline"));
  CHECK_THAT(text, Catch::Contains("bad.yaml:14:12: 'proxmox.storage' must be a storage ID"));
  CHECK_THAT(text, Catch::Contains("bad.yaml:15:16: 'proxmox.fingerprint' must be a SHA-256 certificate fingerprint"));
  CHECK_THAT(text, Catch::Contains("bad.yaml:16:15: 'proxmox.verify_tls: false' turns off what 'ca_file'"));
  // The inline secret is refused without being repeated.
  CHECK_THAT(text, !Catch::Contains("0f1e2d3c-inline"));
}
