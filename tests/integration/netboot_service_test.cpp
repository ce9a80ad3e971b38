// The netboot service in-process on 127.0.0.1 (TFTP + HTTP on port 0), against real clients: curl for
// HTTP (GET, HEAD, ranges, per-node access from other loopback addresses via --interface) and tftp-hpa
// for a Raspberry Pi's boot partition served straight out of an image file. Raw sockets cover the bad
// input curl will not send.
#include "netboot/netboot_service.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <thread>

#include "core/file_descriptor.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using aggrik8s::test::read_file;
using aggrik8s::test::run;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;

namespace {

std::string random_bytes(std::size_t size, unsigned seed) {
  std::mt19937_64 generator(seed);
  std::string out(size, '\0');
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    std::uint64_t value = generator();
    std::memcpy(out.data() + i, &value, 8);
  }
  return out;
}

std::string bounded(const std::string& command) { return "timeout 60 " + command; }

// A small MBR image whose first partition is FAT, made with the tools a user has (sfdisk, mkfs.fat,
// mcopy), holding a Pi boot partition's usual files.
void make_pi_image(const fs::path& dir, const fs::path& image, const std::string& kernel) {
  write_file(dir / "config.txt", "arm_64bit=1\nkernel=kernel_2712.img\n");
  write_file(dir / "cmdline.txt", "console=serial0,115200 root=PARTUUID=12345678-02 rootwait\n");
  write_file(dir / "kernel_2712.img", kernel);
  auto made = run("set -e; truncate -s 40M " + image.string() + "; echo 'start=2048, size=65536, type=c' | sfdisk -q " +
                  image.string() + "; rm -f " + (dir / "boot.fat").string() + "; mkfs.fat -n BOOTFS -C " +
                  (dir / "boot.fat").string() + " 32768 >/dev/null; mmd -i " + (dir / "boot.fat").string() +
                  " ::/overlays; mcopy -i " + (dir / "boot.fat").string() + " " + (dir / "config.txt").string() + " " +
                  (dir / "cmdline.txt").string() + " " + (dir / "kernel_2712.img").string() + " ::/; dd if=" +
                  (dir / "boot.fat").string() + " of=" + image.string() +
                  " bs=1M seek=1 conv=notrunc status=none");
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
}

class RunningService {
 public:
  explicit RunningService(NetbootConfig config) {
    service_ = std::make_unique<NetbootService>(io_, std::move(config));
    service_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningService() {
    service_->stop();
    thread_.join();
  }
  std::string http() const { return "http://127.0.0.1:" + std::to_string(service_->http_endpoint()->port()); }
  std::uint16_t http_port() const { return service_->http_endpoint()->port(); }
  std::string tftp_host() const { return "127.0.0.1 " + std::to_string(service_->tftp_endpoint()->port()); }
  NetbootService& service() { return *service_; }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<NetbootService> service_;
  std::thread thread_;
};

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

struct Fixture {
  TempDir dir;
  std::string kernel = random_bytes(3'000'000 + 5, 21);
  std::string initramfs = random_bytes(5'000'000 + 3, 22);
  std::string pi_kernel = random_bytes(1'500'000 + 1, 23);
  std::string big = random_bytes(48 * 1024 * 1024, 24);
  NetbootConfig config;

  Fixture() {
    write_file(dir / "assets/vmlinuz-amd64", kernel);
    write_file(dir / "assets/initramfs-amd64.xz", initramfs);
    write_file(dir / "www/big.bin", big);
    write_file(dir / "www/small.txt", "hello\n");
    write_file(dir / "secret.txt", "not for HTTP\n");
    fs::create_symlink(dir / "secret.txt", dir / "www/link-out");
    write_file(dir / "cp1.yaml", "version: v1alpha1\nmachine: {type: controlplane}\n");
    write_file(dir / "w1.yaml", "version: v1alpha1\nmachine: {type: worker}\n");
    write_file(dir / "w1-user-data", "#cloud-config\nhostname: w1\n");
    for (const char* secret : {"cp1.yaml", "w1.yaml", "w1-user-data"}) fs::permissions(dir / secret, fs::perms(0600));
    fs::create_directories(dir / "pi");
    make_pi_image(dir / "pi", dir / "pi5.img", pi_kernel);
    write_file(dir / "nodes.yaml", R"(profiles:
  pi: {rpi_image: {image: pi5.img}, mode: ephemeral}
  talos:
    talos: {kernel: assets/vmlinuz-amd64, initramfs: assets/initramfs-amd64.xz, args: console=ttyS0}
  maint:
    talos: {kernel: assets/vmlinuz-amd64, initramfs: assets/initramfs-amd64.xz}
nodes:
  - {name: pi1, match: {serial: 9ffefdef}, profile: pi}
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

  // w1 has no pinned address: nothing before its boot script was fetched, then only from that address.
  std::string w1 = "4c4c4544-0000-1000-8000-000000000001";
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/talos/" + w1 + "/config.yaml").status == "403");
  auto script = curl(f.dir, "--interface 127.0.0.3 '" + server.http() + "/ipxe?uuid=" + w1 + "&platform=efi'");
  CHECK(script.status == "200");
  CHECK_THAT(script.body, Catch::Contains("talos.config=" + server.http() + "/talos/" + w1 + "/config.yaml"));
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/talos/" + w1 + "/config.yaml").body ==
        read_file(f.dir / "w1.yaml"));
  CHECK(curl(f.dir, "--interface 127.0.0.4 " + server.http() + "/talos/" + w1 + "/config.yaml").status == "403");
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/cloud-init/" + w1 + "/user-data").body ==
        read_file(f.dir / "w1-user-data"));
  CHECK_THAT(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/cloud-init/" + w1 + "/meta-data").body,
             Catch::Contains("instance-id: w1"));
  CHECK(curl(f.dir, "--interface 127.0.0.4 " + server.http() + "/cloud-init/" + w1 + "/user-data").status == "403");
  // The DHCP hook outranks what was seen.
  server.service().addresses().record_lease("w1", "127.0.0.5");
  CHECK(curl(f.dir, "--interface 127.0.0.3 " + server.http() + "/talos/" + w1 + "/config.yaml").status == "403");
  CHECK(curl(f.dir, "--interface 127.0.0.5 " + server.http() + "/talos/" + w1 + "/config.yaml").status == "200");

  // An unknown machine gets the maintenance profile: Talos without a config.
  auto unknown = curl(f.dir, "--interface 127.0.0.9 '" + server.http() + "/ipxe?mac=52-54-00-99-99-99&platform=efi'");
  CHECK(unknown.status == "200");
  CHECK_THAT(unknown.body, Catch::Contains("/assets/maint/vmlinuz-amd64"));
  CHECK(unknown.body.find("talos.config") == std::string::npos);
  CHECK(curl(f.dir, server.http() + "/talos/52-54-00-99-99-99/config.yaml").status == "404");
  CHECK_THAT(curl(f.dir, server.http() + "/boot.ipxe").body, Catch::Contains("chain " + server.http() + "/ipxe?mac="));

  auto log = read_file(f.dir / "boot.jsonl");
  CHECK_THAT(log, Catch::Contains("\"node\":\"cp1\""));
  CHECK_THAT(log, Catch::Contains("\"result\":\"refused\""));
  CHECK_THAT(curl(f.dir, server.http() + "/metrics").body,
             Catch::Contains("aggrik8s_boot_steps_total{node=\"cp1\",step=\"talos-config\",result=\"refused\"} 1"));
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
