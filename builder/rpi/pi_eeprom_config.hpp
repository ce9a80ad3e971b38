#pragma once
// The Raspberry Pi 5 bootloader settings a cluster of Pis needs (boot order, NVMe probing, network
// boot), as text for `rpi-eeprom-config`. The boot order lives in the Pi's EEPROM, not on the card,
// so no image can carry it: the tool prints it and the user applies it once per Pi. Pure code.
#include <cstdint>
#include <optional>
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

struct PiEepromSettings {
  // Empty: the Pi 5 default order, sd,nvme,usb.
  std::vector<PiBootMode> boot_order;
  // nullopt: on when NVMe is in the boot order.
  std::optional<bool> pcie_probe;
  // "serial" (default), "mac", or a directory prefix string (TFTP_PREFIX=1 + TFTP_PREFIX_STR).
  std::optional<std::string> tftp_prefix;
  std::optional<std::string> tftp_ip;
};

// The configuration file, each setting preceded by a comment saying what it does. Throws Error for
// network settings without network boot, a bad TFTP_IP, or a prefix string the bootloader rejects.
std::string format_pi_eeprom_config(const PiEepromSettings& settings);

}  // namespace aggrik8s::builder
