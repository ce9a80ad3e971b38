#include "builder/rpi/pi_eeprom_config.hpp"

#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <memory>

#include "core/error.hpp"
#include "core/identifiers.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {

namespace {

constexpr std::size_t max_boot_modes = 8;  // BOOT_ORDER is 32 bits of 4-bit modes
constexpr std::size_t max_tftp_prefix_length = 32;

const char* describe(PiBootMode mode) {
  switch (mode) {
    case PiBootMode::sd: return "SD card";
    case PiBootMode::network: return "network (DHCP + TFTP)";
    case PiBootMode::usb: return "USB mass storage";
    case PiBootMode::nvme: return "NVMe";
    case PiBootMode::http: return "HTTP (network install/boot over HTTP)";
    case PiBootMode::stop: return "stop";
    case PiBootMode::restart: return "start again from the first";
  }
  return "?";
}

bool has(const std::vector<PiBootMode>& order, PiBootMode mode) {
  return std::find(order.begin(), order.end(), mode) != order.end();
}

// The bootloader silently ignores an HTTP_HOST that is not lower-case letters, digits, '-' and '.'
// (and then boots from Raspberry Pi's server, which our boot.sig cannot match): refuse it here.
void check_pi_http_host(const std::string& host) {
  const std::string what = "HTTP_HOST (--http-host) '" + host + "'";
  if (host.empty()) throw Error("HTTP_HOST (--http-host) is empty: give the server's IPv4 address or DNS name");
  if (host.find("://") != std::string::npos || host.find('/') != std::string::npos ||
      host.find(':') != std::string::npos) {
    throw Error(what + " must be a bare host name or IPv4 address: no scheme, port or path (those are --http-port and --http-path)");
  }
  if (std::any_of(host.begin(), host.end(), [](unsigned char c) { return c >= 'A' && c <= 'Z'; })) {
    throw Error(what + " must be lower case: the bootloader ignores host names with upper-case letters");
  }
  bool numeric = std::all_of(host.begin(), host.end(), [](unsigned char c) { return (c >= '0' && c <= '9') || c == '.'; });
  if (numeric) {
    if (!is_ipv4_address(host)) throw Error(what + " is not a valid IPv4 address");
    return;
  }
  if (host.size() > 253) throw Error(what + " is longer than 253 characters");
  std::size_t at = 0;
  while (at <= host.size()) {
    std::size_t dot = host.find('.', at);
    if (dot == std::string::npos) dot = host.size();
    if (!is_dns_label(std::string_view(host).substr(at, dot - at))) {
      throw Error(what + " is not a DNS name: each dot-separated part must be 1-63 of a-z, 0-9 and '-', not starting or ending with '-'");
    }
    at = dot + 1;
  }
}

std::string http_boot_lines(const PiHttpBootSettings& http) {
  check_pi_http_host(http.host);
  const std::string path = pi_http_path(http.path, http.serial);
  const bool https = http.cacert_sha256_hex.has_value();
  // Plain HTTP: the port `aggrik8s-image serve` listens on by default, not the bootloader's own default
  // (80, used when HTTP_PORT is absent): printed always, so a config pasted as it is reaches serve.
  const std::uint16_t port = http.port.value_or(https ? 443 : 8080);
  const std::string url = std::string(https ? "https" : "http") + "://" + http.host + ":" + std::to_string(port) + "/" + path;
  std::string out =
      "# HTTP boot (mode 7): fetch boot.sig and boot.img from this server instead of Raspberry Pi's. With\n"
      "# HTTP_HOST set, the bootloader accepts only files signed with the key whose public half is added to\n"
      "# the EEPROM (see the steps at the end). It silently ignores an invalid host name.\n"
      "HTTP_HOST=" + http.host + "\n";
  out += https ? "# Port of the HTTPS server (Raspberry Pi documents HTTPS boot on 443 only).\n"
               : "# Port of the HTTP server (8080: aggrik8s-image serve's default; the bootloader's own is 80).\n";
  out += "HTTP_PORT=" + std::to_string(port) + "\n";
  if (http.serial) {
    out +=
        "# Directory on the server, ending in this Pi's serial number: the bootloader's requests carry no\n"
        "# serial or MAC, so a server that does not hand out the addresses itself (proxy DHCP mode) can tell\n"
        "# the Pis apart only by path. This configuration is therefore for the Pi with serial " + *http.serial + " only.\n";
  } else {
    out += "# Directory on the server, the same for every Pi given this configuration.\n";
  }
  out += "# Requests: " + url + "/boot.sig, then " + url + "/boot.img.\n";
  out += "HTTP_PATH=" + path + "\n";
  if (https) {
    const std::string& hash = *http.cacert_sha256_hex;
    if (hash.size() != 64 || !std::all_of(hash.begin(), hash.end(), [](unsigned char c) { return std::isxdigit(c) && !std::isupper(c); })) {
      throw Error("HTTP_CACERT_HASH must be 64 lower-case hex digits, got '" + hash + "'");
    }
    out +=
        "# HTTPS: accept only a server certificate issued by the CA whose DER file has this sha256 (the\n"
        "# certificate itself is embedded with `rpi-eeprom-config --cacertder`, step 2). Needs a Pi 5\n"
        "# bootloader from 2024-04-05 or later, and is much slower than HTTP on the Pi (about 50 s instead\n"
        "# of 7 s for 95 MB, rpi-eeprom #614).\n"
        "HTTP_CACERT_HASH=" + hash + "\n";
  }
  out +=
      "#\n"
      "# Steps (the public key cannot be added by `rpi-eeprom-config --apply` or `--edit`):\n"
      "# 1. Save this output as boot.conf. On the Pi (rpi-eeprom package), start from the newest bootloader\n"
      "#    image it has. Boot mode 7 needs a bootloader from 2022-03-10 or later";
  out += https ? ", HTTPS one from 2024-04-05\n#    or later.\n" : ".\n";
  out +=
      "#      cp \"$(rpi-eeprom-update -l)\" pieeprom.original.bin\n"
      "# 2. Put this configuration and your RSA-2048 public key into it. pub.pem is the public half of the\n"
      "#    key boot.sig is signed with (`openssl rsa -in key.pem -pubout -out pub.pem`; only 2048-bit keys\n"
      "#    work)";
  out += https ? "; " + http.cacert_file + " is the CA certificate hashed above.\n" : ".\n";
  out += "#      rpi-eeprom-config -c boot.conf -p pub.pem -o pieeprom.upd pieeprom.original.bin";
  out += https ? " --cacertder " + http.cacert_file + "\n" : "\n";
  out +=
      "# 3. Flash it (-d keeps the configuration inside pieeprom.upd) and reboot:\n"
      "#      sudo rpi-eeprom-update -d -f ./pieeprom.upd && sudo reboot\n"
      "#\n"
      "# WARNING: a public EEPROM update (rpi-eeprom-update installing a Raspberry Pi release, also the\n"
      "# automatic one after an apt upgrade) replaces the EEPROM and removes the public key: the Pi then\n"
      "# refuses our boot.sig. Repeat steps 1-3 after such an update.\n";
  return out;
}

}  // namespace

std::string pi_http_path(std::string_view path, const std::optional<std::string>& serial) {
  const std::string shown(path);
  auto bad = [&](const std::string& why) {
    return Error("HTTP_PATH (--http-path) '" + shown + "' " + why);
  };
  if (path.empty()) throw bad("is empty (the bootloader's default is net_install)");
  for (char c : path) {
    bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                   c == '-' || c == '/';
    if (!allowed) {
      throw bad("has the character '" + std::string(1, c) +
                "': only A-Z, a-z, 0-9, '.', '_', '-' and '/' are safe in the bootloader's request line");
    }
  }
  if (path.front() == '/' || path.back() == '/') {
    throw bad("must not start or end with '/': the bootloader adds them (http://HOST:PORT/PATH/boot.img)");
  }
  if (path.find("//") != std::string_view::npos) throw bad("has an empty directory ('//')");
  std::size_t at = 0;
  while (at <= path.size()) {
    std::size_t slash = path.find('/', at);
    if (slash == std::string_view::npos) slash = path.size();
    if (path.substr(at, slash - at) == ".." || path.substr(at, slash - at) == ".") {
      throw bad("has a '.' or '..' component");
    }
    at = slash + 1;
  }
  std::string full = shown;
  if (serial) {
    if (serial->size() != 8 || !std::all_of(serial->begin(), serial->end(), [](unsigned char c) { return std::isxdigit(c) && !std::isupper(c); })) {
      throw Error("--serial '" + *serial + "' must be the Pi's serial number: 8 lower-case hex digits");
    }
    full += "/" + *serial;
  }
  if (full.size() > max_pi_http_path_length) {
    // The documentation gives no limit for HTTP_PATH; the bootloader's other path string
    // (TFTP_PREFIX_STR) is limited to 32 characters, and a truncated path fails silently on the Pi.
    throw Error("HTTP_PATH (--http-path" + std::string(serial ? " plus /SERIAL" : "") + ") '" + full + "' has " +
                std::to_string(full.size()) + " characters; at most " + std::to_string(max_pi_http_path_length) +
                " are accepted (the documented limit of the bootloader's other path string, TFTP_PREFIX_STR)");
  }
  return full;
}

std::uint16_t parse_pi_http_port(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    throw Error("--http-port '" + std::string(text) + "' must be a port number, 1 to 65535");
  }
  return static_cast<std::uint16_t>(value);
}

std::string pi_http_cacert_hash(std::span<const std::uint8_t> der, std::string_view file_name) {
  const std::string name(file_name);
  std::string_view text(reinterpret_cast<const char*>(der.data()), der.size());
  if (text.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos) {
    throw Error("--cacert-der " + name + " is a PEM certificate; the bootloader hashes the DER form. Convert it: openssl x509 -in " +
                name + " -outform DER -out ca.der");
  }
  if (text.find("-----BEGIN") != std::string_view::npos) {
    throw Error("--cacert-der " + name + " is PEM text but not a certificate (a key?): give the CA certificate, in DER form");
  }
  const unsigned char* at = der.data();
  std::unique_ptr<X509, decltype(&X509_free)> certificate(d2i_X509(nullptr, &at, static_cast<long>(der.size())), &X509_free);
  if (!certificate) throw Error("--cacert-der " + name + " is not a DER-encoded X.509 certificate");
  if (at != der.data() + der.size()) {
    throw Error("--cacert-der " + name + " has " + std::to_string(der.data() + der.size() - at) +
                " bytes after the certificate: give exactly one DER certificate");
  }
  return Sha256::of(der).hex();
}

std::vector<PiBootMode> parse_pi_boot_order(std::string_view text) {
  std::vector<PiBootMode> order;
  std::size_t at = 0;
  while (at <= text.size()) {
    std::size_t comma = text.find(',', at);
    if (comma == std::string_view::npos) comma = text.size();
    std::string name(text.substr(at, comma - at));
    at = comma + 1;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    PiBootMode mode;
    if (name == "sd") {
      mode = PiBootMode::sd;
    } else if (name == "nvme") {
      mode = PiBootMode::nvme;
    } else if (name == "usb") {
      mode = PiBootMode::usb;
    } else if (name == "network" || name == "net" || name == "tftp") {
      mode = PiBootMode::network;
    } else if (name == "http") {
      mode = PiBootMode::http;
    } else if (name == "restart") {
      mode = PiBootMode::restart;
    } else if (name == "stop") {
      mode = PiBootMode::stop;
    } else {
      throw Error("unknown boot mode '" + name + "' in boot order '" + std::string(text) +
                  "' (known: sd, nvme, usb, network, http, restart, stop)");
    }
    if (has(order, mode)) throw Error("boot mode '" + name + "' appears twice in boot order '" + std::string(text) + "'");
    if (!order.empty() && (order.back() == PiBootMode::restart || order.back() == PiBootMode::stop)) {
      throw Error("boot order '" + std::string(text) + "': nothing can follow restart or stop");
    }
    order.push_back(mode);
  }
  std::size_t needed = order.size() + (order.back() == PiBootMode::restart || order.back() == PiBootMode::stop ? 0 : 1);
  if (needed > max_boot_modes) {
    throw Error("boot order '" + std::string(text) + "' has too many modes: BOOT_ORDER holds 8, including the final restart");
  }
  return order;
}

std::uint32_t pi_boot_order_value(const std::vector<PiBootMode>& order) {
  std::vector<PiBootMode> modes = order;
  if (modes.empty() || (modes.back() != PiBootMode::restart && modes.back() != PiBootMode::stop)) {
    modes.push_back(PiBootMode::restart);
  }
  std::uint32_t value = 0;
  for (std::size_t i = modes.size(); i-- > 0;) value = (value << 4) | static_cast<std::uint32_t>(modes[i]);
  return value;
}

std::string format_pi_eeprom_config(const PiEepromSettings& settings) {
  const std::vector<PiBootMode> order = !settings.boot_order.empty() ? settings.boot_order
                                        : settings.http_boot         ? parse_pi_boot_order("http,sd,nvme,usb")
                                                                     : parse_pi_boot_order("sd,nvme,usb");
  if (settings.http_boot && !has(order, PiBootMode::http)) {
    throw Error("--http-boot needs 'http' in --boot-order where the Pi should try it (leave --boot-order out for http first, then sd, nvme, usb)");
  }
  // TFTP_* settings are for mode 2 only; HTTP boot (7) has its own.
  bool network = has(order, PiBootMode::network);
  if (!network && (settings.tftp_prefix || settings.tftp_ip)) {
    throw Error("TFTP settings only matter when 'network' is in the boot order");
  }
  if (settings.tftp_ip && !is_ipv4_address(*settings.tftp_ip)) {
    throw Error("TFTP_IP must be an IPv4 address, got '" + *settings.tftp_ip + "'");
  }
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%x", pi_boot_order_value(order));
  std::string order_text;
  for (auto mode : order) order_text += (order_text.empty() ? "" : ", then ") + std::string(describe(mode));
  if (order.back() != PiBootMode::restart && order.back() != PiBootMode::stop) order_text += ", then start again";

  std::string out =
      "# Raspberry Pi 5 bootloader (EEPROM) configuration, printed by aggrik8s-image eeprom-config.\n" +
      std::string(settings.http_boot
                      ? "# HTTP boot needs a public key in the EEPROM too: apply it with the steps at the end.\n"
                      : "# Apply it on the Pi: `sudo rpi-eeprom-config --edit` and make the file match these lines, or save\n"
                        "# this output as boot.conf and run `sudo rpi-eeprom-config --apply boot.conf` (that replaces the whole\n"
                        "# configuration). It takes effect at the next reboot. Check with `rpi-eeprom-config`.\n") +
      "[all]\n"
      "# Bootloader messages on the debug UART (the Pi 5 default; useful when a boot fails).\n"
      "BOOT_UART=1\n"
      "# Keep the PMIC powered after halt, so the power button restarts the Pi (the Pi 5 default).\n"
      "POWER_OFF_ON_HALT=0\n"
      "# Boot modes, one hex digit each, tried from the RIGHT: 1 = SD card, 6 = NVMe, 4 = USB mass storage,\n"
      "# 2 = network, 7 = HTTP, e = stop, f = restart the list.\n"
      "# Here: " +
      order_text + ".\n" + "BOOT_ORDER=" + hex + "\n";

  bool pcie_probe = settings.pcie_probe.value_or(has(order, PiBootMode::nvme));
  if (pcie_probe) {
    out +=
        "# Look for an NVMe drive on the PCIe bus even when the adapter has no HAT+ identity EEPROM. Most\n"
        "# M.2 adapters and bases are not HAT+; without this the bootloader skips NVMe on them.\n"
        "PCIE_PROBE=1\n";
  }
  if (network) {
    std::string prefix = settings.tftp_prefix.value_or("serial");
    if (prefix == "serial") {
      out +=
          "# Network boot: request boot files under a directory named after the Pi's serial number\n"
          "# (e.g. 1a2b3c4d/config.txt), so one TFTP server can give each Pi its own files.\n"
          "TFTP_PREFIX=0\n";
    } else if (prefix == "mac") {
      out +=
          "# Network boot: request boot files under a directory named after the Pi's MAC address\n"
          "# (e.g. dc-a6-32-01-02-03/config.txt).\n"
          "TFTP_PREFIX=2\n";
    } else {
      if (prefix.size() > max_tftp_prefix_length ||
          std::any_of(prefix.begin(), prefix.end(), [](unsigned char c) { return c <= ' ' || c == '#' || c >= 0x7f; })) {
        throw Error("TFTP prefix '" + prefix + "' must be at most 32 printable characters without spaces or '#'");
      }
      out +=
          "# Network boot: request boot files with this fixed prefix, the same for every Pi\n"
          "# (TFTP_PREFIX=1 selects TFTP_PREFIX_STR; a trailing '/' makes it a directory).\n"
          "TFTP_PREFIX=1\n"
          "TFTP_PREFIX_STR=" +
          prefix + "\n";
    }
    if (settings.tftp_ip) {
      out +=
          "# Network boot: fetch files from this TFTP server, whatever server the DHCP reply names\n"
          "# (for when the DHCP server is a router that cannot point at the TFTP server).\n"
          "TFTP_IP=" +
          *settings.tftp_ip + "\n";
    }
  }
  if (settings.http_boot) out += http_boot_lines(*settings.http_boot);
  return out;
}

}  // namespace aggrik8s::builder
