#include "netboot/service/ipxe_kernel_line.hpp"

#include <vector>

#include "core/error.hpp"
#include "core/kernel_command_line.hpp"
#include "disk/linux_kernel_image.hpp"
#include "netboot/http/http_request_target.hpp"
#include "netboot/service/talos_wipe_cycle.hpp"

namespace aggrik8s::netboot {
namespace fs = std::filesystem;

namespace {

std::string substitute(std::string args, std::string_view base_url, const InventoryNode* node, const NodeFacts& facts) {
  auto replace = [&](const std::string& key, const std::string& value) {
    for (std::size_t at = args.find(key); at != std::string::npos; at = args.find(key, at + value.size())) {
      args.replace(at, key.size(), value);
    }
  };
  replace("{base_url}", std::string(base_url));
  replace("{node}", node != nullptr ? node->name : "");
  replace("{mac}", facts.mac.value_or(""));
  replace("{uuid}", facts.uuid.value_or(""));
  return args;
}

// As long as any MAC and UUID a request can carry once normalised (normalize_mac, normalize_uuid);
// 'x' so that a message quoting a lost talos.config=... shows which part stood for the machine.
constexpr std::string_view longest_mac = "xx:xx:xx:xx:xx:xx";
constexpr std::string_view longest_uuid = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

// The requests that give `node` its longest lines. A node matched by MAC always has that MAC; one
// without match.mac may be asked for without any MAC (iPXE's chain script sends one, a hand-written
// script need not), and then its URLs carry the UUID, 36 characters instead of 17.
std::vector<NodeFacts> longest_requests(const InventoryNode* node) {
  NodeFacts facts;
  bool has_mac = node != nullptr && node->match.mac;
  facts.mac = has_mac ? *node->match.mac : std::string(longest_mac);
  facts.uuid = node != nullptr && node->match.uuid ? *node->match.uuid : std::string(longest_uuid);
  std::vector<NodeFacts> out{facts};
  if (!has_mac) {
    facts.mac.reset();
    out.push_back(facts);
  }
  return out;
}

}  // namespace

std::optional<IpxeKernelBoot> ipxe_kernel_boot(const BootProfile& profile, const InventoryNode* node,
                                               const NodeFacts& facts, std::string_view base_url) {
  std::string assets = std::string(base_url) + "/assets/" + percent_encode_path(profile.name) + "/";
  IpxeKernelBoot boot;
  // The node's id in URLs it is sent to: the MAC in iPXE's hexhyp form (no ':' to escape), else the UUID.
  std::string id = facts.uuid.value_or("");
  if (facts.mac) {
    id = *facts.mac;
    for (auto& c : id) c = c == ':' ? '-' : c;
  }
  if (const auto* talos = std::get_if<TalosBoot>(&profile.target)) {
    boot.kernel_url = assets + percent_encode_path(talos->kernel.filename().string());
    std::string name = talos->initramfs.filename().string();
    boot.initrds.push_back({name, assets + percent_encode_path(name)});
    boot.arguments = "talos.platform=metal slab_nomerge pti=on";
    if (!talos->arguments.empty()) boot.arguments += " " + substitute(talos->arguments, base_url, node, facts);
    // Without a config Talos boots into maintenance mode: what an unknown machine should get.
    if (node != nullptr && node->talos_config && !id.empty()) {
      boot.arguments += " talos.config=" + std::string(base_url) + "/talos/" + percent_encode_path(id) + "/config.yaml";
    }
    return boot;
  }
  if (const auto* kernel = std::get_if<KernelBoot>(&profile.target)) {
    boot.kernel_url = assets + percent_encode_path(kernel->kernel.filename().string());
    for (const auto& initrd : kernel->initrds) {
      std::string name = initrd.filename().string();
      boot.initrds.push_back({name, assets + percent_encode_path(name)});
    }
    boot.arguments = substitute(kernel->arguments, base_url, node, facts);
    if (node != nullptr && node->user_data && !id.empty()) {
      if (!boot.arguments.empty()) boot.arguments += " ";
      boot.arguments += "ds=nocloud;s=" + std::string(base_url) + "/cloud-init/" + percent_encode_path(id) + "/";
    }
    return boot;
  }
  return std::nullopt;
}

const fs::path* profile_kernel_file(const BootProfile& profile) {
  if (const auto* talos = std::get_if<TalosBoot>(&profile.target)) return &talos->kernel;
  if (const auto* kernel = std::get_if<KernelBoot>(&profile.target)) return &kernel->kernel;
  return nullptr;
}

std::map<fs::path, KernelFile> read_profile_kernels(const NodeInventory& inventory, Diagnostics& diagnostics) {
  std::map<fs::path, KernelFile> kernels;
  for (const auto& [name, profile] : inventory.profiles) {
    const fs::path* file = profile_kernel_file(profile);
    if (file == nullptr || kernels.contains(*file)) continue;
    try {
      kernels.emplace(*file, builder::read_kernel_file(*file, file->string()));
    } catch (const Error& e) {
      KernelFile assumed = assumed_kernel(file->string(), "assumed: COMMAND_LINE_SIZE 2048 of x86-64 and arm64 kernels, "
                                                          "the file's header was not read");
      std::size_t assumed_bytes = assumed.limit.max_bytes;
      kernels.emplace(*file, std::move(assumed));
      diagnostics.warning(profile.where, "profiles." + name + ": " + e.what() + "; its iPXE kernel command lines are "
                                         "checked against " + std::to_string(assumed_bytes) +
                                         " bytes, what x86-64 and arm64 kernels keep");
    }
  }
  return kernels;
}

void check_ipxe_kernel_lines(const NodeInventory& inventory, std::string_view base_url,
                             const std::map<fs::path, KernelFile>& kernels, Diagnostics& diagnostics) {
  auto check = [&](const BootProfile& profile, const InventoryNode* node, const SourceLocation& where,
                   const std::string& subject) {
    if (profile.mode == BootMode::local_disk) return;
    const fs::path* file = profile_kernel_file(profile);
    if (file == nullptr) return;
    auto kernel = kernels.find(*file);
    if (kernel == kernels.end()) return;
    std::string args_key = std::holds_alternative<TalosBoot>(profile.target) ? ".talos.args" : ".kernel.args";
    std::string remedy = "shorten profiles." + profile.name + args_key + " or http.base_url";
    // UEFI first: its prefix and initrd= make it the longer line whenever the profile has an initrd.
    for (IpxePlatform platform : {IpxePlatform::efi, IpxePlatform::pcbios}) {
      // iPXE names the image after the last segment of the kernel's URL, decoded: the file name.
      auto loader = platform == IpxePlatform::efi ? ipxe_efi_loader(file->filename().string())
                                                  : ipxe_bios_loader();
      std::vector<std::string> longest;
      std::size_t longest_bytes = 0;
      for (const auto& facts : longest_requests(node)) {
        auto boot = ipxe_kernel_boot(profile, node, facts, base_url);
        if (!boot) return;
        // A rebuild-on-reboot Talos node's wipe boot carries one word more than its normal boot.
        const auto* talos = std::get_if<TalosBoot>(&profile.target);
        if (talos != nullptr && profile.mode == BootMode::ephemeral) {
          boot->arguments += " " + talos_wipe_kernel_argument(talos->wipe);
        }
        auto args = split_kernel_args(ipxe_kernel_arguments(*boot, platform));
        std::size_t bytes = kernel_command_line_bytes(args, loader);
        if (bytes >= longest_bytes) {
          longest = std::move(args);
          longest_bytes = bytes;
        }
      }
      if (auto problem = check_kernel_command_line(subject, longest, loader, kernel->second.limit,
                                                            kernel->second.where, remedy)) {
        diagnostics.error(where, *problem);
        return;
      }
    }
  };
  for (const auto& node : inventory.nodes) {
    if (const BootProfile* profile = inventory.profile_of(node)) {
      check(*profile, &node, node.where, "node '" + node.name + "': the kernel command line of its iPXE script");
    }
  }
  if (const BootProfile* profile = inventory.unknown_node_profile()) {
    check(*profile, nullptr, profile->where,
          "unknown machines (unknown_nodes.profile '" + profile->name + "'): the kernel command line of their iPXE script");
  }
}

}  // namespace aggrik8s::netboot
