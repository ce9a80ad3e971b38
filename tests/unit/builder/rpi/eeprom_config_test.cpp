// Boot order -> BOOT_ORDER and the commented rpi-eeprom-config text.
#include <catch2/catch.hpp>

#include <sstream>

#include "builder/rpi/pi_eeprom_config.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

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
  std::istringstream lines(text);
  std::string line, previous;
  int settings_seen = 0;
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] != '#' && line[0] != '[') {
      ++settings_seen;
      INFO(line);
      CHECK(previous.starts_with("#"));
    }
    previous = line;
  }
  CHECK(settings_seen == 6);  // BOOT_UART, POWER_OFF_ON_HALT, BOOT_ORDER, PCIE_PROBE, TFTP_PREFIX, TFTP_IP
}

TEST_CASE("eeprom: PCIE_PROBE follows NVMe; TFTP settings need network boot and valid values", "[eeprom]") {
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
