#pragma once
// The Raspberry Pi 5 bootloader settings a cluster of Pis needs (boot order, NVMe probing, network
// boot), as text for `rpi-eeprom-config`. The boot order lives in the Pi's EEPROM, not on the card,
// so no image can carry it: the tool prints it and the user applies it once per Pi. Pure code.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::builder {

// The bootloader's boot mode numbers (one hex digit each in BOOT_ORDER).
enum class PiBootMode : std::uint8_t {
  sd = 0x1,
  network = 0x2,
  usb = 0x4,
  nvme = 0x6,
  http = 0x7,
  stop = 0xe,
  restart = 0xf,
};

// "sd,nvme,usb,network" (also "net", "tftp", "restart", "stop", "http"). Throws Error naming the bad
// entry, a repeated entry, or an order with more than 8 modes.
std::vector<PiBootMode> parse_pi_boot_order(std::string_view text);
// The BOOT_ORDER value: the first mode in the lowest digit (tried first), "restart" appended unless
// the order already ends in restart or stop. {sd, nvme} -> 0xf61.
std::uint32_t pi_boot_order_value(const std::vector<PiBootMode>& order);

// HTTP boot (mode 7) from the user's own server: the bootloader GETs
// http://HTTP_HOST:HTTP_PORT/HTTP_PATH/boot.sig and boot.img and checks boot.sig against the public key
// added to the EEPROM. Values as given on the command line; format_pi_eeprom_config checks them.
struct PiHttpBootSettings {
  std::string host;                   // HTTP_HOST: an IPv4 address or a lower-case DNS name
  std::optional<std::uint16_t> port;  // HTTP_PORT; nullopt: 80, or 443 with a CA certificate
  std::string path = "net_install";   // HTTP_PATH before the serial (the bootloader's default)
  // 8 hex digits: HTTP_PATH becomes <path>/<serial>, so each Pi asks for its own files.
  std::optional<std::string> serial;
  // sha256 of the DER CA certificate (HTTP_CACERT_HASH: HTTPS), and the file it came from (printed in
  // the rpi-eeprom-config step that embeds it).
  std::optional<std::string> cacert_sha256_hex;
  std::string cacert_file = "ca.der";
};

struct PiEepromSettings {
  // Empty: the Pi 5 default order, sd,nvme,usb.
  std::vector<PiBootMode> boot_order;
  // nullopt: on when NVMe is in the boot order.
  std::optional<bool> pcie_probe;
  // "serial" (default), "mac", or a directory prefix string (TFTP_PREFIX=1 + TFTP_PREFIX_STR).
  std::optional<std::string> tftp_prefix;
  std::optional<std::string> tftp_ip;
  // Set: HTTP_HOST/PORT/PATH(/CACERT_HASH) and the steps to put the public key into the EEPROM are
  // printed, and an empty boot_order means http first, then sd,nvme,usb.
  std::optional<PiHttpBootSettings> http_boot;
};

// The configuration file, each setting preceded by a comment saying what it does; with HTTP boot,
// followed by the steps to apply it (as comments, so the whole output can be saved as boot.conf).
// Throws Error for TFTP settings without network boot, a bad TFTP_IP, a prefix string the bootloader
// rejects, HTTP boot without 'http' in the boot order, or a bad HTTP host, path or serial.
std::string format_pi_eeprom_config(const PiEepromSettings& settings);

// HTTP_PATH as the bootloader will request it: `path`, plus "/<serial>" when given. Throws Error
// naming --http-path (or --serial) for characters outside [A-Za-z0-9._/-], a leading or trailing '/',
// "//", a ".." component, or more than max_pi_http_path_length characters in all.
std::string pi_http_path(std::string_view path, const std::optional<std::string>& serial);
inline constexpr std::size_t max_pi_http_path_length = 32;
// "--http-port" text -> 1..65535; throws Error naming the option otherwise.
std::uint16_t parse_pi_http_port(std::string_view text);
// HTTP_CACERT_HASH for a CA certificate file's bytes: the sha256 hex of the DER bytes, after checking
// that they are one X.509 certificate (OpenSSL). Throws Error naming `file_name`, with the conversion
// command for a PEM file.
std::string pi_http_cacert_hash(std::span<const std::uint8_t> der, std::string_view file_name);

}  // namespace aggrik8s::builder
