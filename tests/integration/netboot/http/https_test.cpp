// HTTPS from `serve` (http.tls) against real clients: a throwaway CA and a server certificate for
// 127.0.0.1 are made with openssl at test time, as a user makes theirs; curl with that CA must get
// files byte for byte (a 20 MB one, a Range, HEAD, keep-alive), curl without it must refuse the server,
// and bad credentials (a key of another certificate, a damaged PEM, a missing file) must be refused
// naming the file. The Pi 5 bootloader checks the server the same way, against the CA in its EEPROM.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "core/secret.hpp"
#include "netboot/http/http_tls_context.hpp"
#include "netboot/service/netboot_config.hpp"
#include "netboot/service/netboot_service.hpp"
#include "tests/netboot_running_service.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using aggrik8s::Secret;
using aggrik8s::SecretReference;
using aggrik8s::test::random_bytes;
using aggrik8s::test::read_file;
using aggrik8s::test::run;
using RunningService = aggrik8s::test::RunningNetbootService;
using aggrik8s::test::StderrToFile;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;

namespace {

std::string bounded(const std::string& command) { return "timeout 60 " + command; }

// A CA, and a server certificate it signs for IP 127.0.0.1 with the given serial; keys RSA-2048 as a
// user would make them for the Pi (whose mbedTLS client handles RSA and ECDSA alike).
void make_ca(const fs::path& dir) {
  auto made = run("cd " + dir.string() +
                  " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=test-ca "
                  "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>&1 && "
                  "openssl x509 -in ca.pem -outform DER -out ca.der");
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
}

void make_server_certificate(const fs::path& dir, const std::string& name, int serial) {
  write_file(dir / "server.ext",
             "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
             "extendedKeyUsage=serverAuth\n");
  auto made = run("cd " + dir.string() + " && openssl req -newkey rsa:2048 -nodes -keyout " + name + ".key -out " + name +
                  ".csr -subj /CN=127.0.0.1 2>&1 && openssl x509 -req -in " + name +
                  ".csr -CA ca.pem -CAkey ca.key -set_serial " + std::to_string(serial) + " -days 30 -extfile server.ext -out " +
                  name + ".pem 2>&1 && chmod 600 " + name + ".key");
  INFO(made.output);
  REQUIRE(made.exit_code == 0);
}

struct Fixture {
  TempDir dir;
  std::string big = random_bytes(20 * 1024 * 1024 + 7, 41);
  NetbootConfig config;
  Fixture() {
    make_ca(dir.path());
    make_server_certificate(dir.path(), "server", 1001);
    write_file(dir / "www/big.bin", big);
    write_file(dir / "www/small.txt", "hello over TLS\n");
    config.address = "127.0.0.1";
    config.tftp_enabled = false;
    config.http_port = 0;
    config.http_root = dir / "www";
    config.http_request_timeout = 5s;
    config.http_idle_timeout = 5s;
    config.http_tls_certificate = dir / "server.pem";
    config.http_tls_key = SecretReference{SecretReference::Kind::file, (dir / "server.key").string(), {}};
  }
};

struct Fetched {
  int exit_code = -1;
  std::string status;  // curl's %{http_code}, or its error
  std::string body;
  std::string headers;
};
Fetched curl(const TempDir& dir, const std::string& arguments) {
  fs::path body = dir / "curl.body";
  fs::path headers = dir / "curl.headers";
  fs::remove(body);
  fs::remove(headers);
  auto result = run(bounded("curl -sS -o " + body.string() + " -D " + headers.string() + " -w '%{http_code}' " + arguments));
  Fetched out;
  out.exit_code = result.exit_code;
  out.status = result.output;
  if (fs::exists(body)) out.body = read_file(body);
  if (fs::exists(headers)) out.headers = read_file(headers);
  return out;
}

// The serial of the certificate the server presents, as openssl s_client sees it.
std::string presented_serial(const TempDir& dir, const std::string& host_port) {
  auto seen = run(bounded("openssl s_client -connect " + host_port + " -CAfile " + (dir / "ca.pem").string() +
                          " </dev/null 2>/dev/null | openssl x509 -noout -serial"));
  return seen.output;
}

std::string all_text(const aggrik8s::Diagnostics& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics.all()) out += d.str() + "\n";
  return out;
}

}  // namespace

TEST_CASE("netboot https: files byte for byte with the user's CA, HEAD, Range, keep-alive", "[netboot][http][tls]") {
  Fixture f;
  StderrToFile log(f.dir / "log.txt");
  RunningService server(f.config);
  REQUIRE(server.service().https_endpoint() == server.service().http_endpoint());  // HTTPS only, on http.port
  std::string ca = "--cacert " + (f.dir / "ca.pem").string() + " ";

  auto get = curl(f.dir, ca + server.https() + "/files/big.bin");
  INFO(get.status);
  CHECK(get.status == "200");
  CHECK(get.body == f.big);

  auto head = curl(f.dir, ca + "-I " + server.https() + "/files/big.bin");
  CHECK(head.status == "200");
  CHECK_THAT(head.headers, Catch::Contains("Content-Length: " + std::to_string(f.big.size())));
  auto head_bytes = run(bounded("curl -sS -I -o /dev/null -w '%{size_download}' " + ca + server.https() + "/files/big.bin"));
  CHECK(head_bytes.output == "0");

  auto range = curl(f.dir, ca + "-r 5000000-5999999 " + server.https() + "/files/big.bin");
  CHECK(range.status == "206");
  CHECK(range.body == f.big.substr(5000000, 1000000));
  CHECK_THAT(range.headers, Catch::Contains("Content-Range: bytes 5000000-5999999/" + std::to_string(f.big.size())));
  auto tail = curl(f.dir, ca + "-r 20971000- " + server.https() + "/files/big.bin");
  CHECK(tail.body == f.big.substr(20971000));

  // TLS 1.2 with the suite an mbedTLS client (the Pi 5 bootloader) picks, and TLS 1.3.
  auto tls12 = run(bounded("curl -sS -o /dev/null -w '%{http_code}' " + ca +
                           "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-RSA-AES128-GCM-SHA256 " + server.https() + "/files/small.txt"));
  CHECK(tls12.output == "200");
  auto tls13 = run(bounded("curl -sS -o /dev/null -w '%{http_code}' " + ca + "--tlsv1.3 " + server.https() + "/files/small.txt"));
  CHECK(tls13.output == "200");
  auto both = run(bounded("curl -sS -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\\n' " + ca + server.https() +
                          "/files/small.txt " + server.https() + "/files/small.txt"));
  CHECK_THAT(both.output, Catch::Contains("200 1\n200 0"));

  // Without the CA, curl refuses the server (exit 60: peer certificate cannot be authenticated); plain
  // HTTP to the TLS port gets no HTTP answer.
  auto untrusted = curl(f.dir, server.https() + "/files/small.txt");
  CHECK(untrusted.exit_code == 60);
  CHECK(untrusted.body.empty());
  auto plain = curl(f.dir, server.http() + "/files/small.txt");
  CHECK(plain.exit_code != 0);

  // The server still answers after those.
  CHECK(curl(f.dir, ca + server.https() + "/files/small.txt").body == "hello over TLS\n");
  std::string logged = log.text();
  CHECK_THAT(logged, Catch::Contains("subject CN = 127.0.0.1"));
  CHECK_THAT(logged, Catch::Contains("TLS handshake failed"));
  CHECK_THAT(logged, !Catch::Contains("PRIVATE KEY"));
}

TEST_CASE("netboot https: plain HTTP on http.port and HTTPS on http.tls_port", "[netboot][http][tls]") {
  Fixture f;
  f.config.http_tls_port = 0;
  RunningService server(f.config);
  REQUIRE(server.service().https_endpoint());
  CHECK(server.service().https_endpoint()->port() != server.service().http_endpoint()->port());
  auto plain = curl(f.dir, server.http() + "/files/small.txt");
  CHECK(plain.status == "200");
  CHECK(plain.body == "hello over TLS\n");
  auto tls = curl(f.dir, "--cacert " + (f.dir / "ca.pem").string() + " " + server.https() + "/files/big.bin");
  CHECK(tls.status == "200");
  CHECK(tls.body == f.big);
}

TEST_CASE("netboot https: reload picks up a renewed certificate, and keeps the old one when the new is bad",
          "[netboot][http][tls]") {
  Fixture f;
  RunningService server(f.config);
  std::string where = "127.0.0.1:" + std::to_string(server.service().https_endpoint()->port());
  CHECK_THAT(presented_serial(f.dir, where), Catch::Contains("serial=03E9"));  // 1001

  make_server_certificate(f.dir.path(), "server", 1002);  // renewed in place, new key too
  CHECK(server.service().reload());
  CHECK_THAT(presented_serial(f.dir, where), Catch::Contains("serial=03EA"));

  // A certificate replaced without its key: the reload fails, the server keeps serving the last good one.
  make_server_certificate(f.dir.path(), "other", 1003);
  fs::copy_file(f.dir / "other.pem", f.dir / "server.pem", fs::copy_options::overwrite_existing);
  CHECK_FALSE(server.service().reload());
  CHECK_THAT(presented_serial(f.dir, where), Catch::Contains("serial=03EA"));
  auto still = curl(f.dir, "--cacert " + (f.dir / "ca.pem").string() + " https://" + where + "/files/small.txt");
  CHECK(still.status == "200");
}

TEST_CASE("netboot https: bad credentials are refused at start, naming the file", "[netboot][http][tls]") {
  Fixture f;
  auto refused = [&](const NetbootConfig& config) -> std::string {
    boost::asio::io_context io;
    try {
      NetbootService service(io, config);
    } catch (const aggrik8s::Error& e) {
      return e.what();
    }
    return "(started)";
  };

  make_server_certificate(f.dir.path(), "other", 7);
  NetbootConfig wrong_key = f.config;
  wrong_key.http_tls_key->name = (f.dir / "other.key").string();
  auto message = refused(wrong_key);
  CHECK_THAT(message, Catch::Contains((f.dir / "other.key").string()));
  CHECK_THAT(message, Catch::Contains("does not belong to the certificate in " + (f.dir / "server.pem").string()));

  NetbootConfig missing = f.config;
  missing.http_tls_certificate = f.dir / "absent.pem";
  message = refused(missing);
  CHECK_THAT(message, Catch::Contains((f.dir / "absent.pem").string()));
  CHECK_THAT(message, Catch::Contains("cannot be read"));

  NetbootConfig missing_key = f.config;
  missing_key.http_tls_key->name = (f.dir / "absent.key").string();
  CHECK_THAT(refused(missing_key), Catch::Contains((f.dir / "absent.key").string()));

  // A damaged chain: a line of the base64 removed.
  std::string pem = read_file(f.dir / "server.pem");
  auto second_line = pem.find('\n') + 1;
  write_file(f.dir / "damaged.pem", pem.substr(0, second_line) + pem.substr(pem.find('\n', second_line) + 1));
  NetbootConfig damaged = f.config;
  damaged.http_tls_certificate = f.dir / "damaged.pem";
  message = refused(damaged);
  CHECK_THAT(message, Catch::Contains((f.dir / "damaged.pem").string()));
  CHECK_THAT(message, Catch::Contains("does not parse") || Catch::Contains("no PEM certificate"));

  write_file(f.dir / "not-pem.pem", "just text\n");
  NetbootConfig not_pem = f.config;
  not_pem.http_tls_certificate = f.dir / "not-pem.pem";
  CHECK_THAT(refused(not_pem), Catch::Contains("no PEM certificate"));

  // The key file as the certificate: no certificate in it.
  NetbootConfig swapped = f.config;
  swapped.http_tls_certificate = f.dir / "server.key";
  CHECK_THAT(refused(swapped), Catch::Contains("no PEM certificate"));

  // A key readable by others is warned about, as node secrets are; the service still starts.
  fs::permissions(f.dir / "server.key", fs::perms(0644));
  {
    StderrToFile log(f.dir / "log.txt");
    CHECK(refused(f.config) == "(started)");
    CHECK_THAT(log.text(), Catch::Contains("readable by other users"));
  }
}

TEST_CASE("netboot https: an expired or not yet valid certificate is a warning", "[netboot][http][tls]") {
  Fixture f;
  std::string chain = read_file(f.dir / "server.pem");
  Secret key(read_file(f.dir / "server.key"));
  std::vector<std::string> warnings;
  auto now = std::chrono::system_clock::now();
  REQUIRE(HttpTlsContext::from_pem(chain, "server.pem", key, "server.key", now, warnings));
  CHECK(warnings.empty());
  HttpTlsContext::from_pem(chain, "server.pem", key, "server.key", now + std::chrono::hours(24 * 40), warnings);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("server.pem expired on"));
  warnings.clear();
  HttpTlsContext::from_pem(chain, "server.pem", key, "server.key", now - std::chrono::hours(24 * 2), warnings);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("is not valid before"));

  // An encrypted key fails instead of asking for a passphrase on the terminal.
  auto encrypted = run("openssl pkey -in " + (f.dir / "server.key").string() + " -aes256 -passout pass:x");
  REQUIRE(encrypted.exit_code == 0);
  CHECK_THROWS_WITH(HttpTlsContext::from_pem(chain, "server.pem", Secret(encrypted.output), "enc.key", now, warnings),
                    Catch::Contains("enc.key: not an unencrypted PEM private key"));
}

TEST_CASE("netboot.yaml: http.tls and http.tls_port", "[netboot][http][tls]") {
  TempDir dir;
  auto parse = [&](const std::string& yaml, aggrik8s::Diagnostics& diagnostics) {
    write_file(dir / "netboot.yaml", yaml);
    return read_netboot_config(dir / "netboot.yaml", diagnostics);
  };
  {
    aggrik8s::Diagnostics diagnostics;
    auto config = parse("http: {port: 8080, tls_port: 443, tls: {certificate: /etc/x/chain.pem, key: {file: /etc/x/server.key}},"
                        " base_url: 'https://10.0.0.1'}\n",
                        diagnostics);
    INFO(all_text(diagnostics));
    CHECK_FALSE(diagnostics.has_errors());
    CHECK(config.http_tls());
    CHECK(*config.http_tls_certificate == "/etc/x/chain.pem");
    CHECK(config.http_tls_key->name == "/etc/x/server.key");
    CHECK(config.http_tls_port == 443);
    CHECK(config.http_base_url == "https://10.0.0.1");
  }
  {
    aggrik8s::Diagnostics diagnostics;
    parse("http: {tls_port: 443}\n", diagnostics);
    CHECK_THAT(all_text(diagnostics), Catch::Contains("'http.tls_port' needs 'http.tls'"));
  }
  {
    aggrik8s::Diagnostics diagnostics;
    parse("http: {port: 443, tls_port: 443, tls: {certificate: c.pem, key: {file: k}}}\n", diagnostics);
    CHECK_THAT(all_text(diagnostics), Catch::Contains("leave tls_port out"));
  }
  {
    aggrik8s::Diagnostics diagnostics;
    parse("http: {tls: {certificate: c.pem, key: 'inline'}}\n", diagnostics);
    CHECK_THAT(all_text(diagnostics), Catch::Contains("must not be written inline"));
  }
  {
    aggrik8s::Diagnostics diagnostics;
    parse("http: {base_url: 'https://10.0.0.1'}\n", diagnostics);
    CHECK_THAT(all_text(diagnostics), Catch::Contains("https:// needs 'http.tls'"));
  }
}
