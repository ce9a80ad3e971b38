// `aggrik8s-image eeprom-config`: the Raspberry Pi 5 bootloader settings for rpi-eeprom-config.
#include <cstdio>

#include "builder/rpi/pi_eeprom_config.hpp"
#include "cli/commands.hpp"
#include "core/error.hpp"

namespace aggrik8s::cli {

Command eeprom_config_command() {
  CommandSpec spec{
      "eeprom-config",
      "",
      "Print the Pi 5 bootloader configuration (boot order, NVMe, network boot) for rpi-eeprom-config",
      "The boot order is stored in each Pi's EEPROM, not on the card, so no image can set it. This prints\n"
      "the configuration to apply once per Pi with `sudo rpi-eeprom-config --edit` (or --apply FILE), each\n"
      "line preceded by a comment saying what it does. See docs/flashing.md.",
      {{"boot-order", 'b', "LIST", "modes to try, first to last: sd, nvme, usb, network, http (default sd,nvme,usb)"},
       {"no-pcie-probe", '\0', "", "leave out PCIE_PROBE=1 (only for NVMe adapters that are HAT+)"},
       {"tftp-prefix", '\0', "serial|mac|STRING", "network boot: directory of each Pi's boot files (default serial)"},
       {"tftp-ip", '\0', "IP", "network boot: TFTP server to use instead of the one DHCP names"}},
      0,
      0};
  return {spec, [](const ParsedArguments& args) {
            builder::PiEepromSettings settings;
            try {
              if (auto order = args.value("boot-order")) settings.boot_order = builder::parse_pi_boot_order(*order);
              if (args.flag("no-pcie-probe")) settings.pcie_probe = false;
              settings.tftp_prefix = args.value("tftp-prefix");
              settings.tftp_ip = args.value("tftp-ip");
              std::fputs(builder::format_pi_eeprom_config(settings).c_str(), stdout);
            } catch (const Error& e) {
              throw UsageError(e.what());
            }
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
