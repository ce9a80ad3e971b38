// Boot order -> BOOT_ORDER and the commented rpi-eeprom-config text.
#include <catch2/catch.hpp>

#include <sstream>

#include "builder/rpi/pi_eeprom_config.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

// The setting lines of a configuration, checking that each is NAME=VALUE preceded by a comment.
int count_commented_settings(const std::string& text) {
  std::istringstream lines(text);
  std::string line, previous;
  int settings_seen = 0;
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] != '#' && line[0] != '[') {
      ++settings_seen;
      INFO(line);
      CHECK(line.find('=') != std::string::npos);
      CHECK(previous.starts_with("#"));
    }
    previous = line;
  }
  return settings_seen;
}

}  // namespace

TEST_CASE("eeprom: boot order names become BOOT_ORDER digits, read right to left", "[eeprom]") {
  CHECK(pi_boot_order_value(parse_pi_boot_order("sd,nvme,usb")) == 0xf461);  // the Pi 5 default
  CHECK(pi_boot_order_value(parse_pi_boot_order("nvme,sd,usb")) == 0xf416);  // NVMe first (pi5.md)
  CHECK(pi_boot_order_value(parse_pi_boot_order("sd,nvme,usb,network")) == 0xf2461);
  CHECK(pi_boot_order_value(parse_pi_boot_order("NET,sd")) == 0xf12);
  CHECK(pi_boot_order_value(parse_pi_boot_order("sd,stop")) == 0xe1);
  CHECK(pi_boot_order_value(parse_pi_boot_order("sd,restart")) == 0xf1);
  CHECK_THROWS_WITH(parse_pi_boot_order("sd,floppy"), Catch::Contains("unknown boot mode 'floppy'"));
  CHECK_THROWS_WITH(parse_pi_boot_order("sd,nvme,sd"), Catch::Contains("appears twice"));
  CHECK_THROWS_WITH(parse_pi_boot_order("stop,sd"), Catch::Contains("nothing can follow"));
  CHECK_THROWS_WITH(parse_pi_boot_order(""), Catch::Contains("unknown boot mode ''"));
}

TEST_CASE("eeprom: every setting line is preceded by a comment", "[eeprom]") {
  PiEepromSettings settings;
  settings.boot_order = parse_pi_boot_order("sd,nvme,usb,network");
  settings.tftp_prefix = "mac";
  settings.tftp_ip = "192.168.1.10";
  std::string text = format_pi_eeprom_config(settings);
  CHECK(text.find("[all]\n") != std::string::npos);
  CHECK(text.find("\nBOOT_ORDER=0xf2461\n") != std::string::npos);
  CHECK(text.find("\nPCIE_PROBE=1\n") != std::string::npos);
  CHECK(text.find("\nTFTP_PREFIX=2\n") != std::string::npos);
  CHECK(text.find("\nTFTP_IP=192.168.1.10\n") != std::string::npos);
  CHECK(text.find("SD card, then NVMe, then USB mass storage, then network (DHCP + TFTP), then start again") !=
        std::string::npos);
  CHECK(count_commented_settings(text) == 6);  // BOOT_UART, POWER_OFF_ON_HALT, BOOT_ORDER, PCIE_PROBE, TFTP_PREFIX, TFTP_IP
}

TEST_CASE("eeprom: PCIE_PROBE follows NVMe, TFTP settings need network boot and valid values", "[eeprom]") {
  PiEepromSettings sd_only;
  sd_only.boot_order = parse_pi_boot_order("sd,usb");
  CHECK(format_pi_eeprom_config(sd_only).find("PCIE_PROBE") == std::string::npos);
  PiEepromSettings hat_plus;
  hat_plus.boot_order = parse_pi_boot_order("nvme,sd");
  hat_plus.pcie_probe = false;
  CHECK(format_pi_eeprom_config(hat_plus).find("PCIE_PROBE") == std::string::npos);

  PiEepromSettings no_network = sd_only;
  no_network.tftp_ip = "10.0.0.1";
  CHECK_THROWS_WITH(format_pi_eeprom_config(no_network), Catch::Contains("'network' is in the boot order"));

  PiEepromSettings network;
  network.boot_order = parse_pi_boot_order("network,sd");
  CHECK(format_pi_eeprom_config(network).find("\nTFTP_PREFIX=0\n") != std::string::npos);
  network.tftp_prefix = "k8s/";
  std::string text = format_pi_eeprom_config(network);
  CHECK(text.find("\nTFTP_PREFIX=1\nTFTP_PREFIX_STR=k8s/\n") != std::string::npos);
  network.tftp_prefix = "has space";
  CHECK_THROWS(format_pi_eeprom_config(network));
  network.tftp_prefix.reset();
  network.tftp_ip = "10.0.0.300";
  CHECK_THROWS_WITH(format_pi_eeprom_config(network), Catch::Contains("IPv4"));
}

namespace {

PiEepromSettings http_boot_to(const std::string& host) {
  PiEepromSettings settings;
  settings.http_boot = PiHttpBootSettings{};
  settings.http_boot->host = host;
  return settings;
}

std::vector<std::uint8_t> from_hex(std::string_view hex) {
  std::vector<std::uint8_t> bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return bytes;
}

// A self-signed P-256 CA certificate (openssl req -x509 -newkey ec, DER) and its sha256sum.
constexpr std::string_view test_ca_der_hex =
    "3082018d30820133a00302010202140367f3de72b4aa642388ec676f9c44b539a290c7300a06082a8648ce3d040302301b31"
    "19301706035504030c1061676772696b38732d746573742d63613020170d3236313230343230323535325a180f3231323631"
    "3131303230323535325a301b3119301706035504030c1061676772696b38732d746573742d63613059301306072a8648ce3d"
    "020106082a8648ce3d03010703420004dc437eb2cd6428a9decacd46c7986ae081e5dd32224df9fcb8a8b955ecd11c709941"
    "0ce7016981b269e60ead734b57ec4a13f4a551ce117c4e61d7893e34be34a3533051301d0603551d0e041604147c239b2116"
    "7dc6539b7302ae724ca5d307778f5d301f0603551d230418301680147c239b21167dc6539b7302ae724ca5d307778f5d300f"
    "0603551d130101ff040530030101ff300a06082a8648ce3d0403020348003045022100cc9b4c7e711d397d2dbd51cfacfee6"
    "2878f2996256e76871e0292a2f517b32aa0220431de917cb9d4665a2748b3511cc3130b32a049042224f86152a1288429c3a"
    "81";
constexpr std::string_view test_ca_sha256 = "83eac5e6e6c3c66cde841f13b317335764fafe216fe467f41921b532e270d0ef";

}  // namespace

TEST_CASE("eeprom: HTTP boot puts http first and prints host, port, path and the key steps", "[eeprom][http-boot]") {
  PiEepromSettings settings = http_boot_to("10.0.0.2");
  std::string text = format_pi_eeprom_config(settings);
  CHECK(text.find("\nBOOT_ORDER=0xf4617\n") != std::string::npos);  // http, sd, nvme, usb, restart
  CHECK(text.find("\nHTTP_HOST=10.0.0.2\nHTTP_PORT=8080\n") == std::string::npos);  // each has its comment
  CHECK(text.find("\nHTTP_HOST=10.0.0.2\n") != std::string::npos);
  // serve's default port (it printed the bootloader's 80, where a serve started with defaults is not).
  CHECK(text.find("\nHTTP_PORT=8080\n") != std::string::npos);
  CHECK(text.find("\nHTTP_PATH=net_install\n") != std::string::npos);
  CHECK(text.find("http://10.0.0.2:8080/net_install/boot.img") != std::string::npos);
  CHECK(text.find("HTTP_CACERT_HASH") == std::string::npos);
  CHECK(text.find("TFTP_PREFIX") == std::string::npos);  // mode 2 is not in the order
  CHECK(text.find("rpi-eeprom-config -c boot.conf -p pub.pem -o pieeprom.upd pieeprom.original.bin\n") != std::string::npos);
  CHECK(text.find("--cacertder") == std::string::npos);
  CHECK(text.find("rpi-eeprom-update -d -f ./pieeprom.upd") != std::string::npos);
  CHECK(text.find("2022-03-10") != std::string::npos);
  CHECK(text.find("removes the public key") != std::string::npos);
  // Everything that is not a setting is a comment: the whole output is a valid boot.conf.
  CHECK(count_commented_settings(text) == 7);  // BOOT_UART, POWER_OFF_ON_HALT, BOOT_ORDER, PCIE_PROBE, HTTP_HOST/PORT/PATH

  settings.boot_order = parse_pi_boot_order("sd,http");
  settings.http_boot->port = 8080;
  settings.http_boot->serial = "1a2b3c4d";
  settings.http_boot->path = "k8s/pi5";
  text = format_pi_eeprom_config(settings);
  CHECK(text.find("\nBOOT_ORDER=0xf71\n") != std::string::npos);
  CHECK(text.find("\nHTTP_PORT=8080\n") != std::string::npos);
  CHECK(text.find("\nHTTP_PATH=k8s/pi5/1a2b3c4d\n") != std::string::npos);
  CHECK(text.find("for the Pi with serial 1a2b3c4d only") != std::string::npos);

  settings.boot_order = parse_pi_boot_order("sd,nvme");
  CHECK_THROWS_WITH(format_pi_eeprom_config(settings), Catch::Contains("needs 'http' in --boot-order"));
}

TEST_CASE("eeprom: HTTPS adds HTTP_CACERT_HASH, port 443 and --cacertder", "[eeprom][http-boot]") {
  PiEepromSettings settings = http_boot_to("boot.example.org");
  settings.http_boot->cacert_sha256_hex = pi_http_cacert_hash(from_hex(test_ca_der_hex), "ca.der");
  CHECK(*settings.http_boot->cacert_sha256_hex == test_ca_sha256);
  std::string text = format_pi_eeprom_config(settings);
  CHECK(text.find("\nHTTP_CACERT_HASH=" + std::string(test_ca_sha256) + "\n") != std::string::npos);
  CHECK(text.find("\nHTTP_PORT=443\n") != std::string::npos);
  CHECK(text.find("https://boot.example.org:443/net_install/boot.sig") != std::string::npos);
  CHECK(text.find("-o pieeprom.upd pieeprom.original.bin --cacertder ca.der\n") != std::string::npos);
  CHECK(text.find("2024-04-05") != std::string::npos);
}

TEST_CASE("eeprom: the CA certificate must be one DER X.509 certificate", "[eeprom][http-boot]") {
  std::vector<std::uint8_t> der = from_hex(test_ca_der_hex);
  std::string pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  CHECK_THROWS_WITH(pi_http_cacert_hash(std::vector<std::uint8_t>(pem.begin(), pem.end()), "ca.pem"),
                    Catch::Contains("ca.pem is a PEM certificate") && Catch::Contains("openssl x509 -in ca.pem -outform DER"));
  std::string key = "-----BEGIN PRIVATE KEY-----\n";
  CHECK_THROWS_WITH(pi_http_cacert_hash(std::vector<std::uint8_t>(key.begin(), key.end()), "k.pem"),
                    Catch::Contains("not a certificate"));
  std::vector<std::uint8_t> truncated(der.begin(), der.end() - 10);
  CHECK_THROWS_WITH(pi_http_cacert_hash(truncated, "cut.der"), Catch::Contains("cut.der is not a DER-encoded X.509 certificate"));
  std::vector<std::uint8_t> trailing = der;
  trailing.push_back(0);
  CHECK_THROWS_WITH(pi_http_cacert_hash(trailing, "two.der"), Catch::Contains("1 bytes after the certificate"));
  CHECK_THROWS(pi_http_cacert_hash({}, "empty.der"));
}

TEST_CASE("eeprom: HTTP_HOST, HTTP_PATH, port and serial are checked, naming the option", "[eeprom][http-boot]") {
  for (const char* good : {"10.0.0.2", "pxe", "boot-1.lab.example.org"}) {
    INFO(good);
    CHECK_NOTHROW(format_pi_eeprom_config(http_boot_to(good)));
  }
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("Boot.lab")), Catch::Contains("--http-host") && Catch::Contains("lower case"));
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("http://boot")), Catch::Contains("no scheme, port or path"));
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("boot:8080")), Catch::Contains("no scheme, port or path"));
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("10.0.0.256")), Catch::Contains("not a valid IPv4 address"));
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("a..b")), Catch::Contains("not a DNS name"));
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("-a.b")), Catch::Contains("not a DNS name"));
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("a_b")), Catch::Contains("not a DNS name"));
  CHECK_THROWS_WITH(format_pi_eeprom_config(http_boot_to("")), Catch::Contains("--http-host) is empty"));

  CHECK(pi_http_path("net_install", std::nullopt) == "net_install");
  CHECK(pi_http_path("A-z_0.9/sub", std::string("9ffefdef")) == "A-z_0.9/sub/9ffefdef");
  CHECK(pi_http_path(std::string(32, 'a'), std::nullopt).size() == 32);
  CHECK_THROWS_WITH(pi_http_path(std::string(33, 'a'), std::nullopt), Catch::Contains("has 33 characters; at most 32"));
  CHECK_THROWS_WITH(pi_http_path(std::string(24, 'a'), std::string("9ffefdef")), Catch::Contains("--http-path plus /SERIAL"));
  CHECK_THROWS_WITH(pi_http_path("/net_install", std::nullopt), Catch::Contains("--http-path") && Catch::Contains("start or end with '/'"));
  CHECK_THROWS_WITH(pi_http_path("net_install/", std::nullopt), Catch::Contains("start or end with '/'"));
  CHECK_THROWS_WITH(pi_http_path("a//b", std::nullopt), Catch::Contains("'//'"));
  CHECK_THROWS_WITH(pi_http_path("a/../b", std::nullopt), Catch::Contains("'..' component"));
  CHECK_THROWS_WITH(pi_http_path("..", std::nullopt), Catch::Contains("'..' component"));
  CHECK_THROWS_WITH(pi_http_path("a/./b", std::nullopt), Catch::Contains("'..' component"));
  for (const char* unsafe : {"a b", "a?b", "a%2e", "a#b", "a\\b", "caf\xc3\xa9", "a\r\nHost: x"}) {
    INFO(unsafe);
    CHECK_THROWS_WITH(pi_http_path(unsafe, std::nullopt), Catch::Contains("has the character"));
  }
  CHECK_THROWS_WITH(pi_http_path("", std::nullopt), Catch::Contains("is empty"));
  CHECK_THROWS_WITH(pi_http_path("p", std::string("1A2B3C4D")), Catch::Contains("--serial"));
  CHECK_THROWS_WITH(pi_http_path("p", std::string("1a2b3c")), Catch::Contains("8 lower-case hex digits"));

  CHECK(parse_pi_http_port("80") == 80);
  CHECK(parse_pi_http_port("65535") == 65535);
  for (const char* bad : {"0", "65536", "", "8o", "-1", " 80"}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_pi_http_port(bad), Catch::Contains("--http-port"));
  }
}
