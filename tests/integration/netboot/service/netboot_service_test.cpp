// The netboot service in-process on 127.0.0.1 (TFTP + HTTP on port 0), against real clients: curl for
// HTTP (GET, HEAD, ranges, per-node access from other loopback addresses via --interface) and tftp-hpa
// for a Raspberry Pi's boot partition served straight out of an image file. Raw sockets cover the bad
// input curl will not send, and TFTP reads from a chosen loopback address (127.0.0.x are distinct
// clients). The log is read by pointing stderr at a file.
#include "netboot/service/netboot_service.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "core/file_descriptor.hpp"
#include "core/sha256.hpp"
#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/fat_format.hpp"
#include "netboot/service/talos_wipe_state_file.hpp"
#include "netboot/tftp/tftp_packet.hpp"
#include "tests/netboot_running_service.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using aggrik8s::test::random_bytes;
using aggrik8s::test::read_file;
using aggrik8s::test::run;
using RunningService = aggrik8s::test::RunningNetbootService;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;

namespace {

std::string bounded(const std::string& command) { return "timeout 60 " + command; }

// A small MBR image whose first partition is FAT, made with the tools a user has (sfdisk, mkfs.fat,
// mcopy), holding a Pi boot partition's usual files.
void make_pi_image(const fs::path& dir, const fs::path& image, const std::string& kernel) {
  write_file(dir / "config.txt", "arm_64bit=1\nkernel=kernel_2712.img\n");
  write_file(dir / "cmdline.txt", "console=serial0,115200 root=PARTUUID=12345678-02 rootwait\n");
  write_file(dir / "kernel_2712.img", kernel);
  write_file(dir / "firstrun.sh", "#!/bin/bash\necho 'pi:$6$salt$hash' | chpasswd -e\n");
  write_file(dir / "user-data", "#cloud-config\npassword: secret-of-pi1\n");
  auto made = run("set -e; truncate -s 40M " + image.string() + "; echo 'start=2048, size=65536, type=c' | sfdisk -q " +
                  image.string() + "; rm -f " + (dir / "boot.fat").string() + "; mkfs.fat -n BOOTFS -C " +
                  (dir / "boot.fat").string() + " 32768 >/dev/null; mmd -i " + (dir / "boot.fat").string() +
                  " ::/overlays; mcopy -i " + (dir / "boot.fat").string() + " " + (dir / "config.txt").string() + " " +
                  (dir / "cmdline.txt").string() + " " + (dir / "kernel_2712.img").string() + " " +
                  (dir / "firstrun.sh").string() + " " + (dir / "user-data").string() + " ::/; dd if=" +
                  (dir / "boot.fat").string() + " of=" + image.string() +
                  " bs=1M seek=1 conv=notrunc status=none");
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
}

// curl, printing the status code; the body goes to `out`.
struct CurlResult {
  std::string status;
  std::string body;
  std::string headers;
};
CurlResult curl(const TempDir& dir, const std::string& arguments) {
  fs::path body = dir / "curl.body";
  fs::path headers = dir / "curl.headers";
  fs::remove(body);
  auto result = run(bounded("curl -sS --path-as-is -o " + body.string() + " -D " + headers.string() +
                            " -w '%{http_code}' " + arguments));
  CurlResult out;
  out.status = result.output;
  if (fs::exists(body)) out.body = read_file(body);
  if (fs::exists(headers)) out.headers = read_file(headers);
  return out;
}

// A TCP connection to the server, for requests curl cannot be made to send.
class RawHttpClient {
 public:
  explicit RawHttpClient(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  }
  void send(const std::string& data) {
    REQUIRE(::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size()));
  }
  // Everything until the server closes, or `timeout` passes.
  std::string receive_all(std::chrono::milliseconds timeout = 5000ms) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd poll_fd{fd_.get(), POLLIN, 0};
      if (::poll(&poll_fd, 1, 100) != 1) continue;
      char buffer[65536];
      ssize_t n = ::recv(fd_.get(), buffer, sizeof buffer, 0);
      if (n <= 0) break;
      out.append(buffer, static_cast<std::size_t>(n));
    }
    return out;
  }
  void close() { fd_.reset(); }

 private:
  aggrik8s::FileDescriptor fd_;
};

// Everything written to stderr (the log) while it lives goes to a file instead.
class CapturedLog {
 public:
  explicit CapturedLog(const fs::path& file) : file_(file) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::dup2(fd, 2) == 2);
    ::close(fd);
  }
  ~CapturedLog() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
  }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;
  std::string text() const {
    std::fflush(stderr);
    return read_file(file_);
  }

 private:
  fs::path file_;
  int saved_ = -1;
};

// A TFTP read of `name` from the loopback address `source`, lockstep with 512-byte blocks: the file,
// or the server's ERROR.
struct TftpRead {
  std::optional<TftpErrorPacket> error;
  std::string data;
};
TftpRead tftp_read_from(const std::string& source, std::uint16_t port, const std::string& name) {
  aggrik8s::FileDescriptor fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  REQUIRE(::inet_pton(AF_INET, source.c_str(), &local.sin_addr) == 1);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_port = htons(port);
  server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto request = encode_tftp_packet(TftpRequest{false, name, TftpMode::octet, {}});
  REQUIRE(::sendto(fd.get(), request.data(), request.size(), 0, reinterpret_cast<sockaddr*>(&server), sizeof server) ==
          static_cast<ssize_t>(request.size()));
  TftpRead out;
  std::uint16_t expected = 1;
  while (true) {
    pollfd poll_fd{fd.get(), POLLIN, 0};
    REQUIRE(::poll(&poll_fd, 1, 20000) == 1);  // generous: a busy machine, but never a hang
    std::uint8_t buffer[1024];
    sockaddr_in from{};
    socklen_t from_size = sizeof from;
    ssize_t n = ::recvfrom(fd.get(), buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&from), &from_size);
    REQUIRE(n > 0);
    TftpPacket packet = parse_tftp_packet(std::span<const std::uint8_t>(buffer, static_cast<std::size_t>(n)));
    if (auto* error = std::get_if<TftpErrorPacket>(&packet)) {
      out.error = *error;
      return out;
    }
    auto* data = std::get_if<TftpData>(&packet);
    REQUIRE(data != nullptr);
    if (data->block == expected) {
      out.data.append(data->payload.begin(), data->payload.end());
      ++expected;
    }
    auto ack = encode_tftp_packet(TftpAck{data->block});
    ::sendto(fd.get(), ack.data(), ack.size(), 0, reinterpret_cast<sockaddr*>(&from), from_size);
    if (data->payload.size() < tftp_default_blksize) return out;
  }
}

struct Fixture {
  TempDir dir;
  std::string kernel = random_bytes(3'000'000 + 5, 21);
  std::string initramfs = random_bytes(5'000'000 + 3, 22);
  std::string pi_kernel = random_bytes(1'500'000 + 1, 23);
  std::string pi_boot_img;  // a FAT image, as the bootloader (and serve's load) wants it
  std::string pi_boot_sig;  // its sha256 first, as boot.sig has it (the signature itself is not checked here)
  std::string big = random_bytes(48 * 1024 * 1024, 24);
  NetbootConfig config;

  Fixture() {
    write_file(dir / "assets/vmlinuz-amd64", kernel);
    write_file(dir / "assets/initramfs-amd64.xz", initramfs);
    write_file(dir / "www/big.bin", big);
    write_file(dir / "www/small.txt", "hello\n");
    write_file(dir / "secret.txt", "not for HTTP\n");
    fs::permissions(dir / "secret.txt", fs::perms(0600));  // a link out of the root reaches only public files
    fs::create_symlink(dir / "secret.txt", dir / "www/link-out");
    write_file(dir / "cp1.yaml", "version: v1alpha1\nmachine: {type: controlplane}\n");
    write_file(dir / "w1.yaml", "version: v1alpha1\nmachine: {type: worker}\n");
    write_file(dir / "w1-user-data", "#cloud-config\nhostname: w1\n");
    for (const char* secret : {"cp1.yaml", "w1.yaml", "w1-user-data"}) fs::permissions(dir / secret, fs::perms(0600));
    fs::create_directories(dir / "pi");
    make_pi_image(dir / "pi", dir / "pi5.img", pi_kernel);
    // What `build` writes beside a node's image for Pi 5 HTTP boot: a FAT image with a file, and a
    // boot.sig whose first line is its sha256 (serve checks both on load; the RSA signature is not).
    {
      aggrik8s::test::run("truncate -s 8M '" + (dir / "pi5.boot.img").string() + "'");
      aggrik8s::FileBlockDevice device(dir / "pi5.boot.img", aggrik8s::FileBlockDevice::Access::read_write);
      aggrik8s::format_fat(device, {});
      aggrik8s::FatFilesystem fat(device);
      fat.set_timestamp(1750000000);
      fat.write_file("kernel_2712.img", random_bytes(3'000'000, 29));
    }
    pi_boot_img = aggrik8s::test::read_file(dir / "pi5.boot.img");
    pi_boot_sig = aggrik8s::Sha256::of(pi_boot_img).hex() + "\nts: 1750000000\nrsa2048: " + std::string(512, 'b') + "\n";
    write_file(dir / "pi5.boot.sig", pi_boot_sig);
    fs::permissions(dir / "pi5.boot.img", fs::perms(0600));
    write_file(dir / "nodes.yaml", R"(profiles:
  pi: {rpi_image: {image: pi5.img, boot_img: pi5.boot.img}, mode: ephemeral}
  talos:
    talos: {kernel: assets/vmlinuz-amd64, initramfs: assets/initramfs-amd64.xz, args: console=ttyS0}
  maint:
    talos: {kernel: assets/vmlinuz-amd64, initramfs: assets/initramfs-amd64.xz}
nodes:
  - {name: pi1, match: {serial: 9ffefdef}, profile: pi, address: 127.0.0.2}
  - {name: cp1, match: {mac: "52:54:00:12:34:56"}, profile: talos, address: 127.0.0.1, talos_config: {file: cp1.yaml}}
  - name: w1
    match: {uuid: 4c4c4544-0000-1000-8000-000000000001}
    profile: talos
    talos_config: {file: w1.yaml}
    user_data: {file: w1-user-data}
unknown_nodes: {action: maintenance, profile: maint}
)");
    config.address = "127.0.0.1";
    config.tftp_port = 0;
    config.http_port = 0;
    config.inventory = dir / "nodes.yaml";
    config.http_root = dir / "www";
    config.boot_log = dir / "boot.jsonl";
    config.http_request_timeout = 1s;
    config.http_idle_timeout = 2s;
  }
};

}  // namespace

TEST_CASE("netboot: HTTP static files with GET, HEAD and ranges, byte for byte", "[netboot][http]") {
  Fixture f;
  RunningService server(f.config);
  auto get = curl(f.dir, server.http() + "/files/big.bin");
  CHECK(get.status == "200");
  CHECK(get.body == f.big);
  auto asset = curl(f.dir, server.http() + "/assets/talos/vmlinuz-amd64");
  CHECK(asset.status == "200");
  CHECK(asset.body == f.kernel);

  auto head = curl(f.dir, "-I " + server.http() + "/files/big.bin");
  CHECK(head.status == "200");
  CHECK_THAT(head.headers, Catch::Contains("Content-Length: " + std::to_string(f.big.size())));
  CHECK_THAT(head.headers, Catch::Contains("Accept-Ranges: bytes"));
  auto head_bytes = run(bounded("curl -sS -I -o /dev/null -w '%{size_download}' " + server.http() + "/files/big.bin"));
  CHECK(head_bytes.output == "0");

  auto middle = curl(f.dir, "-r 1000000-1999999 " + server.http() + "/files/big.bin");
  CHECK(middle.status == "206");
  CHECK(middle.body == f.big.substr(1000000, 1000000));
  CHECK_THAT(middle.headers, Catch::Contains("Content-Range: bytes 1000000-1999999/" + std::to_string(f.big.size())));
  auto suffix = curl(f.dir, "-r -100 " + server.http() + "/files/big.bin");
  CHECK(suffix.status == "206");
  CHECK(suffix.body == f.big.substr(f.big.size() - 100));
  auto open_end = curl(f.dir, "-r 47000000- " + server.http() + "/files/big.bin");
  CHECK(open_end.body == f.big.substr(47000000));
  auto beyond = curl(f.dir, "-r 99999999- " + server.http() + "/files/big.bin");
  CHECK(beyond.status == "416");
  CHECK_THAT(beyond.headers, Catch::Contains("Content-Range: bytes */" + std::to_string(f.big.size())));

  // Validators and If-Range (RFC 9110 13.1.5): a download resumed with the ETag or Last-Modified it began
  // with gets the rest; with any other (the file was rebuilt in between) the whole file, 200.
  auto header_value = [](const std::string& headers, const std::string& name) {
    auto at = headers.find(name + ": ");
    REQUIRE(at != std::string::npos);
    at += name.size() + 2;
    return headers.substr(at, headers.find("\r\n", at) - at);
  };
  std::string etag = header_value(head.headers, "ETag");
  std::string last_modified = header_value(head.headers, "Last-Modified");
  CHECK(etag.size() > 2);
  CHECK(etag.front() == '"');
  CHECK_THAT(head.headers, Catch::Contains("Date: "));  // RFC 9110 6.6.1
  auto resumed = curl(f.dir, "-r 100-199 -H 'If-Range: " + etag + "' " + server.http() + "/files/big.bin");
  CHECK(resumed.status == "206");
  CHECK(resumed.body == f.big.substr(100, 100));
  auto by_date = curl(f.dir, "-r 100-199 -H 'If-Range: " + last_modified + "' " + server.http() + "/files/big.bin");
  CHECK(by_date.status == "206");
  for (const std::string& stale : std::vector<std::string>{"\"nope\"", "Mon, 01 Jan 1990 00:00:00 GMT", "W/" + etag}) {
    INFO(stale);
    auto whole = curl(f.dir, "-r 100-199 -H 'If-Range: " + stale + "' " + server.http() + "/files/big.bin");
    CHECK(whole.status == "200");
    CHECK(whole.body.size() == f.big.size());
  }
  // Preconditions (RFC 9110 13.1-13.2): a resume guarded by If-Match with a stale tag is 412, never
  // the new file's bytes; a revalidation with the current tag or date is 304 without a body, and the
  // connection goes on.
  auto guarded = curl(f.dir, "-r 100-199 -H 'If-Match: \"old\"' " + server.http() + "/files/big.bin");
  CHECK(guarded.status == "412");
  CHECK(guarded.body.empty());
  CHECK(curl(f.dir, "-r 100-199 -H 'If-Match: " + etag + "' " + server.http() + "/files/big.bin").status == "206");
  CHECK(curl(f.dir, "-H 'If-Unmodified-Since: Mon, 01 Jan 1990 00:00:00 GMT' " + server.http() + "/files/big.bin").status == "412");
  CHECK(curl(f.dir, "-H 'If-Modified-Since: " + last_modified + "' " + server.http() + "/files/big.bin").status == "304");
  {
    RawHttpClient client(server.http_port());
    client.send("GET /files/big.bin HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag +
                "\r\n\r\nGET /files/small.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Mon, 01 Jan 1990 00:00:00 GMT"
                "\r\nConnection: close\r\n\r\n");
    std::string replies = client.receive_all();
    CHECK(replies.starts_with("HTTP/1.1 304 Not Modified\r\n"));
    CHECK_THAT(replies, Catch::Contains("ETag: " + etag));
    auto second = replies.find("HTTP/1.1 ", 10);
    REQUIRE(second != std::string::npos);
    CHECK(replies.substr(0, second).ends_with("\r\n\r\n"));  // no body after the 304's headers
    CHECK(replies.substr(second).starts_with("HTTP/1.1 200 OK\r\n"));  // modified since 1990
    CHECK(replies.ends_with("hello\n"));
  }
  // The absolute-form (RFC 9112 3.2.2), HTTP/1.1 without Host (3.2), and a file named as a directory.
  {
    RawHttpClient client(server.http_port());
    client.send("GET http://10.0.0.1:8080/files/small.txt HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nConnection: close\r\n\r\n");
    std::string reply = client.receive_all();
    CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 200"));
    CHECK_THAT(reply, Catch::EndsWith("\r\n\r\nhello\n"));
  }
  {
    RawHttpClient client(server.http_port());
    client.send("GET /files/small.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
    CHECK_THAT(client.receive_all(), Catch::StartsWith("HTTP/1.1 400"));
  }
  {
    RawHttpClient client(server.http_port());
    client.send("GET /files/small.txt HTTP/1.0\r\n\r\n");  // HTTP/1.0 has no Host requirement
    CHECK_THAT(client.receive_all(), Catch::StartsWith("HTTP/1.1 200"));
  }
  CHECK(curl(f.dir, server.http() + "/files/small.txt/").status == "404");

  // Several files over one keep-alive connection, then the service's own pages.
  auto both = run(bounded("curl -sS -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\\n' " + server.http() +
                          "/files/small.txt " + server.http() + "/files/small.txt"));
  CHECK_THAT(both.output, Catch::Contains("200 1\n200 0"));
  CHECK(curl(f.dir, server.http() + "/healthz").body == "ok\n");
  auto metrics = curl(f.dir, server.http() + "/metrics");
  CHECK_THAT(metrics.body, Catch::Contains("aggrik8s_http_requests_total{route=\"files\",status=\"200\"}"));
  CHECK_THAT(metrics.body, Catch::Contains("aggrik8s_inventory_nodes 3"));
  auto status = curl(f.dir, server.http() + "/");
  CHECK_THAT(status.body, Catch::Contains("<td>cp1</td>"));
  CHECK_THAT(status.headers, Catch::Contains("text/html"));
}

TEST_CASE("netboot: assets beside a nodes file named by a relative path are served", "[netboot][http]") {
  // `serve --nodes nodes.yaml` with `kernel: vmlinuz` next to it: the asset's name has no directory.
  TempDir dir;
  write_file(dir / "vmlinuz", "kernel bytes");
  write_file(dir / "initrd.img", "initrd bytes");
  write_file(dir / "nodes.yaml", "profiles:\n  flat: {kernel: {kernel: vmlinuz, initrd: [initrd.img], args: x}}\n"
                                 "nodes: []\nunknown_nodes: {action: default, profile: flat}\n");
  fs::path before = fs::current_path();
  fs::current_path(dir.path());
  NetbootConfig config;
  config.address = "127.0.0.1";
  config.tftp_port = 0;
  config.http_port = 0;
  config.inventory = "nodes.yaml";
  {
    RunningService server(config);
    auto kernel = curl(dir, server.http() + "/assets/flat/vmlinuz");
    CHECK(kernel.status == "200");
    CHECK(kernel.body == "kernel bytes");
    CHECK(curl(dir, server.http() + "/assets/flat/initrd.img").body == "initrd bytes");
    CHECK(curl(dir, server.http() + "/assets/flat/vmlinuz/").status == "404");  // a name ending in '/' is no file
  }
  fs::current_path(before);
}

TEST_CASE("netboot: traversal, symlinks out of the root and malformed targets are refused", "[netboot][http]") {
  Fixture f;
  RunningService server(f.config);
  CHECK(curl(f.dir, server.http() + "/files/../secret.txt").status == "400");
  CHECK(curl(f.dir, server.http() + "/files/%2e%2e/secret.txt").status == "400");
  CHECK(curl(f.dir, server.http() + "/files/%2E%2E%2Fsecret.txt").status == "400");
  CHECK(curl(f.dir, server.http() + "/files/link-out").status == "403");
  CHECK(curl(f.dir, server.http() + "/files/missing").status == "404");
  CHECK(curl(f.dir, server.http() + "/assets/talos/..%2fnodes.yaml").status == "400");
  CHECK(curl(f.dir, server.http() + "/assets/talos/nodes.yaml").status == "404");
  CHECK(curl(f.dir, "-X DELETE " + server.http() + "/files/small.txt").status == "405");
  CHECK(curl(f.dir, server.http() + "/files/small.txt").body == "hello\n");
}

TEST_CASE("netboot: the shared trees serve only world-readable files, and a refusal is recorded as one", "[netboot][http][tftp][access]") {
  // `--http-root out/` (the quick start) served every node image, 0600 for its join token, to anyone.
  Fixture f;
  write_file(f.dir / "www/pi5-worker/n1.img", "image with a join token");
  fs::permissions(f.dir / "www/pi5-worker/n1.img", fs::perms(0600));
  f.config.tftp_root = f.dir / "www";
  std::optional<RunningService> server(std::in_place, f.config);
  CHECK(curl(f.dir, server->http() + "/files/pi5-worker/n1.img").status == "403");
  CHECK(curl(f.dir, server->http() + "/files/small.txt").body == "hello\n");
  std::uint16_t port = server->service().tftp_endpoint()->port();
  auto refused = tftp_read_from("127.0.0.1", port, "pi5-worker/n1.img");
  REQUIRE(refused.error);
  CHECK(refused.error->code == TftpErrorCode::access_violation);
  CHECK(refused.data.empty());
  auto missing = tftp_read_from("127.0.0.1", port, "pi5-worker/n2.img");
  REQUIRE(missing.error);
  CHECK(missing.error->code == TftpErrorCode::file_not_found);
  CHECK(tftp_read_from("127.0.0.1", port, "small.txt").data == "hello\n");
  server.reset();  // boot events are written after each transfer's last packet
  std::map<std::string, std::string> results;
  std::istringstream events(read_file(f.dir / "boot.jsonl"));
  for (std::string line; std::getline(events, line);) {
    auto event = nlohmann::json::parse(line);
    if (event["step"] == "tftp") results[event["file"].get<std::string>()] = event["result"].get<std::string>();
  }
  CHECK(results["pi5-worker/n1.img"] == "refused");  // was "not-found", as if it did not exist
  CHECK(results["pi5-worker/n2.img"] == "not-found");
  // (small.txt's own event may be "failed": the service stops right after the client's last ACK.)
}

TEST_CASE("netboot: per-node iPXE scripts and configs go only to the node's address", "[netboot][http][access]") {
  Fixture f;
  RunningService server(f.config);
  // cp1 is pinned to 127.0.0.1.
  auto efi = curl(f.dir, "'" + server.http() + "/ipxe?mac=52-54-00-12-34-56&platform=efi'");
  CHECK(efi.status == "200");
  CHECK_THAT(efi.body, Catch::Contains("kernel " + server.http() +
                                       "/assets/talos/vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal "
                                       "slab_nomerge pti=on console=ttyS0 talos.config=" +
                                       server.http() + "/talos/52-54-00-12-34-56/config.yaml"));
  auto bios = curl(f.dir, "'" + server.http() + "/ipxe?mac=52-54-00-12-34-56&platform=pcbios'");
  CHECK(bios.body.find("initrd=") == std::string::npos);
  CHECK_THAT(bios.body, Catch::Contains("initrd --name initramfs-amd64.xz"));
  CHECK(curl(f.dir, "--interface 127.0.0.2 '" + server.http() + "/ipxe?mac=52-54-00-12-34-56&platform=efi'").status ==
        "403");
  auto config = curl(f.dir, server.http() + "/talos/52-54-00-12-34-56/config.yaml");
  CHECK(config.status == "200");
  CHECK(config.body == read_file(f.dir / "cp1.yaml"));
  auto stolen = curl(f.dir, "--interface 127.0.0.2 " + server.http() + "/talos/52-54-00-12-34-56/config.yaml");
  CHECK(stolen.status == "403");
  CHECK(stolen.body.find("controlplane") == std::string::npos);

  // w1 has no pinned address and no MAC (it is matched by UUID). Fetching its boot script proves
  // nothing, so under the default node_secrets.proof (neighbour) its secrets wait for a DHCP lease:
  // before this, the last client to fetch the script got the machine config.
  CapturedLog log(f.dir / "stderr.log");
  std::string w1 = "4c4c4544-0000-1000-8000-000000000001";
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/talos/" + w1 + "/config.yaml").status == "403");
  auto script = curl(f.dir, "--interface 127.0.0.3 '" + server.http() + "/ipxe?uuid=" + w1 + "&platform=efi'");
  CHECK(script.status == "200");
  CHECK_THAT(script.body, Catch::Contains("talos.config=" + server.http() + "/talos/" + w1 + "/config.yaml"));
  auto asker = curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/talos/" + w1 + "/config.yaml");
  CHECK(asker.status == "403");
  CHECK(asker.body.find("worker") == std::string::npos);
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/cloud-init/" + w1 + "/user-data").status == "403");
  CHECK_THAT(log.text(), Catch::Contains("warning: http: refused talos-config of node w1 to 127.0.0.3: no pinned address "
                                         "or DHCP lease for node w1, and it has no match.mac"));
  // The DHCP hook binds it; then only that address gets its files.
  server.service().addresses().record_lease("w1", "127.0.0.5");
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/talos/" + w1 + "/config.yaml").status == "403");
  CHECK_THAT(log.text(), Catch::Contains("refused talos-config of node w1 to 127.0.0.3: the node is at 127.0.0.5 (DHCP lease)"));
  CHECK(curl(f.dir, "--interface 127.0.0.5 " + server.http() + "/talos/" + w1 + "/config.yaml").body ==
        read_file(f.dir / "w1.yaml"));
  CHECK(curl(f.dir, "--interface 127.0.0.5 " + server.http() + "/cloud-init/" + w1 + "/user-data").body ==
        read_file(f.dir / "w1-user-data"));
  CHECK_THAT(curl(f.dir, "--interface 127.0.0.5 " + server.http() + "/cloud-init/" + w1 + "/meta-data").body,
             Catch::Contains("instance-id: w1"));
  CHECK(curl(f.dir, "--interface 127.0.0.4 " + server.http() + "/cloud-init/" + w1 + "/user-data").status == "403");

  // An unknown machine gets the maintenance profile: Talos without a config.
  auto unknown = curl(f.dir, "--interface 127.0.0.9 '" + server.http() + "/ipxe?mac=52-54-00-99-99-99&platform=efi'");
  CHECK(unknown.status == "200");
  CHECK_THAT(unknown.body, Catch::Contains("/assets/maint/vmlinuz-amd64"));
  CHECK(unknown.body.find("talos.config") == std::string::npos);
  CHECK(curl(f.dir, server.http() + "/talos/52-54-00-99-99-99/config.yaml").status == "404");
  CHECK_THAT(curl(f.dir, server.http() + "/boot.ipxe").body, Catch::Contains("chain " + server.http() + "/ipxe?mac="));

  auto events = read_file(f.dir / "boot.jsonl");
  CHECK_THAT(events, Catch::Contains("\"node\":\"cp1\""));
  CHECK_THAT(events, Catch::Contains("\"result\":\"refused\""));
  CHECK_THAT(curl(f.dir, server.http() + "/metrics").body,
             Catch::Contains("aggrik8s_boot_steps_total{node=\"cp1\",step=\"talos-config\",result=\"refused\"} 1"));
}

TEST_CASE("netboot: without a pin or lease, the neighbour table must show the node's MAC at the client's address",
          "[netboot][http][access]") {
  Fixture f;
  std::string nodes = read_file(f.dir / "nodes.yaml");
  nodes.insert(nodes.find("unknown_nodes:"),
               "  - {name: w2, match: {mac: \"52:54:00:00:00:07\"}, profile: talos, talos_config: {file: w1.yaml}}\n"
               "  - {name: pi2, match: {serial: 1234abcd}, profile: pi}\n");
  write_file(f.dir / "nodes.yaml", nodes);
  // The kernel's table cannot hold loopback peers; this file stands in for /proc/net/arp.
  write_file(f.dir / "arp",
             "IP address       HW type     Flags       HW address            Mask     Device\n"
             "127.0.0.6        0x1         0x2         52:54:00:00:00:07     *        lo\n"
             "127.0.0.7        0x1         0x2         52:54:00:00:00:99     *        lo\n");
  f.config.neighbour_table = f.dir / "arp";
  CapturedLog log(f.dir / "stderr.log");
  RunningService server(f.config);
  std::string url = server.http() + "/talos/52-54-00-00-00-07/config.yaml";
  // No boot script was fetched: the neighbour entry alone is the proof.
  auto proven = curl(f.dir, "--interface 127.0.0.6 " + url);
  CHECK(proven.status == "200");
  CHECK(proven.body == read_file(f.dir / "w1.yaml"));
  CHECK(curl(f.dir, "--interface 127.0.0.7 " + url).status == "403");
  CHECK(curl(f.dir, "--interface 127.0.0.8 " + url).status == "403");
  // Fetching the boot script does not make 127.0.0.8 the node.
  CHECK(curl(f.dir, "--interface 127.0.0.8 '" + server.http() + "/ipxe?mac=52-54-00-00-00-07'").status == "200");
  CHECK(curl(f.dir, "--interface 127.0.0.8 " + url).status == "403");
  std::string text = log.text();
  CHECK_THAT(text, Catch::Contains("refused talos-config of node w2 to 127.0.0.7: no pinned address or DHCP lease for node "
                                   "w2, and the neighbour table has 127.0.0.7 at 52:54:00:00:00:99 on lo, not the "
                                   "node's MAC 52:54:00:00:00:07"));
  CHECK_THAT(text, Catch::Contains("refused talos-config of node w2 to 127.0.0.8: no pinned address or DHCP lease for node "
                                   "w2, and the neighbour table has no entry for 127.0.0.8"));
  // At start: w1 can never be given its secrets here (no address, no MAC, no DHCP); no last-asker warning.
  CHECK_THAT(text, Catch::Contains("warning: node w1 has secrets but no address: and no match.mac"));
  // A Pi matched by its serial alone: its image's first-boot files can never be served either (the
  // warning named only nodes with talos_config, user_data or rke2_config).
  CHECK_THAT(text, Catch::Contains("warning: node pi2 has secrets (its image's firstrun.sh, user-data, network-config) but "
                                   "no address: and no match.mac"));
  CHECK(text.find("last-asker") == std::string::npos);
}

TEST_CASE("netboot: node_secrets.proof: last-asker hands secrets to the boot script's last asker, and warns",
          "[netboot][http][access]") {
  Fixture f;
  f.config.node_secret_proof = NodeSecretProof::last_asker;
  CapturedLog log(f.dir / "stderr.log");
  RunningService server(f.config);
  CHECK_THAT(log.text(), Catch::Contains("warning: node_secrets.proof: last-asker: a node without a pinned address or "
                                         "DHCP lease gives its secrets"));
  std::string w1 = "4c4c4544-0000-1000-8000-000000000001";
  std::string config = server.http() + "/talos/" + w1 + "/config.yaml";
  std::string script = "'" + server.http() + "/ipxe?uuid=" + w1 + "&platform=efi'";
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + config).status == "403");  // nobody has asked yet
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + script).status == "200");
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + config).body == read_file(f.dir / "w1.yaml"));
  CHECK(curl(f.dir, "--interface 127.0.0.4 " + config).status == "403");
  // Exactly the weakness the mode is named for: the next asker takes the node over.
  CHECK(curl(f.dir, "--interface 127.0.0.4 " + script).status == "200");
  CHECK(curl(f.dir, "--interface 127.0.0.4 " + config).body == read_file(f.dir / "w1.yaml"));
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + config).status == "403");
  // A pin still decides alone.
  CHECK(curl(f.dir, "--interface 127.0.0.3 '" + server.http() + "/ipxe?mac=52-54-00-12-34-56'").status == "403");
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/talos/52-54-00-12-34-56/config.yaml").status == "403");
}

TEST_CASE("netboot: a Pi's secret boot files go over TFTP only to the node's bound address", "[netboot][tftp][access]") {
  Fixture f;
  CapturedLog log(f.dir / "stderr.log");
  std::optional<RunningService> server(std::in_place, f.config);
  std::uint16_t port = server->service().tftp_endpoint()->port();
  // pi1 is pinned to 127.0.0.2. Before this, any address naming its serial got firstrun.sh.
  auto wrong = tftp_read_from("127.0.0.3", port, "9ffefdef/firstrun.sh");
  REQUIRE(wrong.error);
  CHECK(wrong.error->code == TftpErrorCode::access_violation);
  CHECK(wrong.data.empty());
  CHECK_THAT(log.text(), Catch::Contains("warning: tftp: refused 9ffefdef/firstrun.sh of node pi1 to 127.0.0.3: the node "
                                         "is at 127.0.0.2 (pinned address)"));
  // Other names for secret files: any case, cloud-init's, and FAT 8.3 aliases (USER-D~1 is user-data).
  for (const char* name : {"9ffefdef/FIRSTRUN.SH", "9ffefdef/user-data", "9ffefdef/USER-D~1", "/9ffefdef/user-data"}) {
    INFO(name);
    auto refused = tftp_read_from("127.0.0.3", port, name);
    REQUIRE(refused.error);
    CHECK(refused.error->code == TftpErrorCode::access_violation);
  }
  auto right = tftp_read_from("127.0.0.2", port, "9ffefdef/firstrun.sh");
  CHECK_FALSE(right.error);
  CHECK(right.data == read_file(f.dir / "pi/firstrun.sh"));
  CHECK(tftp_read_from("127.0.0.2", port, "9ffefdef/USER-D~1").data == read_file(f.dir / "pi/user-data"));
  CHECK(tftp_read_from("127.0.0.2", port, "firstrun.sh").data == read_file(f.dir / "pi/firstrun.sh"));  // by address
  // Files without secrets go to anyone naming the serial, as the Pi's bootloader needs before DHCP binds anything.
  CHECK(tftp_read_from("127.0.0.3", port, "9ffefdef/config.txt").data == read_file(f.dir / "pi/config.txt"));
  server.reset();  // a transfer's boot event is written after its last packet: wait for the io thread
  std::istringstream events(read_file(f.dir / "boot.jsonl"));
  bool refusal_recorded = false;
  for (std::string line; std::getline(events, line);) {
    auto event = nlohmann::json::parse(line);
    if (event["client"] == "127.0.0.3" && event["file"] == "9ffefdef/firstrun.sh") {
      CHECK(event["result"] == "refused");
      CHECK(event["node"] == "pi1");
      CHECK(event["bytes"] == 0);
      refusal_recorded = true;
    }
  }
  CHECK(refusal_recorded);
}

TEST_CASE("netboot: client-supplied text reaches the log escaped", "[netboot][log]") {
  Fixture f;
  CapturedLog log(f.dir / "stderr.log");
  std::optional<RunningService> server(std::in_place, f.config);
  // A decoded path segment with a line break and a terminal escape, logged as "no such node".
  CHECK(curl(f.dir, server->http() + "/talos/x%0aerror:%20forged%1b%5b2J/config.yaml").status == "404");
  // Raw bytes that are not UTF-8 in the request target.
  {
    RawHttpClient client(server->http_port());
    client.send("GET /files/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK_THAT(client.receive_all(), Catch::StartsWith("HTTP/1.1 400"));
  }
  // A TFTP name with the same.
  auto missing = tftp_read_from("127.0.0.1", server->service().tftp_endpoint()->port(), "9ffefdef/no\nsuch\x1b[1m");
  REQUIRE(missing.error);
  CHECK(missing.error->code == TftpErrorCode::file_not_found);
  server.reset();  // the TFTP refusal is logged and recorded after its ERROR is sent: wait for the io thread
  std::string text = log.text();
  INFO(text);
  CHECK_THAT(text, Catch::Contains("http: talos-config for \"x\\nerror: forged\\x1b[2J\" asked by 127.0.0.1: no such node"));
  CHECK_THAT(text, Catch::Contains("GET /files/\\xff\\xfe status=400"));
  CHECK_THAT(text, Catch::Contains("asked for 9ffefdef/no\\nsuch\\x1b[1m: File not found"));
  CHECK(text.find("\nerror: forged") == std::string::npos);
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find('\xff') == std::string::npos);
  // The boot event log is JSON lines: one object per line whatever the client sent.
  std::istringstream events(read_file(f.dir / "boot.jsonl"));
  bool found = false;
  for (std::string line; std::getline(events, line);) {
    INFO(line);
    auto event = nlohmann::json::parse(line);  // throws, failing the test, if a line is not one object
    if (event["file"] == "9ffefdef/no\nsuch\x1b[1m") found = true;
  }
  CHECK(found);
}

TEST_CASE("netboot: a Pi's boot partition is served over TFTP straight from the image file", "[netboot][tftp]") {
  Fixture f;
  RunningService server(f.config);
  fs::path out = f.dir / "out";
  fs::create_directories(out);
  auto config = run(bounded("tftp -m binary " + server.tftp_host() + " -c get 9ffefdef/config.txt " + (out / "config.txt").string()));
  INFO(config.output);
  CHECK(read_file(out / "config.txt") == read_file(f.dir / "pi/config.txt"));
  auto kernel = run(bounded("tftp -m binary " + server.tftp_host() + " -c get 9ffefdef/kernel_2712.img " +
                            (out / "kernel").string()));
  CHECK(read_file(out / "kernel") == f.pi_kernel);
  auto windowed = run(bounded("atftp --option 'blksize 1468' --option 'windowsize 16' -g -r 9ffefdef/KERNEL_2712.IMG -l " +
                              (out / "kernel2").string() + " " + server.tftp_host()));
  INFO(windowed.output);
  CHECK(read_file(out / "kernel2") == f.pi_kernel);  // FAT names are case-insensitive, as on the Pi
  auto escape = run(bounded("tftp -m binary " + server.tftp_host() + " -c get 9ffefdef/../nodes.yaml " + (out / "x").string()));
  CHECK_THAT(escape.output, Catch::Contains("Error code 2"));
  auto missing = run(bounded("tftp -m binary " + server.tftp_host() + " -c get 9ffefdef/start4.elf " + (out / "y").string()));
  CHECK_THAT(missing.output, Catch::Contains("Error code 1"));
  auto unknown = run(bounded("tftp -m binary " + server.tftp_host() + " -c get 12345678/config.txt " + (out / "z").string()));
  CHECK_THAT(unknown.output, Catch::Contains("Error code 1"));  // no shared root, and the unknown profile is not a Pi image
  auto log = read_file(f.dir / "boot.jsonl");
  CHECK_THAT(log, Catch::Contains("\"node\":\"pi1\""));
  CHECK_THAT(log, Catch::Contains("\"step\":\"tftp\""));
  CHECK_THAT(log, Catch::Contains("\"file\":\"9ffefdef/kernel_2712.img\""));
}

TEST_CASE("netboot: oversized, malformed, slow and vanishing clients do not stop the server", "[netboot][http]") {
  Fixture f;
  RunningService server(f.config);
  {
    RawHttpClient client(server.http_port());
    client.send("GET /files/small.txt HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n");
    CHECK_THAT(client.receive_all(), Catch::StartsWith("HTTP/1.1 431"));
  }
  {
    RawHttpClient client(server.http_port());
    client.send("HELLO THERE\r\n\r\n");
    CHECK_THAT(client.receive_all(), Catch::StartsWith("HTTP/1.1 400"));
  }
  {
    RawHttpClient client(server.http_port());
    client.send("GET /files/small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    CHECK_THAT(client.receive_all(), Catch::StartsWith("HTTP/1.1 413"));
  }
  {
    // A POST with a body is refused for its method (405 with Allow), as one without is (RFC 9110 15.5.6).
    RawHttpClient client(server.http_port());
    client.send("POST /files/small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    std::string reply = client.receive_all();
    CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 405") && Catch::Contains("Allow: GET, HEAD"));
  }
  {
    // A target longer than the server reads is 414 (RFC 9110 15.5.15), not a generic 400.
    RawHttpClient client(server.http_port());
    client.send("GET /files/small.txt?" + std::string(5000, 'a') + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK_THAT(client.receive_all(), Catch::StartsWith("HTTP/1.1 414"));
  }
  {
    // Slowloris: a header that never ends is cut off after request_timeout (1 s here).
    RawHttpClient client(server.http_port());
    auto started = std::chrono::steady_clock::now();
    client.send("GET /files/small.txt HTTP/1.1\r\nHost: x\r\n");
    std::string reply = client.receive_all(5000ms);
    CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 408"));
    CHECK(std::chrono::steady_clock::now() - started < 4s);
  }
  {
    // A client that asks for 48 MiB, reads a little and vanishes.
    RawHttpClient client(server.http_port());
    client.send("GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    std::this_thread::sleep_for(100ms);
    client.close();
  }
  {
    // One that stops reading: dropped after the idle timeout (2 s), others unaffected meanwhile.
    RawHttpClient stalled(server.http_port());
    stalled.send("GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(curl(f.dir, server.http() + "/files/small.txt").body == "hello\n");
    std::this_thread::sleep_for(3500ms);
    auto metrics = curl(f.dir, server.http() + "/metrics").body;
    CHECK_THAT(metrics, Catch::Contains("aggrik8s_errors_total{kind=\"client_gone\"} 2"));
    CHECK_THAT(metrics, Catch::Contains("aggrik8s_errors_total{kind=\"http_431\"} 1"));
    CHECK_THAT(metrics, Catch::Contains("aggrik8s_errors_total{kind=\"http_408\"} 1"));
  }
  CHECK(curl(f.dir, server.http() + "/files/big.bin").body == f.big);
}

TEST_CASE("netboot: a client over http.max_connections gets a 503 reply, not a bare close", "[netboot][http]") {
  Fixture f;
  f.config.http_max_connections = 2;
  RunningService server(f.config);
  RawHttpClient first(server.http_port());
  RawHttpClient second(server.http_port());
  // Both are accepted and held by the server once it has read from them (a request in progress).
  first.send("GET /files/small.txt HTTP/1.1\r\nHost: x\r\n");
  second.send("GET /files/small.txt HTTP/1.1\r\nHost: x\r\n");
  std::this_thread::sleep_for(200ms);
  auto third = curl(f.dir, "-H 'Connection: close' " + server.http() + "/healthz");
  CHECK(third.status == "503");
  CHECK_THAT(third.headers, Catch::Contains("Retry-After: 1"));
  CHECK(third.body == "too many connections\n");
}

namespace {

// The head of an x86-64 bzImage: the setup header serve reads the limit from (boot_flag 0xAA55, "HdrS",
// boot protocol 2.15, cmdline_size at 0x238), the rest zeros.
std::string bzimage_head(std::uint32_t cmdline_size) {
  std::string image(4096, '\0');
  image.replace(0, 2, "MZ");
  image[0x1FE] = '\x55';
  image[0x1FF] = '\xAA';
  image.replace(0x202, 4, "HdrS");
  image[0x206] = '\x0F';
  image[0x207] = '\x02';
  for (std::size_t i = 0; i < 4; ++i) image[0x238 + i] = static_cast<char>((cmdline_size >> (8 * i)) & 0xFF);
  return image;
}

}  // namespace

TEST_CASE("netboot: a node whose iPXE kernel line is exactly the kernel's cmdline_size loads, one byte more is "
          "refused at start and on reload",
          "[netboot][ipxe][kernel]") {
  TempDir dir;
  fs::path kernel = dir / "assets/vmlinuz-amd64";
  write_file(kernel, bzimage_head(2047));
  write_file(dir / "assets/initramfs-amd64.xz", "initramfs");
  write_file(dir / "cp1.yaml", "version: v1alpha1\nmachine: {type: controlplane}\n");
  fs::permissions(dir / "cp1.yaml", fs::perms(0600));
  // A fixed base URL, so that the line's length is known before the server has a port.
  std::string base_url = "http://127.0.0.1:8080";
  std::string config_arg = "talos.config=" + base_url + "/talos/52-54-00-12-34-56/config.yaml";
  // What ipxe.efi hands the kernel, "pad=" aside: its image name, initrd=, Talos' arguments, the config URL.
  std::string fixed = "vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal slab_nomerge pti=on pad= " + config_arg;
  auto write_nodes = [&](std::size_t line_bytes) {
    write_file(dir / "nodes.yaml", "profiles:\n  talos:\n    talos: {kernel: assets/vmlinuz-amd64, initramfs: "
                                   "assets/initramfs-amd64.xz, args: pad=" + std::string(line_bytes - fixed.size(), 'p') +
                                       "}\nnodes:\n  - {name: cp1, match: {mac: \"52:54:00:12:34:56\"}, profile: talos, "
                                       "address: 127.0.0.1, talos_config: {file: cp1.yaml}}\n");
  };
  NetbootConfig config;
  config.address = "127.0.0.1";
  config.tftp_port = 0;
  config.http_port = 0;
  config.inventory = dir / "nodes.yaml";
  config.http_base_url = base_url;
  std::string refusal = (dir / "nodes.yaml").string() + ":5:5: node 'cp1': the kernel command line of its iPXE script is "
                        "2,048 bytes with iPXE (UEFI)'s prefix 'vmlinuz-amd64 '; the kernel in " + kernel.string() +
                        " keeps at most 2,047 (setup header cmdline_size at 0x238, boot protocol 2.15): 1 bytes too many, '" +
                        config_arg.substr(0, 57) + "...' would be lost (shorten profiles.talos.talos.args or http.base_url)";

  write_nodes(2047);
  CapturedLog log(dir / "stderr.log");
  {
    RunningService server(config);
    auto script = curl(dir, "'" + server.http() + "/ipxe?mac=52-54-00-12-34-56&platform=efi'");
    REQUIRE(script.status == "200");
    std::string kernel_line = "kernel " + base_url + "/assets/talos/vmlinuz-amd64 ";
    auto start = script.body.find(kernel_line);
    REQUIRE(start != std::string::npos);
    start += kernel_line.size();
    std::string line = "vmlinuz-amd64 " + script.body.substr(start, script.body.find(" || goto failed", start) - start);
    CHECK(line.size() == 2047);
    CHECK_THAT(line, Catch::EndsWith(" " + config_arg));

    // One byte over: the reload is refused with the byte counts, and the old inventory keeps serving.
    write_nodes(2048);
    CHECK_FALSE(server.service().reload());
    CHECK_THAT(log.text(), Catch::Contains("reload failed, still serving the previous configuration: nodes file " +
                                           (dir / "nodes.yaml").string() + ": 1 error(s)\n  " + refusal));
    CHECK(curl(dir, "'" + server.http() + "/ipxe?mac=52-54-00-12-34-56&platform=efi'").body == script.body);

    // The limit is the kernel's own, read again on reload: one that keeps 1023 bytes refuses the line
    // that fitted 2047.
    write_nodes(2047);
    write_file(kernel, bzimage_head(1023));
    CHECK_FALSE(server.service().reload());
    CHECK_THAT(log.text(), Catch::Contains("is 2,047 bytes with iPXE (UEFI)'s prefix 'vmlinuz-amd64 '; the kernel in " +
                                           kernel.string() + " keeps at most 1,023 (setup header cmdline_size at 0x238"));
    // A file whose header is no kernel's is checked against the 2047 bytes of x86-64 and arm64 kernels.
    write_file(kernel, "not a kernel image");
    CHECK(server.service().reload());
    CHECK_THAT(log.text(), Catch::Contains("its iPXE kernel command lines are checked against 2047 bytes, what x86-64 "
                                           "and arm64 kernels keep"));
    write_nodes(2048);
    CHECK_FALSE(server.service().reload());
    CHECK_THAT(log.text(), Catch::Contains("keeps at most 2,047 (assumed: COMMAND_LINE_SIZE 2048 of x86-64 and arm64 "
                                           "kernels, the file's header was not read): 1 bytes too many"));
  }

  // At start: serve does not come up with the file.
  write_file(kernel, bzimage_head(2047));
  write_nodes(2048);
  boost::asio::io_context io;
  CHECK_THROWS_WITH(NetbootService(io, config), Catch::Contains("nodes file " + (dir / "nodes.yaml").string() +
                                                                ": 1 error(s)\n  " + refusal));
}

TEST_CASE("netboot: the start-up check loads what a start loads, binds nothing, and checks lines with the longest "
          "address when it does not know the real one",
          "[netboot][ipxe][kernel][check]") {
  TempDir dir;
  write_file(dir / "assets/vmlinuz-amd64", bzimage_head(2047));
  write_file(dir / "assets/initramfs-amd64.xz", "initramfs");
  // Talos' arguments and `args_bytes` of padding.
  auto write_nodes = [&](std::size_t args_bytes) {
    write_file(dir / "nodes.yaml", "profiles:\n  talos:\n    talos: {kernel: assets/vmlinuz-amd64, initramfs: "
                                   "assets/initramfs-amd64.xz, args: pad=" + std::string(args_bytes, 'p') +
                                       "}\nnodes:\n  - {name: cp1, match: {mac: \"52:54:00:12:34:56\"}, profile: talos, "
                                       "address: 127.0.0.1, talos_config: {file: cp1.yaml}}\n");
  };
  write_file(dir / "cp1.yaml", "version: v1alpha1\nmachine: {type: controlplane}\n");
  fs::permissions(dir / "cp1.yaml", fs::perms(0600));

  // The ports the check is given are taken: a check that bound anything would fail.
  aggrik8s::FileDescriptor tcp(::socket(AF_INET, SOCK_STREAM, 0));
  aggrik8s::FileDescriptor udp(::socket(AF_INET, SOCK_DGRAM, 0));
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(tcp.get(), reinterpret_cast<sockaddr*>(&any), sizeof any) == 0);
  REQUIRE(::listen(tcp.get(), 1) == 0);
  REQUIRE(::bind(udp.get(), reinterpret_cast<sockaddr*>(&any), sizeof any) == 0);
  auto port_of = [](int fd) {
    sockaddr_in bound{};
    socklen_t size = sizeof bound;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size) == 0);
    return ntohs(bound.sin_port);
  };
  NetbootConfig config;
  config.address = "127.0.0.1";
  config.tftp_port = port_of(udp.get());
  config.http_port = port_of(tcp.get());
  config.inventory = dir / "nodes.yaml";
  config.boot_log = dir / "boot.jsonl";  // a start would create it
  std::string base_url = "http://127.0.0.1:" + std::to_string(config.http_port);
  // The longest line that fits with this base URL: the line is 2047 bytes.
  std::string fixed = "vmlinuz-amd64 initrd=initramfs-amd64.xz talos.platform=metal slab_nomerge pti=on pad= talos.config=" +
                      base_url + "/talos/52-54-00-12-34-56/config.yaml";
  write_nodes(2047 - fixed.size());
  NetbootCheck check = check_netboot_configuration(config);
  CHECK(check.nodes == 1);
  CHECK(check.profiles == 1);
  CHECK(check.base_url == base_url);
  CHECK_FALSE(check.base_url_stand_in);
  CHECK(check.warnings.empty());
  CHECK_FALSE(fs::exists(dir / "boot.jsonl"));

  write_nodes(2048 - fixed.size());
  CHECK_THROWS_WITH(check_netboot_configuration(config),
                    Catch::Contains("is 2,048 bytes with iPXE (UEFI)'s prefix 'vmlinuz-amd64 '") &&
                        Catch::Contains("keeps at most 2,047"));

  // Listening on 0.0.0.0, or on an interface this machine lacks, nodes are told an address the check
  // cannot know: the longest IPv4 one stands in, so the line that just fitted 127.0.0.1 is 6 bytes too long.
  write_nodes(2047 - fixed.size());
  config.address = "0.0.0.0";
  CHECK_THROWS_WITH(check_netboot_configuration(config), Catch::Contains("is 2,053 bytes"));
  write_nodes(2047 - fixed.size() - 6);
  check = check_netboot_configuration(config);
  CHECK(check.base_url_stand_in);
  CHECK(check.base_url == "http://255.255.255.255:" + std::to_string(config.http_port));
  config.interface = "no-such-if0";
  check = check_netboot_configuration(config);
  CHECK(check.base_url_stand_in);
  REQUIRE(check.warnings.size() == 1);
  CHECK_THAT(check.warnings[0], Catch::Contains("interface no-such-if0 has no IPv4 address"));
  // A base URL of its own is what the scripts carry, wherever serve listens.
  config.http_base_url = base_url;
  check = check_netboot_configuration(config);
  CHECK_FALSE(check.base_url_stand_in);
  CHECK(check.base_url == base_url);
}

TEST_CASE("netboot: a rebuild-on-reboot Talos node gets a wipe boot, then the normal boot, across a restart",
          "[netboot][http][talos-wipe]") {
  TempDir dir;
  write_file(dir / "assets/vmlinuz-amd64", random_bytes(200'000, 31));
  write_file(dir / "assets/initramfs-amd64.xz", random_bytes(300'000, 32));
  write_file(dir / "t1.yaml", "version: v1alpha1\nmachine: {type: worker}\n");
  fs::permissions(dir / "t1.yaml", fs::perms(0600));
  write_file(dir / "nodes.yaml", R"(profiles:
  ram:
    mode: ephemeral
    talos: {kernel: assets/vmlinuz-amd64, initramfs: assets/initramfs-amd64.xz, args: console=ttyS0}
nodes:
  - {name: t1, match: {mac: "52:54:00:00:14:01"}, profile: ram, address: 127.0.0.1, talos_config: {file: t1.yaml}}
)");
  NetbootConfig config;
  config.address = "127.0.0.1";
  config.tftp_enabled = false;
  config.http_port = 0;
  config.inventory = dir / "nodes.yaml";
  config.boot_log = dir / "boot.jsonl";

  // Without a state directory serve refuses the profile instead of forgetting wipes on a restart.
  {
    boost::asio::io_context io;
    CHECK_THROWS_WITH(NetbootService(io, config),
                      Catch::Contains("profile 'ram'") && Catch::Contains("has no state_dir"));
  }
  config.state_dir = dir / "state";
  fs::create_directories(dir / "state");
  const std::string wipe = "talos.experimental.wipe=system:EPHEMERAL,STATE";
  auto script = [&](RunningService& server) {
    auto reply = curl(dir, "'" + server.http() + "/ipxe?mac=52-54-00-00-14-01&platform=pcbios'");
    REQUIRE(reply.status == "200");
    CHECK_THAT(reply.body, Catch::Contains("talos.config=" + server.http() + "/talos/52-54-00-00-14-01/config.yaml"));
    return reply.body;
  };
  // serve notes the download when it has sent the last byte, which can be just after curl has it:
  // wait for the note, as a node's next request comes only after its kernel booted.
  auto fetch_kernel = [&](RunningService& server, const std::string& transition) {
    CHECK(curl(dir, server.http() + "/assets/ram/vmlinuz-amd64").status == "200");
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (read_file(dir / "boot.jsonl").find("transition=" + transition) == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
  };
  {
    RunningService server(config);
    CHECK_THAT(script(server), Catch::Contains(wipe));  // power-on: the wipe boot
    CHECK_THAT(script(server), Catch::Contains(wipe));  // asked again before its files: the same boot
    fetch_kernel(server, "wipe-files-fetched");
  }
  // serve restarts between the wipe boot and its reboot: the reboot still gets the normal boot.
  auto saved = parse_talos_wipe_state_json(read_file(dir / "state/talos-wipe.json"), "talos-wipe.json");
  CHECK(saved.at("t1").served == TalosBootKind::wipe);
  CHECK(saved.at("t1").files_fetched_at);
  RunningService server(config);
  std::string normal = script(server);
  CHECK(normal.find("talos.experimental.wipe") == std::string::npos);
  fetch_kernel(server, "normal-files-fetched");
  CHECK_THAT(script(server), Catch::Contains(wipe));  // the next power-on

  auto metrics = curl(dir, server.http() + "/metrics").body;
  CHECK_THAT(metrics, Catch::Contains("aggrik8s_talos_wipe_boots_total{node=\"t1\"} 1"));
  CHECK_THAT(metrics, Catch::Contains("aggrik8s_talos_normal_boots_total{node=\"t1\"} 1"));
  CHECK_THAT(metrics, Catch::Contains("aggrik8s_talos_wipe_cycle_state{node=\"t1\",state=\"wipe-served\"} 1"));
  CHECK_THAT(metrics, Catch::Contains("aggrik8s_talos_wipe_cycle_state{node=\"t1\",state=\"normal-running\"} 0"));
  CHECK_THAT(metrics, Catch::Contains("aggrik8s_talos_wipe_transitions_total{node=\"t1\",transition=\"wipe-reboot-normal\"} 1"));
  CHECK_THAT(curl(dir, server.http() + "/status").body,
             Catch::Contains("ram (wipe cycle: wipe boot served, its files not fetched yet; next script: wipe boot (wipe-repeat))"));
  // The boot log, in order: each served script with its transition, each boot's first file.
  std::vector<std::string> cycle;
  std::istringstream log(read_file(dir / "boot.jsonl"));
  for (std::string line; std::getline(log, line);) {
    auto event = nlohmann::json::parse(line);
    std::string step = event["step"];
    if (step == "wipe-boot" || step == "normal-boot" || step == "wipe-cycle") {
      CHECK(event["node"] == "t1");
      cycle.push_back(step + " " + event["detail"].get<std::string>());
    }
  }
  CHECK(cycle == std::vector<std::string>{"wipe-boot transition=power-on-wipe", "wipe-boot transition=wipe-repeat",
                                          "wipe-cycle transition=wipe-files-fetched",
                                          "normal-boot transition=wipe-reboot-normal",
                                          "wipe-cycle transition=normal-files-fetched",
                                          "wipe-boot transition=power-on-wipe"});
  CHECK_FALSE(fs::exists(dir / "state/talos-wipe.json.tmp"));

  // A state file that is not serve's stops serve, naming the file and the field; nothing is guessed.
  fs::create_directories(dir / "state2");
  write_file(dir / "state2/talos-wipe.json", "{\"format\": \"something else\"}\n");
  config.state_dir = dir / "state2";
  boost::asio::io_context io;
  CHECK_THROWS_WITH(NetbootService(io, config), Catch::Contains((dir / "state2/talos-wipe.json").string() + ": 'format'"));
}


TEST_CASE("netboot: another host fetching a rebuild-on-reboot Talos node's script and kernel cannot spare it its wipe",
          "[netboot][http][talos-wipe]") {
  // Found fetching /ipxe?mac=<node> and its kernel from another host while the node ran its normal
  // boot (a node with no pinned address and no lease from serve: its script is anyone's): the cycle
  // took that for a wipe boot that had run, and the node's next power-on got the normal boot, its old
  // STATE back.
  TempDir dir;
  write_file(dir / "assets/vmlinuz-amd64", random_bytes(200'000, 31));
  write_file(dir / "assets/initramfs-amd64.xz", random_bytes(300'000, 32));
  write_file(dir / "nodes.yaml", R"(profiles:
  ram:
    mode: ephemeral
    talos: {kernel: assets/vmlinuz-amd64, initramfs: assets/initramfs-amd64.xz, args: console=ttyS0}
nodes:
  - {name: t1, match: {mac: "52:54:00:00:14:01"}, profile: ram}
)");
  NetbootConfig config;
  config.address = "127.0.0.1";
  config.tftp_enabled = false;
  config.http_port = 0;
  config.inventory = dir / "nodes.yaml";
  config.boot_log = dir / "boot.jsonl";
  config.state_dir = dir / "state";
  fs::create_directories(dir / "state");
  RunningService server(config);
  const std::string wipe = "talos.experimental.wipe=system:EPHEMERAL,STATE";
  auto script_from = [&](const std::string& source) {
    auto reply = curl(dir, "--interface " + source + " '" + server.http() + "/ipxe?mac=52-54-00-00-14-01&platform=pcbios'");
    REQUIRE(reply.status == "200");
    return reply.body;
  };
  auto kernel_from = [&](const std::string& source, int fetches_noted) {
    CHECK(curl(dir, "--interface " + source + " " + server.http() + "/assets/ram/vmlinuz-amd64").status == "200");
    // serve notes a download once its last byte is sent: wait for the boot log's line about it.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    auto count = [&] {
      std::string log = read_file(dir / "boot.jsonl");
      int n = 0;
      for (auto at = log.find("\"step\":\"asset\""); at != std::string::npos; at = log.find("\"step\":\"asset\"", at + 1)) ++n;
      return n;
    };
    while (count() < fetches_noted && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  };
  CHECK_THAT(script_from("127.0.0.1"), Catch::Contains(wipe));  // the node's power-on
  kernel_from("127.0.0.1", 1);
  CHECK(script_from("127.0.0.1").find(wipe) == std::string::npos);  // its reboot: the normal boot
  kernel_from("127.0.0.1", 2);
  // Someone else, while the node runs: a wipe script for them, and their kernel download.
  CHECK_THAT(script_from("127.0.0.2"), Catch::Contains(wipe));
  kernel_from("127.0.0.2", 3);
  // The node's next power-on is wiped.
  CHECK_THAT(script_from("127.0.0.1"), Catch::Contains(wipe));
  std::vector<std::string> cycle;
  std::istringstream log(read_file(dir / "boot.jsonl"));
  for (std::string line; std::getline(log, line);) {
    auto event = nlohmann::json::parse(line);
    std::string step = event["step"];
    if (step == "wipe-boot" || step == "normal-boot" || step == "wipe-cycle") {
      cycle.push_back(event["client"].get<std::string>() + " " + step + " " + event["detail"].get<std::string>());
    }
  }
  CHECK(cycle == std::vector<std::string>{"127.0.0.1 wipe-boot transition=power-on-wipe",
                                          "127.0.0.1 wipe-cycle transition=wipe-files-fetched",
                                          "127.0.0.1 normal-boot transition=wipe-reboot-normal",
                                          "127.0.0.1 wipe-cycle transition=normal-files-fetched",
                                          "127.0.0.2 wipe-boot transition=other-address",
                                          "127.0.0.2 wipe-cycle transition=wipe-files-fetched",
                                          "127.0.0.1 wipe-boot transition=other-address"});
}
TEST_CASE("netboot: Pi 5 HTTP boot: boot.sig and boot.img go to the node's address, by address or by serial in the path",
          "[netboot][http][access]") {
  Fixture f;
  RunningService server(f.config);
  // pi1 is pinned to 127.0.0.2; the bootloader asks with no name: the address is the node.
  auto from = [&](const char* address, const std::string& path) {
    return curl(f.dir, std::string("--interface ") + address + " " + server.http() + path);
  };
  auto sig = from("127.0.0.2", "/net_install/boot.sig");
  CHECK(sig.status == "200");
  CHECK(sig.body == f.pi_boot_sig);
  auto img = from("127.0.0.2", "/net_install/boot.img");
  CHECK(img.status == "200");
  CHECK(img.body == f.pi_boot_img);
  CHECK(from("127.0.0.2", "/boot.img").body == f.pi_boot_img);  // HTTP_PATH empty
  // A range, as a client resuming would ask.
  auto part = curl(f.dir, "--interface 127.0.0.2 -r 100-199 " + server.http() + "/net_install/boot.img");
  CHECK(part.status == "206");
  CHECK(part.body == f.pi_boot_img.substr(100, 100));
  // An HTTP_PATH ending in the serial (proxy-mode DHCP) names the node; still only its address gets it.
  CHECK(from("127.0.0.2", "/pis/9ffefdef/boot.img").body == f.pi_boot_img);
  CHECK(from("127.0.0.3", "/pis/9ffefdef/boot.img").status == "403");
  CHECK(from("127.0.0.3", "/pis/12345678/boot.img").status == "404");  // unknown serial
  // An address no node has: nothing (and no other node's file).
  CHECK(from("127.0.0.3", "/net_install/boot.img").status == "404");
  // cp1 (127.0.0.1) boots Talos: no HTTP boot files.
  CHECK(from("127.0.0.1", "/net_install/boot.img").status == "404");
  auto metrics = curl(f.dir, server.http() + "/metrics");
  CHECK_THAT(metrics.body, Catch::Contains("aggrik8s_http_requests_total{route=\"pi-http-boot\",status=\"403\"} 1"));
}
