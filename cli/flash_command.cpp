// `aggrik8s-image flash SOURCE DEVICE`: the safety checks and the conversation with the user. The
// write pipeline itself is builder/image_flasher; which disks may be written is builder/attached_disks.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "flash/attached_disks.hpp"
#include "disk/bmap.hpp"
#include "builder/rpi/boot_partition_customization.hpp"
#include "flash/image_flasher.hpp"
#include "disk/image_stream.hpp"
#include "cli/commands.hpp"
#include "cli/profile_command_support.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/identifiers.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"

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

bool is_url(const std::string& text) {
  return text.starts_with("http://") || text.starts_with("https://") || text.starts_with("file://");
}

std::vector<std::string> values(const ParsedArguments& args, const std::string& name) {
  auto it = args.values.find(name);
  return it == args.values.end() ? std::vector<std::string>{} : it->second;
}

struct SystemState {
  std::vector<MountEntry> mounts;
  std::vector<std::string> swaps;
  std::vector<std::string> system_disks;
};

SystemState read_system_state() {
  SystemState state;
  state.mounts = parse_mountinfo(read_text("/proc/self/mountinfo", "mount table"));
  std::ifstream swaps("/proc/swaps");
  if (swaps) {
    std::ostringstream text;
    text << swaps.rdbuf();
    state.swaps = parse_swaps(text.str());
  }
  state.system_disks = disks_under_mount(state.mounts, "/");
  return state;
}

int list_disks(bool all) {
  SystemState state = read_system_state();
  int shown = 0;
  for (const auto& disk : list_attached_disks()) {
    if (!all && !disk.is_removable()) continue;
    auto uses = uses_of_disk(disk, state.mounts, state.swaps);
    std::string line = describe_attached_disk(disk, uses);
    if (std::find(state.system_disks.begin(), state.system_disks.end(), disk.name) != state.system_disks.end()) {
      line += ", holds /";
    }
    std::printf("%s\n", line.c_str());
    ++shown;
  }
  if (shown == 0) {
    std::fprintf(stderr, "no removable disks found%s\n", all ? "" : " (--list --force lists every disk)");
  }
  return exit_success;
}

// Everything that makes a block device unsafe to overwrite, as one Error. Regular files pass.
AttachedDisk check_block_device_target(const fs::path& device, const struct stat& info, bool force) {
  DeviceNumber number{major(info.st_rdev), minor(info.st_rdev)};
  auto resolved = resolve_block_device(number);
  if (!resolved) throw Error(device.string() + ": not found in /sys/dev/block; is it a block device of this machine?");
  if (resolved->partition_name) {
    throw Error(device.string() + " is partition " + *resolved->partition_name + " of /dev/" + resolved->disk_name +
                "; flash the whole disk (/dev/" + resolved->disk_name + ")");
  }
  AttachedDisk disk = read_attached_disk(resolved->disk_name);
  SystemState state = read_system_state();
  auto assessment = assess_flash_target(disk, uses_of_disk(disk, state.mounts, state.swaps), state.system_disks);
  if (!assessment.refusals.empty()) {
    std::string text = "refusing to write " + device.string() + ":";
    for (const auto& reason : assessment.refusals) text += "\n  " + reason;
    throw Error(text);
  }
  if (!assessment.allowed(force)) throw Error("refusing to write: " + assessment.needs_force);
  return disk;
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

std::optional<fs::path> find_bmap_beside(const fs::path& image) {
  // As bmaptool looks: image.img.xz.bmap, then image.img.bmap, then image.bmap.
  std::string name = image.string();
  std::vector<std::string> candidates{name + ".bmap"};
  for (const char* suffix : {".xz", ".zst", ".zstd", ".gz", ".bz2", ".zip"}) {
    if (name.ends_with(suffix)) {
      name.resize(name.size() - std::string_view(suffix).size());
      candidates.push_back(name + ".bmap");
      break;
    }
  }
  if (name.ends_with(".img")) candidates.push_back(name.substr(0, name.size() - 4) + ".bmap");
  for (const auto& candidate : candidates) {
    std::error_code error;
    if (fs::is_regular_file(candidate, error)) return candidate;
  }
  return std::nullopt;
}

std::chrono::milliseconds test_delay_from_environment() {
  // Test-only: slows the writers so the test suite can kill a flash half-way (tests/integration).
  const char* text = std::getenv("AGGRIK8S_FLASH_TEST_DELAY_MS");
  if (text == nullptr) return std::chrono::milliseconds(0);
  long value = 0;
  auto [end, error] = std::from_chars(text, text + std::string_view(text).size(), value);
  if (error != std::errc() || value < 0) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(value);
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
    while (std::getline(lines, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty() || line.starts_with("#")) continue;
      if (line.find("PRIVATE KEY") != std::string::npos) {
        throw UsageError(path + " is a private key; --ssh-key takes the public key (the .pub file)");
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
      "file:// URL (downloaded through the fetch cache; pin it with --sha256). DEVICE: a whole disk\n"
      "(/dev/sdX, /dev/mmcblkN, /dev/nvmeXnY, /dev/loopN) or a regular file (made a sparse copy of the image).\n"
      "Only the blocks that hold data are written (from the bmap when there is one). The first MiB\n"
      "(partition table, boot sector) is written last, after everything else was flushed and verified,\n"
      "so an interrupted flash never leaves a card that boots half an image. Mounted disks and the\n"
      "disk holding / are always refused; non-removable disks need --force. See docs/flashing.md.",
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
            const std::string source_text = args.positional[0];
            const fs::path target = args.positional[1];
            builder::BootPartitionCustomization customization = customization_from(args);

            std::optional<Sha256Digest> pinned;
            if (auto hex = args.value("sha256")) {
              pinned = Sha256Digest::parse(*hex);
              if (!pinned) throw UsageError("--sha256 must be 64 hexadecimal characters, got '" + *hex + "'");
            }

            // The target first: refusing costs nothing, a download first would waste minutes.
            struct stat target_info {};
            bool target_exists = ::stat(target.c_str(), &target_info) == 0;
            bool block_device = target_exists && S_ISBLK(target_info.st_mode);
            std::optional<AttachedDisk> disk;
            if (block_device) {
              disk = check_block_device_target(target, target_info, args.flag("force"));
            } else if (target_exists && !S_ISREG(target_info.st_mode)) {
              throw Error(target.string() + " is neither a block device nor a regular file");
            } else if (!target_exists && target.lexically_normal().string().starts_with("/dev/")) {
              throw Error(target.string() + ": no such device ('aggrik8s-image flash --list' shows the candidates)");
            }

            // The source: a local file as is; a URL (or a pinned local file) through the fetch cache.
            std::optional<ArtifactFetcher> fetcher;
            auto fetch = [&](const std::string& location, std::optional<Sha256Digest> sha256) {
              if (!fetcher) fetcher.emplace(fetch_options_from(args));
              ArtifactSource source;
              source.location = is_url(location) ? location : fs::absolute(location).string();
              source.sha256 = sha256;
              return fetcher->fetch(source);
            };
            fs::path image = source_text;
            if (is_url(source_text) || pinned) {
              try {
                image = fetch(source_text, pinned).path;
              } catch (const Error& e) {
                if (std::string(e.what()).find("sha256 mismatch") != std::string::npos) {
                  throw Error(std::string("source checksum mismatch: ") + e.what() + "; nothing was written");
                }
                throw;
              }
            }
            struct stat image_info {};
            if (::stat(image.c_str(), &image_info) != 0) throw Error(source_text + ": no such file");
            if (target_exists && image_info.st_dev == target_info.st_dev && image_info.st_ino == target_info.st_ino) {
              throw Error(target.string() + " is the source image itself");
            }

            std::optional<Bmap> bmap;
            if (auto bmap_location = args.value("bmap")) {
              bmap = read_bmap_file(is_url(*bmap_location) ? fetch(*bmap_location, std::nullopt).path : fs::path(*bmap_location));
            } else if (!args.flag("no-bmap")) {
              if (is_url(source_text)) {
                try {
                  bmap = read_bmap_file(fetch(source_text + ".bmap", std::nullopt).path);
                } catch (const Error& e) {
                  log::debug("no bmap beside ", source_text, ": ", e.what());
                }
              } else if (auto beside = find_bmap_beside(source_text)) {
                bmap = read_bmap_file(*beside);
                log::info("using the block map ", beside->string());
              }
            }

            auto stream = open_image_stream(image);
            if (block_device && !args.flag("yes")) {
              std::string question = "About to overwrite " + target.string() + " (" + format_byte_size(disk->size_bytes) +
                                     (disk->transport.empty() ? "" : ", " + disk->transport) +
                                     (disk->model.empty() ? "" : ", " + disk->model) + ") with " + source_text +
                                     ".\nEverything on it will be lost.";
              if (!confirm(question)) {
                std::fprintf(stderr, "not confirmed; nothing was written\n");
                return exit_failure;
              }
            }

            FlashOptions flash;
            flash.verify = !args.flag("no-verify");
            flash.test_delay_per_buffer = test_delay_from_environment();
            builder::BootPartitionFiles written_files;
            if (!customization.empty()) {
              flash.customize = [&](BlockDevice& staged) {
                written_files = builder::apply_boot_partition_customization(staged, customization);
              };
              flash.check_customization = [&](BlockDevice& written) {
                builder::check_boot_partition_files(written, written_files);
              };
            }
            FlashResult result = flash_image(*stream, bmap ? &*bmap : nullptr, target, flash);

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
            if (!written_files.empty()) {
              std::string names;
              for (const auto& [path, content] : written_files) names += (names.empty() ? "" : ", ") + path;
              std::printf("boot partition: wrote %s; read back and checked\n", names.c_str());
            }
            std::printf("total %s (%s overall)\n", format_duration(result.total_seconds).c_str(),
                        rate(result.bytes_written, result.total_seconds).c_str());
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
