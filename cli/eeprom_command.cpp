// `aggrik8s-image eeprom-config`: the Raspberry Pi 5 bootloader settings for rpi-eeprom-config.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "builder/rpi/pi_eeprom_config.hpp"
#include "cli/commands.hpp"
#include "core/error.hpp"
#include "netboot/service/node_inventory.hpp"

namespace aggrik8s::cli {

namespace {

std::vector<std::uint8_t> read_small_file(const std::string& path, const std::string& option) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(option + " " + path + ": cannot open the file: " + std::strerror(errno != 0 ? errno : EIO));
  std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw Error(option + " " + path + ": read error");
  return bytes;
}

// --http-* options -> the HTTP boot settings; nullopt without --http-boot (and then no --http-* or
// --serial/--cacert-der may be given: they would be silently unused).
std::optional<builder::PiHttpBootSettings> http_boot_settings(const ParsedArguments& args) {
  if (!args.flag("http-boot")) {
    for (const char* option : {"http-host", "http-port", "http-path", "cacert-der", "serial"}) {
      if (args.flag(option)) throw Error(std::string("--") + option + " needs --http-boot");
    }
    return std::nullopt;
  }
  builder::PiHttpBootSettings http;
  auto host = args.value("http-host");
  if (!host) throw Error("--http-boot needs --http-host HOST: the IPv4 address or DNS name of the server with boot.img");
  http.host = *host;
  if (auto port = args.value("http-port")) http.port = builder::parse_pi_http_port(*port);
  if (auto path = args.value("http-path")) http.path = *path;
  if (auto serial = args.value("serial")) {
    // The same normalisation as the inventory's `serial:` (16 digits as /proc/cpuinfo shows -> low 8).
    http.serial = netboot::normalize_pi_serial(*serial);
    if (!http.serial) throw Error("--serial '" + *serial + "' must be the Pi's serial number: 8 hex digits (or 16, as /proc/cpuinfo shows)");
  }
  if (auto cacert = args.value("cacert-der")) {
    http.cacert_sha256_hex = builder::pi_http_cacert_hash(read_small_file(*cacert, "--cacert-der"), *cacert);
    http.cacert_file = *cacert;
  }
  return http;
}

}  // namespace

Command eeprom_config_command() {
  CommandSpec spec{
      "eeprom-config",
      "",
      "Print the Pi 5 bootloader configuration (boot order, NVMe, network/HTTP boot) for rpi-eeprom-config",
      "The boot order is stored in each Pi's EEPROM, not on the card, so no image can set it. This prints\n"
      "the configuration to apply once per Pi with `sudo rpi-eeprom-config --edit` (or --apply FILE), each\n"
      "line preceded by a comment saying what it does.\n"
      "With --http-boot the Pi fetches boot.sig and boot.img from http://HOST:PORT/PATH/ (boot mode 7,\n"
      "bootloader 2022-03-10 or later) and boots only a boot.img signed with your RSA-2048 key, whose public\n"
      "half must be put into the EEPROM: the output ends with the rpi-eeprom-config -p / rpi-eeprom-update\n"
      "steps, as comments, so it can be saved as boot.conf whole. A public EEPROM update removes the key.\n"
      "See docs/flashing.md.",
      {{"boot-order", 'b', "LIST",
        "modes to try, first to last: sd, nvme, usb, network, http (default sd,nvme,usb; with --http-boot "
        "http,sd,nvme,usb)"},
       {"no-pcie-probe", '\0', "", "leave out PCIE_PROBE=1 (only for NVMe adapters that are HAT+)"},
       {"tftp-prefix", '\0', "serial|mac|STRING", "network boot: directory of each Pi's boot files (default serial)"},
       {"tftp-ip", '\0', "IP", "network boot: TFTP server to use instead of the one DHCP names"},
       {"http-boot", '\0', "", "HTTP boot from your own server (needs --http-host); prints the key steps"},
       {"http-host", '\0', "HOST", "HTTP boot: server's IPv4 address or lower-case DNS name (HTTP_HOST)"},
       {"http-port", '\0', "N", "HTTP boot: server port (default 8080, serve's; 443 with --cacert-der)"},
       {"http-path", '\0', "PATH",
        "HTTP boot: directory of boot.img/boot.sig (default net_install; A-Z a-z 0-9 . _ - /, no leading "
        "'/', no '..', at most 32 characters with the serial)"},
       {"serial", '\0', "SERIAL", "HTTP boot: this Pi's serial (8 hex digits): HTTP_PATH becomes PATH/SERIAL"},
       {"cacert-der", '\0', "FILE", "HTTP boot over HTTPS: the CA certificate (DER); prints HTTP_CACERT_HASH"}},
      0,
      0};
  return {spec, [](const ParsedArguments& args) {
            builder::PiEepromSettings settings;
            try {
              if (auto order = args.value("boot-order")) settings.boot_order = builder::parse_pi_boot_order(*order);
              if (args.flag("no-pcie-probe")) settings.pcie_probe = false;
              settings.tftp_prefix = args.value("tftp-prefix");
              settings.tftp_ip = args.value("tftp-ip");
              settings.http_boot = http_boot_settings(args);
              std::fputs(builder::format_pi_eeprom_config(settings).c_str(), stdout);
            } catch (const Error& e) {
              throw UsageError(e.what());
            }
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
