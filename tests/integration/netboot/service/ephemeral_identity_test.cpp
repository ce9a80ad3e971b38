// netboot/ephemeral_identity against the real world: the store on a real directory (restart, threads
// racing for one node, permissions, corrupt files, hostile names), the bundle listed by GNU tar and
// extracted by busybox tar as the node's initramfs does, and the extracted SSH host key read by
// ssh-keygen.
#include "netboot/service/ephemeral_identity.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
using aggrik8s::test::read_file;
using aggrik8s::test::run;
using aggrik8s::test::StderrToFile;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const aggrik8s::Error& e) {
    return e.what();
  }
  FAIL("no error");
  return "";
}

unsigned mode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::string owner_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid);
}

std::string stdout_of(const std::string& command) {
  auto result = run("timeout 60 " + command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

std::set<std::string> names_in(const fs::path& directory) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) names.insert(entry.path().filename().string());
  return names;
}

}  // namespace

TEST_CASE("identity store: created 0700, one 0600 file per node, the same identity after a restart", "[identity]") {
  TempDir dir;
  fs::path store_dir = dir / "identity";
  std::string password, machine_id, seed;
  {
    StderrToFile log(dir / "stderr.log");
    EphemeralIdentityStore store(store_dir);
    CHECK(mode_of(store_dir) == 0700);
    CHECK_FALSE(store.find("pi-worker-1").has_value());
    NodeIdentity identity = store.get_or_create("pi-worker-1");
    password = identity.node_password.reveal();
    machine_id = identity.machine_id;
    seed = identity.ssh_host_key.seed.reveal();
    CHECK(store.get_or_create("pi-worker-1").node_password.reveal() == password);
    REQUIRE(store.find("pi-worker-1").has_value());
    CHECK(store.find("pi-worker-1")->machine_id == machine_id);

    std::string logged = log.text();
    CHECK_THAT(logged, Contains("node pi-worker-1: new ephemeral identity stored in " +
                                (store_dir / "pi-worker-1.json").string()));
    CHECK_THAT(logged, Contains(openssh_fingerprint_sha256(identity.ssh_host_key.public_key)));
    CHECK_THAT(logged, !Contains(password));
    std::string file_text = read_file(store_dir / "pi-worker-1.json");
    std::string seed_hex = nlohmann::json::parse(file_text)["ssh_host_ed25519_key"].get<std::string>();
    CHECK_THAT(logged, !Contains(seed_hex));
  }
  CHECK(names_in(store_dir) == std::set<std::string>{"pi-worker-1.json"});
  CHECK(mode_of(store_dir / "pi-worker-1.json") == 0600);

  // A server restart: a new store object on the same directory; an unfinished file of a server that
  // stopped mid-write is removed.
  write_file(store_dir / ".pi-worker-2.json.123.0.tmp", "{");
  EphemeralIdentityStore restarted(store_dir);
  CHECK(names_in(store_dir) == std::set<std::string>{"pi-worker-1.json"});
  NodeIdentity again = restarted.get_or_create("pi-worker-1");
  CHECK(again.node_password.reveal() == password);
  CHECK(again.machine_id == machine_id);
  CHECK(again.ssh_host_key.seed.reveal() == seed);
  CHECK(restarted.get_or_create("pi-worker-2").node_password.reveal() != password);
}

TEST_CASE("identity store: threads racing for one node get one identity", "[identity]") {
  TempDir dir;
  // Two store objects on one directory stand for two server processes: their own locks do not
  // serialise them, the no-replace link does.
  EphemeralIdentityStore first(dir / "identity");
  EphemeralIdentityStore second(dir / "identity");
  constexpr int threads = 8;
  std::vector<std::string> passwords(threads * 2), other_node(threads);
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&, i] {
      EphemeralIdentityStore& store = i % 2 == 0 ? first : second;
      passwords[static_cast<std::size_t>(i)] = store.get_or_create("pi-worker-1").node_password.reveal();
      other_node[static_cast<std::size_t>(i)] = store.get_or_create("pi-worker-2").machine_id;
      passwords[static_cast<std::size_t>(threads + i)] = store.get_or_create("pi-worker-1").node_password.reveal();
    });
  }
  for (auto& worker : workers) worker.join();
  CHECK(std::set<std::string>(passwords.begin(), passwords.end()).size() == 1);
  CHECK(std::set<std::string>(other_node.begin(), other_node.end()).size() == 1);
  CHECK(passwords[0] == first.find("pi-worker-1")->node_password.reveal());
  CHECK(names_in(dir / "identity") == std::set<std::string>{"pi-worker-1.json", "pi-worker-2.json"});
}

TEST_CASE("identity store: refuses a directory or file others can read, or not ours", "[identity]") {
  TempDir dir;
  fs::path store_dir = dir / "identity";
  fs::create_directory(store_dir);
  fs::permissions(store_dir, fs::perms(0755));
  CHECK_THAT(error_of([&] { EphemeralIdentityStore store(store_dir); }),
             Contains("identity store " + store_dir.string() + " has mode 0755, accessible by group or others") &&
                 Contains("chmod 700 " + store_dir.string()));

  fs::permissions(store_dir, fs::perms(0700));
  if (::geteuid() == 0) {
    REQUIRE(::chown(store_dir.c_str(), 65534, 65534) == 0);
    CHECK_THAT(error_of([&] { EphemeralIdentityStore store(store_dir); }),
               Contains("identity store " + store_dir.string() +
                        " is owned by uid 65534, not by the user serve runs as (uid 0)"));
    REQUIRE(::chown(store_dir.c_str(), 0, 0) == 0);
  }

  fs::create_directory_symlink(store_dir, dir / "link");
  CHECK_THAT(error_of([&] { EphemeralIdentityStore store(dir / "link"); }), Contains("is a symbolic link"));
  CHECK_THAT(
      error_of([&] { EphemeralIdentityStore store(dir / "missing" / "identity"); }),
      Contains("cannot create identity store " + (dir / "missing" / "identity").string() + ": its parent directory"));
  write_file(dir / "plain", "x");
  CHECK_THAT(error_of([&] { EphemeralIdentityStore store(dir / "plain"); }), Contains("exists and is not a directory"));

  EphemeralIdentityStore store(store_dir);
  store.get_or_create("pi-worker-1");
  fs::permissions(store_dir / "pi-worker-1.json", fs::perms(0644));
  CHECK_THAT(error_of([&] { store.find("pi-worker-1"); }),
             Contains("identity file " + (store_dir / "pi-worker-1.json").string() + " has mode 0644") &&
                 Contains("chmod 600"));
  fs::permissions(store_dir / "pi-worker-1.json", fs::perms(0600));
  fs::create_symlink(store_dir / "pi-worker-1.json", store_dir / "pi-worker-3.json");
  CHECK_THAT(error_of([&] { store.get_or_create("pi-worker-3"); }), Contains("is a symbolic link"));
}

TEST_CASE("identity store: a corrupt file is an error and kept as it is, hostile node names are refused",
          "[identity]") {
  TempDir dir;
  EphemeralIdentityStore store(dir / "identity");
  fs::path file = dir / "identity" / "pi-worker-1.json";
  store.get_or_create("pi-worker-1");
  std::string original = read_file(file);
  std::string truncated = original.substr(0, original.size() / 2);
  {
    std::FILE* out = std::fopen(file.c_str(), "w");
    REQUIRE(out != nullptr);
    std::fputs(truncated.c_str(), out);
    std::fclose(out);
  }
  std::string message = error_of([&] { store.get_or_create("pi-worker-1"); });
  CHECK_THAT(message, Contains("identity file " + file.string() + " is corrupt: not valid JSON"));
  CHECK_THAT(message, Contains("RKE2 rejects a known node name with a new node password"));
  CHECK(read_file(file) == truncated);  // not regenerated

  // A file copied under another node's name.
  write_file(dir / "identity" / "pi-worker-2.json", original);
  fs::permissions(dir / "identity" / "pi-worker-2.json", fs::perms(0600));
  CHECK_THAT(error_of([&] { store.find("pi-worker-2"); }),
             Contains("holds the identity of node 'pi-worker-1', not of 'pi-worker-2'"));

  for (const std::string& name :
       std::vector<std::string>{"../x", "..", ".", "a/b", "", "Pi-Worker", "-x", "x.json", std::string(64, 'a')}) {
    INFO(name);
    CHECK_THAT(error_of([&] { store.get_or_create(name); }), Contains("is not a DNS label"));
    CHECK_THROWS_AS(store.find(name), aggrik8s::Error);
  }
  CHECK_FALSE(fs::exists(dir / "x.json"));
}

TEST_CASE("identity bundle: GNU tar lists it, busybox tar extracts it, ssh-keygen reads the host key", "[identity]") {
  TempDir dir;
  EphemeralIdentityStore store(dir / "identity");
  NodeIdentity identity = store.get_or_create("pi-worker-1");

  // A node layer as the builder might write it, made by GNU tar: with a machine-id (overridden), an
  // etc/ssh directory of its own (kept, not duplicated) and a file owned by uid 1000 (copied unchanged).
  fs::path layer = dir / "layer";
  write_file(layer / "etc/hostname", "pi-worker-1\n");
  write_file(layer / "etc/rancher/rke2/config.yaml", "token: K10secret\nnode-name: pi-worker-1\n");
  write_file(layer / "etc/machine-id", "00000000000000000000000000000001\n");
  write_file(layer / "etc/ssh/sshd_config.d/10-aggrik8s.conf", "PasswordAuthentication no\n");
  write_file(layer / "home/pi/.bashrc", "# hello\n");
  fs::permissions(layer / "etc/ssh", fs::perms(0750));
  fs::permissions(layer / "etc/rancher/rke2/config.yaml", fs::perms(0600));
  stdout_of("chown -R 1000:1000 " + (layer / "home").string());
  stdout_of("setfattr -n user.aggrik8s -v kept " + (layer / "etc/hostname").string());
  stdout_of("tar --format=posix --xattrs --xattrs-include='user.*' --sort=name --mtime=@1000 --numeric-owner -C " +
            layer.string() + " -cf " + (dir / "layer.tar").string() +
            " etc/hostname etc/rancher etc/machine-id etc/ssh home");
  std::string bundle = identity_bundle_tar(identity, read_file(dir / "layer.tar"), "pi-worker-1", 1'700'000'000);
  write_file(dir / "bundle.tar", bundle);

  // GNU tar pads its columns; one blank between them is enough to compare.
  std::string listing;
  for (char c : stdout_of("tar --numeric-owner --utc -tvf " + (dir / "bundle.tar").string())) {
    if (c != ' ' || listing.empty() || listing.back() != ' ') listing.push_back(c);
  }
  INFO(listing);
  std::string names_only = stdout_of("tar -tf " + (dir / "bundle.tar").string());
  CHECK(names_only ==
        "etc/hostname\n"
        "etc/rancher/\n"
        "etc/rancher/rke2/\n"
        "etc/rancher/rke2/config.yaml\n"
        "etc/ssh/\n"
        "etc/ssh/sshd_config.d/\n"
        "etc/ssh/sshd_config.d/10-aggrik8s.conf\n"
        "home/\n"
        "home/pi/\n"
        "home/pi/.bashrc\n"
        "etc/\n"
        "etc/rancher/node/\n"
        "etc/rancher/node/password\n"
        "etc/ssh/ssh_host_ed25519_key\n"
        "etc/ssh/ssh_host_ed25519_key.pub\n"
        "etc/machine-id\n");
  CHECK_THAT(listing, Contains("-rw------- 0/0 33 2023-11-14 22:13 etc/rancher/node/password\n"));
  CHECK_THAT(listing, Contains("-rw------- 0/0 411 2023-11-14 22:13 etc/ssh/ssh_host_ed25519_key\n"));
  CHECK_THAT(listing, Contains("-rw-r--r-- 0/0 98 2023-11-14 22:13 etc/ssh/ssh_host_ed25519_key.pub\n-r--r--r-- 0/0 33 "
                               "2023-11-14 22:13 etc/machine-id\n"));
  CHECK_THAT(listing, Contains("drwxr-xr-x 0/0 0 2023-11-14 22:13 etc/rancher/node/\n"));
  CHECK_THAT(listing, Contains("drwxr-x--- 0/0 0 1970-01-01 00:16 etc/ssh/\n"));  // the layer's
  CHECK_THAT(listing, Contains("-rw-r--r-- 1000/1000 8 1970-01-01 00:16 home/pi/.bashrc\n"));

  // The layer's extended attribute is copied, once (SCHILY.xattr), without GNU tar warning about it.
  std::string verbose = stdout_of("tar --xattrs --xattrs-include='*' -tvvf " + (dir / "bundle.tar").string());
  CHECK_THAT(verbose, Contains("x: 4 user.aggrik8s"));
  CHECK_THAT(verbose, !Contains("Ignoring unknown extended header keyword"));

  // As the initramfs does: busybox tar into the new root, as root.
  fs::path root = dir / "newroot";
  fs::create_directory(root);
  stdout_of("busybox tar -x -C " + root.string() + " -f " + (dir / "bundle.tar").string());
  CHECK(read_file(root / "etc/rancher/node/password") == identity.node_password.reveal() + "\n");
  CHECK(read_file(root / "etc/machine-id") == identity.machine_id + "\n");
  CHECK(read_file(root / "etc/hostname") == "pi-worker-1\n");
  CHECK(read_file(root / "etc/rancher/rke2/config.yaml") == "token: K10secret\nnode-name: pi-worker-1\n");
  CHECK(mode_of(root / "etc/rancher/node/password") == 0600);
  CHECK(mode_of(root / "etc/rancher/node") == 0755);
  CHECK(mode_of(root / "etc/ssh/ssh_host_ed25519_key") == 0600);
  CHECK(mode_of(root / "etc/ssh/ssh_host_ed25519_key.pub") == 0644);
  CHECK(mode_of(root / "etc/machine-id") == 0444);
  CHECK(mode_of(root / "etc/ssh") == 0750);
  CHECK(mode_of(root / "etc/rancher/rke2/config.yaml") == 0600);
  CHECK(owner_of(root / "etc/ssh/ssh_host_ed25519_key") == "0:0");
  CHECK(owner_of(root / "etc/rancher/node/password") == "0:0");
  CHECK(owner_of(root / "home/pi/.bashrc") == "1000:1000");

  // ssh-keygen reads the private key (it refuses one that others can read), derives the .pub we wrote
  // and prints our fingerprint.
  fs::path key = root / "etc/ssh/ssh_host_ed25519_key";
  std::string public_line = read_file(root / "etc/ssh/ssh_host_ed25519_key.pub");
  CHECK(public_line ==
        "ssh-ed25519 " + openssh_ed25519_public_key_base64(identity.ssh_host_key.public_key) + " root@pi-worker-1\n");
  CHECK(stdout_of("ssh-keygen -y -f " + key.string()) == public_line);
  CHECK(stdout_of("ssh-keygen -l -f " + key.string()) ==
        "256 " + openssh_fingerprint_sha256(identity.ssh_host_key.public_key) + " root@pi-worker-1 (ED25519)\n");
  CHECK(stdout_of("ssh-keygen -l -f " + key.string() + ".pub") ==
        "256 " + openssh_fingerprint_sha256(identity.ssh_host_key.public_key) + " root@pi-worker-1 (ED25519)\n");
  // The key signs and the signature verifies against the .pub: it is a working key, not only a
  // parseable one.
  write_file(dir / "message", "hello\n");
  write_file(dir / "allowed_signers", "node " + public_line);
  stdout_of("ssh-keygen -Y sign -q -f " + key.string() + " -n file " + (dir / "message").string());
  CHECK_THAT(stdout_of("ssh-keygen -Y verify -f " + (dir / "allowed_signers").string() + " -I node -n file -s " +
                       (dir / "message.sig").string() + " < " + (dir / "message").string()),
             Contains("Good \"file\" signature for node"));

  // An empty node layer gives the generated files alone; a second extraction over the first (the
  // next boot's root is new, but the bundle must also be idempotent) is fine for busybox.
  write_file(dir / "alone.tar", identity_bundle_tar(identity, "", "pi-worker-1", std::nullopt));
  CHECK(stdout_of("tar -tf " + (dir / "alone.tar").string()) ==
        "etc/\netc/rancher/\netc/rancher/node/\netc/ssh/\netc/rancher/node/password\netc/ssh/ssh_host_ed25519_key\n"
        "etc/ssh/ssh_host_ed25519_key.pub\netc/machine-id\n");
  stdout_of("busybox tar -x -C " + root.string() + " -f " + (dir / "alone.tar").string());
  CHECK(read_file(root / "etc/machine-id") == identity.machine_id + "\n");
}

TEST_CASE("identity bundle: a node layer entry that would leave the root is refused", "[identity]") {
  TempDir dir;
  NodeIdentity identity = generate_node_identity("pi-worker-1", 0);
  write_file(dir / "src/x", "x");
  stdout_of("tar --format=posix -C " + (dir / "src").string() + " -cf " + (dir / "evil.tar").string() +
            " --transform='s,^x$,../../etc/shadow,' x");
  CHECK_THAT(error_of([&] { identity_bundle_tar(identity, read_file(dir / "evil.tar"), "pi-worker-1", 0); }),
             Contains("node layer tar of node 'pi-worker-1': entry \"../../etc/shadow\" is absolute or contains '..'"));
  stdout_of("tar --format=posix -P -C " + (dir / "src").string() + " -cf " + (dir / "absolute.tar").string() +
            " --transform='s,^x$,/etc/shadow,' x");
  CHECK_THAT(error_of([&] { identity_bundle_tar(identity, read_file(dir / "absolute.tar"), "pi-worker-1", 0); }),
             Contains("entry \"/etc/shadow\" is absolute"));
  // A truncated layer is an error, not a shorter bundle.
  std::string layer = read_file(dir / "absolute.tar");
  CHECK_THROWS_AS(identity_bundle_tar(identity, layer.substr(0, 700), "pi-worker-1", 0), aggrik8s::Error);
}
