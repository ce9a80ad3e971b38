#include "builder/rpi/pi_eeprom_config.hpp"

#include <algorithm>
#include <cstdio>

#include "core/error.hpp"
#include "core/identifiers.hpp"

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

}  // namespace

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
  const std::vector<PiBootMode> order =
      settings.boot_order.empty() ? parse_pi_boot_order("sd,nvme,usb") : settings.boot_order;
  bool network = has(order, PiBootMode::network) || has(order, PiBootMode::http);
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
      "# Raspberry Pi 5 bootloader (EEPROM) configuration, printed by aggrik8s-image eeprom-config.\n"
      "# Apply it on the Pi: `sudo rpi-eeprom-config --edit` and make the file match these lines, or save\n"
      "# this output as boot.conf and run `sudo rpi-eeprom-config --apply boot.conf` (that replaces the whole\n"
      "# configuration). It takes effect at the next reboot. Check with `rpi-eeprom-config`.\n"
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
  return out;
}

}  // namespace aggrik8s::builder
