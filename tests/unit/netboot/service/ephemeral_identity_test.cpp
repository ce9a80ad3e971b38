// netboot/ephemeral_identity, the pure parts: a new identity's formats, the store's file format (round
// trip, and errors that name the file and field without printing secrets) and the identity bundle read
// back with a minimal ustar reader. The store on a real directory, GNU tar, busybox tar and ssh-keygen
// are in tests/integration/netboot/service/ephemeral_identity_test.cpp.
#include "netboot/service/ephemeral_identity.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.hpp"

using namespace aggrik8s::netboot;
using Catch::Matchers::Contains;

namespace {

struct TarEntry {
  std::string name;
  char type = 0;
  unsigned mode = 0;
  unsigned long uid = 0, gid = 0;
  long long mtime = 0;
  std::string uname, gname, content;
};

unsigned long long octal_field(const std::string& block, std::size_t offset, std::size_t length) {
  unsigned long long value = 0;
  for (std::size_t i = offset; i < offset + length && block[i] >= '0' && block[i] <= '7'; ++i)
    value = value * 8 + static_cast<unsigned>(block[i] - '0');
  return value;
}

std::string text_field(const std::string& block, std::size_t offset, std::size_t length) {
  std::string text = block.substr(offset, length);
  return text.substr(0, text.find('\0'));
}

// Plain ustar only: the generated entries need no pax extended headers, and a test failing on one
// would show that they gained some.
std::vector<TarEntry> read_ustar(const std::string& tar) {
  std::vector<TarEntry> entries;
  REQUIRE(tar.size() % 512 == 0);
  for (std::size_t at = 0; at + 512 <= tar.size();) {
    std::string block = tar.substr(at, 512);
    if (block == std::string(512, '\0')) break;
    REQUIRE(block.substr(257, 6) == std::string("ustar\0", 6));
    TarEntry entry;
    std::string prefix = text_field(block, 345, 155);
    entry.name = (prefix.empty() ? "" : prefix + "/") + text_field(block, 0, 100);
    entry.mode = static_cast<unsigned>(octal_field(block, 100, 8));
    entry.uid = octal_field(block, 108, 8);
    entry.gid = octal_field(block, 116, 8);
    entry.mtime = static_cast<long long>(octal_field(block, 136, 12));
    entry.type = block[156];
    entry.uname = text_field(block, 265, 32);
    entry.gname = text_field(block, 297, 32);
    std::size_t size = octal_field(block, 124, 12);
    entry.content = tar.substr(at + 512, size);
    at += 512 + (size + 511) / 512 * 512;
    entries.push_back(entry);
  }
  return entries;
}

bool is_lowercase_hex(const std::string& text) {
  return text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

NodeIdentity fixed_identity() { return generate_node_identity("pi-worker-1", 1'700'000'000); }

}  // namespace

TEST_CASE("ephemeral identity: a new identity has RKE2's and systemd's formats", "[identity]") {
  NodeIdentity identity = generate_node_identity("pi-worker-1", 42);
  CHECK(identity.node_name == "pi-worker-1");
  CHECK(identity.created_at == 42);
  CHECK(identity.node_password.reveal().size() == 32);
  CHECK(is_lowercase_hex(identity.node_password.reveal()));
  REQUIRE(identity.machine_id.size() == 32);
  CHECK(is_lowercase_hex(identity.machine_id));
  CHECK(identity.machine_id[12] == '4');                                          // UUID version 4
  CHECK(std::string("89ab").find(identity.machine_id[16]) != std::string::npos);  // variant 1
  CHECK(ed25519_public_key_of(identity.ssh_host_key.seed.reveal()) == identity.ssh_host_key.public_key);

  NodeIdentity other = generate_node_identity("pi-worker-1", 42);
  CHECK(other.node_password.reveal() != identity.node_password.reveal());
  CHECK(other.machine_id != identity.machine_id);
  CHECK_THROWS_WITH(generate_node_identity("../x", 0), Contains("node name \"../x\" is not a DNS label"));
}

TEST_CASE("ephemeral identity: the store's JSON round-trips", "[identity]") {
  NodeIdentity identity = fixed_identity();
  std::string json = node_identity_json(identity);
  auto parsed = nlohmann::json::parse(json);
  CHECK(parsed["format"] == "aggrik8s-ephemeral-identity/1");
  CHECK(parsed["node"] == "pi-worker-1");
  CHECK(parsed["created_at"] == 1'700'000'000);
  CHECK(parsed["ssh_host_ed25519_key_pub"] ==
        "ssh-ed25519 " + openssh_ed25519_public_key_base64(identity.ssh_host_key.public_key));

  NodeIdentity back = parse_node_identity_json(json, "/state/identity/pi-worker-1.json");
  CHECK(back.node_name == identity.node_name);
  CHECK(back.node_password.reveal() == identity.node_password.reveal());
  CHECK(back.ssh_host_key.seed.reveal() == identity.ssh_host_key.seed.reveal());
  CHECK(back.ssh_host_key.public_key == identity.ssh_host_key.public_key);
  CHECK(back.machine_id == identity.machine_id);
  CHECK(back.created_at == identity.created_at);
  CHECK(node_identity_json(back) == json);
}

TEST_CASE("ephemeral identity: a corrupt file is an error naming file and field, never a new identity", "[identity]") {
  NodeIdentity identity = fixed_identity();
  const std::string file = "/state/identity/pi-worker-1.json";
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    auto json = nlohmann::json::parse(node_identity_json(identity));
    if (value.is_null()) {
      json.erase(key);
    } else {
      json[key] = value;
    }
    return json.dump();
  };
  auto error_of = [&](const std::string& text) {
    try {
      parse_node_identity_json(text, file);
    } catch (const aggrik8s::Error& e) {
      return std::string(e.what());
    }
    FAIL("no error for " << text);
    return std::string();
  };

  std::string message = error_of("{\"format\": ");
  CHECK_THAT(message, Contains("identity file /state/identity/pi-worker-1.json is corrupt: not valid JSON"));
  CHECK_THAT(message, Contains("RKE2 rejects a known node name with a new node password"));
  CHECK_THAT(error_of("[]"), Contains("expected a JSON object"));
  CHECK_THAT(error_of(with("format", "v2")),
             Contains("field 'format' is \"v2\", expected \"aggrik8s-ephemeral-identity/1\""));
  CHECK_THAT(error_of(with("node_password", nullptr)), Contains("field 'node_password' is missing"));
  CHECK_THAT(error_of(with("node_password", 7)), Contains("field 'node_password' must be a string"));
  CHECK_THAT(error_of(with("node", "Bad_Name")), Contains("field 'node' must be a DNS label"));
  CHECK_THAT(error_of(with("created_at", "yesterday")), Contains("field 'created_at' must be an integer"));
  CHECK_THAT(error_of(with("machine_id", "abc")), Contains("field 'machine_id' must be 32 lowercase hex digits"));
  CHECK_THAT(error_of(with("machine_id", std::string(32, '0'))), Contains("not all zero"));
  CHECK_THAT(error_of(with("ssh_host_ed25519_key", "00")),
             Contains("field 'ssh_host_ed25519_key' must be 64 lowercase hex"));
  CHECK_THAT(error_of(with("ssh_host_ed25519_key_pub",
                           "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea")),
             Contains("field 'ssh_host_ed25519_key_pub' does not match the private key"));

  // A malformed password is refused without being printed.
  std::string bad_password = "secret with blanks";
  std::string password_error = error_of(with("node_password", bad_password));
  CHECK_THAT(password_error, Contains("field 'node_password' must be 1-256 printable ASCII"));
  CHECK_THAT(password_error, !Contains(bad_password));
  // ... and a password copied from a node made before it became ephemeral is kept as it is.
  CHECK(parse_node_identity_json(with("node_password", "K10-old-node-password"), file).node_password.reveal() ==
        "K10-old-node-password");
}

TEST_CASE("identity bundle: generated files with their modes, owners and contents", "[identity]") {
  NodeIdentity identity = fixed_identity();
  std::string tar = identity_bundle_tar(identity, "", "pi-worker-1", 1'234'567'890);
  std::vector<TarEntry> entries = read_ustar(tar);
  REQUIRE(entries.size() == 8);
  std::vector<std::tuple<std::string, char, unsigned>> expected = {
      {"etc/", '5', 0755},
      {"etc/rancher/", '5', 0755},
      {"etc/rancher/node/", '5', 0755},
      {"etc/ssh/", '5', 0755},
      {"etc/rancher/node/password", '0', 0600},
      {"etc/ssh/ssh_host_ed25519_key", '0', 0600},
      {"etc/ssh/ssh_host_ed25519_key.pub", '0', 0644},
      {"etc/machine-id", '0', 0444},
  };
  for (std::size_t i = 0; i < entries.size(); ++i) {
    INFO(entries[i].name);
    CHECK(entries[i].name == std::get<0>(expected[i]));
    CHECK(entries[i].type == std::get<1>(expected[i]));
    CHECK(entries[i].mode == std::get<2>(expected[i]));
    CHECK(entries[i].uid == 0);
    CHECK(entries[i].gid == 0);
    CHECK(entries[i].uname.empty());
    CHECK(entries[i].gname.empty());
    CHECK(entries[i].mtime == 1'234'567'890);
  }
  CHECK(entries[4].content == identity.node_password.reveal() + "\n");
  CHECK(entries[5].content == openssh_ed25519_private_key_file(identity.ssh_host_key.seed.reveal(),
                                                               identity.ssh_host_key.public_key, "root@pi-worker-1"));
  CHECK(entries[6].content == openssh_ed25519_public_key_line(identity.ssh_host_key.public_key, "root@pi-worker-1"));
  CHECK(entries[7].content == identity.machine_id + "\n");
}

TEST_CASE("identity bundle: reproducible, and dated by the identity's creation without a fixed time", "[identity]") {
  NodeIdentity identity = fixed_identity();
  CHECK(identity_bundle_tar(identity, "", "pi-worker-1", 5) == identity_bundle_tar(identity, "", "pi-worker-1", 5));
  for (const TarEntry& entry : read_ustar(identity_bundle_tar(identity, "", "pi-worker-1", std::nullopt))) {
    CHECK(entry.mtime == 1'700'000'000);
  }
}

TEST_CASE("identity bundle: bad host names and node layers are refused", "[identity]") {
  NodeIdentity identity = fixed_identity();
  CHECK_THROWS_WITH(identity_bundle_tar(identity, "", "pi worker", 0),
                    Contains("host name \"pi worker\" of node 'pi-worker-1' is not a host name"));
  CHECK_THROWS_AS(identity_bundle_tar(identity, "", "", 0), aggrik8s::Error);
  CHECK_THROWS_WITH(identity_bundle_tar(identity, std::string(1024, 'x'), "pi-worker-1", 0),
                    Contains("node layer tar of node 'pi-worker-1' is not a valid tar"));
}
