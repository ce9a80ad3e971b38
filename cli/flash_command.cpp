// `aggrik8s-image flash SOURCE DEVICE`: options in, the conversation with the user, the summary out.
// What may be written and how is flash/flash_plan; the write pipeline is flash/image_flasher.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "builder/rpi/boot_partition_customization.hpp"
#include "cli/commands.hpp"
#include "cli/profile_command_support.hpp"
#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "disk/fat_filesystem.hpp"
#include "core/identifiers.hpp"
#include "core/progress.hpp"
#include "flash/attached_disks.hpp"
#include "flash/flash_plan.hpp"

namespace aggrik8s::cli {

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + what + " " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> values(const ParsedArguments& args, const std::string& name) {
  auto it = args.values.find(name);
  return it == args.values.end() ? std::vector<std::string>{} : it->second;
}

int list_disks(bool all) {
  auto lines = flash_candidate_lines(list_attached_disks(), read_system_disk_use(), all);
  for (const auto& line : lines) std::printf("%s\n", line.c_str());
  if (lines.empty()) {
    std::fprintf(stderr, "no removable disks found%s\n", all ? "" : " (--list --force lists every disk)");
  }
  return exit_success;
}

bool confirm(const std::string& question) {
  // A prompt needs someone to answer it: no terminal, no --yes, no write.
  if (::isatty(STDIN_FILENO) == 0) {
    throw Error("refusing to overwrite without confirmation: standard input is not a terminal. Check the device "
                "('aggrik8s-image flash --list') and pass --yes.");
  }
  std::fprintf(stderr, "%s\nType 'yes' to continue: ", question.c_str());
  std::fflush(stderr);
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "yes" || answer == "y";
}

builder::BootPartitionCustomization customization_from(const ParsedArguments& args) {
  builder::BootPartitionCustomization customization;
  if (auto hostname = args.value("hostname")) {
    if (!is_dns_label(*hostname)) {
      throw UsageError("--hostname must be 1-63 lowercase letters, digits and '-' (not first or last), got '" +
                       *hostname + "'");
    }
    customization.hostname = *hostname;
  }
  for (const auto& path : values(args, "ssh-key")) {
    std::istringstream lines(read_text(path, "SSH public key file"));
    std::string line;
    std::size_t before = customization.ssh_keys.size();
    for (std::size_t number = 1; std::getline(lines, line); ++number) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty() || line.starts_with("#")) continue;
      if (line.find("PRIVATE KEY") != std::string::npos) {
        throw UsageError(path + " is a private key; --ssh-key takes the public key (the .pub file)");
      }
      // Each line goes into authorized_keys and, for a firstrun.sh image, into a here-document of a
      // script run as root at first boot: only key lines, nothing that could end the document.
      if (!is_ssh_public_key_line(line)) {
        throw UsageError(path + ":" + std::to_string(number) + ": not an SSH public key line (TYPE BASE64 [comment], "
                         "TYPE ssh-*, ecdsa-* or sk-*)");
      }
      customization.ssh_keys.push_back(line);
    }
    if (customization.ssh_keys.size() == before) throw UsageError(path + " holds no SSH public key");
  }
  for (const auto& spec : values(args, "file")) {
    std::size_t colon = spec.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size()) {
      throw UsageError("--file takes SRC:DEST (a local file and its path on the boot partition), got '" + spec + "'");
    }
    std::string destination = spec.substr(colon + 1);
    while (destination.starts_with("/")) destination.erase(0, 1);
    // Checked before anything is written: a destination the boot partition cannot hold would
    // otherwise fail only once the image is on the card.
    bool named = !destination.empty() && !destination.ends_with("/");
    for (std::size_t start = 0; named && start <= destination.size();) {
      std::size_t slash = destination.find('/', start);
      if (slash == std::string::npos) slash = destination.size();
      std::string_view part(destination.data() + start, slash - start);
      if (part.empty() || part == "." || part == "..") named = false;
      start = slash + 1;
    }
    if (!named) {
      throw UsageError("--file " + spec + ": DEST must name a file on the boot partition, such as /config/extra.txt "
                       "(no '.' or '..' parts, not a directory)");
    }
    for (std::size_t start = 0; start <= destination.size();) {
      std::size_t slash = destination.find('/', start);
      if (slash == std::string::npos) slash = destination.size();
      try {
        validate_fat_long_name(std::string_view(destination).substr(start, slash - start), "--file " + spec);
      } catch (const Error& e) {
        throw UsageError(e.what());  // before the card is touched, not after the image is on it
      }
      start = slash + 1;
    }
    customization.files.emplace_back(destination, read_text(spec.substr(0, colon), "file"));
  }
  return customization;
}

}  // namespace

Command flash_command() {
  std::vector<OptionSpec> options{
      {"yes", 'y', "", "do not ask for confirmation before overwriting a device"},
      {"force", '\0', "", "allow non-removable disks (and list them with --list)"},
      {"no-verify", '\0', "", "skip reading back what was written"},
      {"list", '\0', "", "list candidate removable devices"},
      {"bmap", '\0', "FILE|URL", "block map to use (default: SOURCE.bmap or IMAGE.bmap beside SOURCE, if present)"},
      {"no-bmap", '\0', "", "ignore any bmap; find the data from the image itself"},
      {"sha256", '\0', "HEX", "the sha256 SOURCE (as stored, e.g. compressed) must have; checked before writing"},
      {"hostname", '\0', "NAME", "set the node's hostname in the boot partition's first-boot settings"},
      {"ssh-key", '\0', "FILE", "add the SSH public keys in FILE to the first-boot users (repeatable)", true},
      {"file", '\0', "SRC:DEST", "copy local file SRC to DEST on the boot partition (repeatable)", true},
  };
  for (auto& o : fetch_option_specs()) {
    if (o.name != "jobs") options.push_back(o);
  }
  CommandSpec spec{
      "flash",
      "SOURCE DEVICE",
      "Write an image to an SD card or NVMe drive and verify it",
      "SOURCE: an image (.img), compressed (.img.zst, .img.xz, .img.gz, .img.bz2, .zip), or an http(s):// or\n"
      "file:// URL (downloaded through the fetch cache; pin it with --sha256); a file, not a pipe.\n"
      "DEVICE: a whole disk (/dev/sdX, /dev/mmcblkN, /dev/nvmeXnY, /dev/loopN) or a regular file (made a\n"
      "sparse copy of the image).\n"
      "Only the blocks that hold data are written (from the bmap when there is one). The first MiB\n"
      "(partition table, boot sector) is written last, after everything else was flushed and verified,\n"
      "so an interrupted flash never leaves a card that boots half an image. Mounted disks, the disk\n"
      "holding / and disks whose logical sectors are not 512 bytes (4Kn) are always refused;\n"
      "non-removable disks need --force. See docs/flashing.md.",
      options,
      0,
      2};
  return {spec, [](const ParsedArguments& args) {
            if (args.flag("list")) {
              if (!args.positional.empty()) throw UsageError("--list takes no arguments");
              return list_disks(args.flag("force"));
            }
            if (args.positional.size() != 2) throw UsageError("expected SOURCE and DEVICE");
            if (args.flag("bmap") && args.flag("no-bmap")) throw UsageError("--bmap and --no-bmap contradict each other");
            FlashRequest request;
            request.source = args.positional[0];
            request.target = args.positional[1];
            request.customization = customization_from(args);
            if (auto hex = args.value("sha256")) {
              request.sha256 = Sha256Digest::parse(*hex);
              if (!request.sha256) throw UsageError("--sha256 must be 64 hexadecimal characters, got '" + *hex + "'");
            }
            request.force = args.flag("force");
            request.verify = !args.flag("no-verify");
            request.bmap = args.value("bmap");
            request.look_for_bmap = !args.flag("no-bmap");
            request.fetch = fetch_options_from(args);
            // Test-only: slows the writers so the test suite can kill a flash half-way (tests/integration).
            request.test_delay_per_buffer = parse_flash_test_delay(std::getenv("AGGRIK8S_FLASH_TEST_DELAY_MS"));

            FlashPlan plan = plan_flash(std::move(request));
            if (needs_overwrite_confirmation(plan.target, args.flag("yes")) &&
                !confirm(overwrite_question(plan.target, plan.request.source))) {
              std::fprintf(stderr, "not confirmed; nothing was written\n");
              return exit_failure;
            }
            FlashOutcome outcome = write_flash_plan(plan);
            const FlashResult& result = outcome.result;
            const std::string& source_text = plan.request.source;
            const fs::path& target = plan.target.path;

            auto rate = [](std::uint64_t bytes, double seconds) {
              char text[32];
              std::snprintf(text, sizeof text, "%.0f MB/s", seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0.0);
              return std::string(text);
            };
            std::printf("flashed %s to %s: wrote %s of a %s image in %s (%s)%s\n", source_text.c_str(),
                        target.string().c_str(), format_byte_size(result.bytes_written).c_str(),
                        format_byte_size(result.image_size).c_str(), format_duration(result.write_seconds).c_str(),
                        rate(result.bytes_written, result.write_seconds).c_str(),
                        result.used_bmap ? " using the bmap" : "");
            if (result.bytes_verified > 0) {
              // The read-back runs while later data is written; what it costs is the wait at the end.
              std::printf("verified %s read back from the device, %s after the last write\n",
                          format_byte_size(result.bytes_verified).c_str(), format_duration(result.verify_seconds).c_str());
            } else {
              std::printf("not verified (--no-verify)\n");
            }
            if (!outcome.boot_files.empty()) {
              std::string names;
              for (const auto& [path, content] : outcome.boot_files) names += (names.empty() ? "" : ", ") + path;
              std::printf("boot partition: wrote %s; read back and checked\n", names.c_str());
            }
            std::printf("total %s (%s overall)\n", format_duration(result.total_seconds).c_str(),
                        rate(result.bytes_written, result.total_seconds).c_str());
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
