#include "builder/talos/talos_build_checks.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <span>

#include "builder/talos/talos_boot_files.hpp"
#include "builder/talos/iso_variant.hpp"
#include "builder/talos/read_only_file_mapping.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/secret.hpp"
#include "disk/linux_kernel_image.hpp"

namespace aggrik8s::builder {

std::vector<TalosNodeConfig> prepare_talos_node_configs(const Profile& profile,
                                                        const std::vector<const TalosNode*>& nodes,
                                                        Diagnostics& diagnostics) {
  std::map<std::string, std::optional<TalosMachineConfig>> loaded;  // by secret reference
  std::vector<TalosNodeConfig> configs;
  for (const TalosNode* node : nodes) {
    const SecretReference& reference = node->config ? *node->config : *profile.talos.config;
    std::string key = reference.describe();
    if (!loaded.contains(key)) {
      std::string name = reference.kind == SecretReference::Kind::file ? reference.name : "env:" + reference.name;
      Secret secret = load_secret(reference);
      auto config = parse_talos_machine_config(secret.reveal(), name, diagnostics);
      if (config) {
        Diagnostics checks;
        validate_talos_machine_config(*config, "", false, checks);
        diagnostics.append(checks);
        if (checks.has_errors()) config.reset();
      }
      loaded[key] = std::move(config);
    }
    const auto& base = loaded[key];
    if (!base) continue;
    auto config = talos_config_for_node(*base, *node, diagnostics);
    if (!config) continue;
    TalosNodeConfig prepared;
    prepared.node = node;
    prepared.yaml = config->to_yaml();
    prepared.fingerprint = Sha256::of(prepared.yaml);
    prepared.config = std::move(*config);
    configs.push_back(std::move(prepared));
  }
  return configs;
}

std::string talos_profile_machine_type(const Profile& profile) {
  if (!profile.talos.config) return "";
  try {
    const SecretReference& reference = *profile.talos.config;
    Diagnostics ignored;
    auto config = parse_talos_machine_config(load_secret(reference).reveal(), reference.name, ignored);
    return config ? config->machine_type() : "";
  } catch (const Error&) {
    return "";
  }
}

std::vector<std::string> talos_netboot_command_line(const TalosVersion& version, const TalosNode& node,
                                                    const std::string& netboot_url) {
  std::string base = netboot_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string url = substitute_talos_url_variables(base + "/" + node.name + "/config.yaml", node.name, node.uuid,
                                                   node.mac, node.hostname);
  std::vector<std::string> args = append_kernel_args(talos_default_kernel_args(version), node.kernel_args);
  args.push_back("talos.config=" + url);
  return args;
}

KernelFile assumed_talos_kernel(const std::string& where) {
  return assumed_kernel(where, "COMMAND_LINE_SIZE 2048 of x86-64 and arm64 kernels; validate reads no download, build reads the kernel's own");
}

KernelFile read_talos_iso_kernel(const std::filesystem::path& iso, const std::string& where) {
  // The limit is in the kernel's first 4 KiB (kernel_command_line_limit): those are read where the
  // ISO's directory records put the kernel, not the whole 8-15 MiB file through libarchive (~40 ms of
  // every build's start). libarchive stays the fallback for an image our ISO 9660 reader does not take.
  std::vector<std::uint8_t> head;
  try {
    ReadOnlyFileMapping image(iso, ReadOnlyFileMapping::Populate::on_demand);
    auto kernel = iso_file_bytes(image.bytes(), locate_iso_files(image.bytes(), {"boot/vmlinuz"}).front());
    kernel = kernel.first(std::min<std::size_t>(kernel.size(), 4096));
    head.assign(kernel.begin(), kernel.end());
  } catch (const Error&) {
    head = read_iso_file(iso, "boot/vmlinuz");
  }
  try {
    return {where, kernel_command_line_limit(head)};
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
}

void check_talos_netboot_command_line(const std::vector<std::string>& args, const TalosNode& node,
                                      const KernelFile& kernel, Diagnostics& diagnostics) {
  // boot.ipxe's `kernel vmlinuz ARGS initrd=initramfs.xz` (builder/talos/talos_boot_files.cpp): ipxe.efi adds
  // the image name in front, the BIOS builds keep one byte fewer; the stricter one decides.
  std::vector<std::string> line = args;
  line.push_back("initrd=initramfs.xz");
  for (const auto& loader : {ipxe_efi_loader("vmlinuz"), ipxe_bios_loader()}) {
    if (auto problem = check_kernel_command_line("netboot: kernel command line for node " + node.name, line, loader,
                                                 kernel.limit, kernel.where)) {
      diagnostics.error({node.name + "/kernel_args", 0, 0}, *problem);
      return;
    }
  }
}

void check_talos_iso_command_lines(const std::string& grub_cfg, const KernelFile& grub_kernel, const TalosIsoUkis& ukis,
                                   const std::vector<std::string>& add_args, const std::string& subject,
                                   const SourceLocation& where, Diagnostics& diagnostics) {
  EditedGrubConfig edited = edit_grub_config(grub_cfg, {add_args, {}});
  for (std::size_t i = 0; i < edited.command_lines.size(); ++i) {
    std::string entry = subject + " (GRUB menu entry " + std::to_string(i + 1) + ")";
    if (auto problem = check_kernel_command_line(entry, split_kernel_args(edited.command_lines[i]), grub_loader("/boot/vmlinuz"),
                                                 grub_kernel.limit, grub_kernel.where)) {
      diagnostics.error(where, *problem);
    }
  }
  for (const auto& line : ukis.command_lines_and_limits_with(add_args)) {
    if (auto problem = check_kernel_command_line(subject + " (UKI)", split_kernel_args(line.text), uki_loader(), line.limit,
                                                 line.location + " (.linux)")) {
      diagnostics.error(where, *problem);
    }
  }
}

std::vector<std::string> talos_shared_kernel_args(const std::vector<const TalosNode*>& nodes) {
  std::vector<std::string> common;
  if (nodes.empty()) return common;
  for (const auto& arg : nodes.front()->kernel_args) {
    bool everywhere = std::all_of(nodes.begin(), nodes.end(), [&](const TalosNode* n) {
      return std::find(n->kernel_args.begin(), n->kernel_args.end(), arg) != n->kernel_args.end();
    });
    if (everywhere) common.push_back(arg);
  }
  return common;
}

namespace {

// A `path:` input, or a file:// URL (read in place as build reads it): what validate can look into.
std::optional<std::filesystem::path> local_file(const std::optional<ArtifactSource>& source) {
  if (!source) return std::nullopt;
  std::optional<std::filesystem::path> local = local_artifact_path(*source);
  if (!local) return std::nullopt;
  std::filesystem::path path = *local;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;  // the profile reader reports it
  return path;
}

// What validate can read of a local ISO: the same inputs build's checks use.
struct LocalTalosIso {
  std::string grub_cfg;
  KernelFile kernel;
  TalosIsoUkis ukis;
  std::optional<TalosVersion> version;
};

LocalTalosIso read_local_iso(const std::filesystem::path& iso, const std::string& location) {
  LocalTalosIso out;
  std::vector<std::string> files = list_iso_files(iso);
  for (const char* required : {"boot/vmlinuz", "boot/grub/grub.cfg"}) {
    if (std::find(files.begin(), files.end(), required) == files.end()) {
      throw Error(location + ": no /" + required + " in the ISO: this is not a Talos ISO");
    }
  }
  out.grub_cfg = read_iso_text_file(iso, "boot/grub/grub.cfg");
  out.kernel = read_talos_iso_kernel(iso, location + ":/boot/vmlinuz");
  out.ukis = TalosIsoUkis::read(iso, files);
  out.version = TalosVersion::from_volume_id(read_iso_volume_info(iso).volume_id);
  return out;
}

}  // namespace

void check_talos_profile(const Profile& profile, Diagnostics& diagnostics) {
  std::vector<const TalosNode*> nodes;
  for (const auto& node : profile.talos_nodes) nodes.push_back(&node);
  try {
    prepare_talos_node_configs(profile, nodes, diagnostics);
  } catch (const Error& e) {
    // A secret that went away since the profile was read; the message names it, never its value.
    diagnostics.error({profile.file.string(), 0, 0}, e.what());
  }
  const auto& outputs = profile.talos.outputs;
  auto wants = [&](const char* output) { return std::find(outputs.begin(), outputs.end(), output) != outputs.end(); };
  const SourceLocation profile_where{profile.file.string(), 0, 0};

  std::optional<TalosVersion> version;
  if (profile.talos.version) version = TalosVersion::parse(*profile.talos.version);  // the reader reports a bad one
  std::optional<LocalTalosIso> iso;
  std::optional<KernelFile> netboot_kernel;
  try {
    if (auto path = local_file(profile.talos.iso)) {
      iso = read_local_iso(*path, profile.talos.iso->location);
      if (!version) version = iso->version;
    }
    if (auto path = local_file(profile.talos.kernel); path && wants("netboot")) {
      netboot_kernel = read_kernel_file(*path, profile.talos.kernel->location);
    }
  } catch (const Error& e) {
    diagnostics.error(profile_where, e.what());
    return;
  }
  if (!netboot_kernel) {
    if (iso && !(profile.talos.kernel && profile.talos.initramfs)) netboot_kernel = iso->kernel;
    else netboot_kernel = assumed_talos_kernel(profile.talos.kernel ? profile.talos.kernel->location : "the Talos kernel");
  }

  for (const TalosNode* node : nodes) {
    if (wants("netboot") && profile.talos.netboot_url && version) {
      try {
        check_talos_netboot_command_line(talos_netboot_command_line(*version, *node, *profile.talos.netboot_url), *node,
                                         *netboot_kernel, diagnostics);
      } catch (const Error& e) {
        diagnostics.error(profile_where, e.what());  // the message names node/field
      }
    }
    if (!wants("iso")) continue;
    std::vector<std::string> add = node->kernel_args;
    add.push_back("talos.config=metal-iso");
    std::string subject = "iso: kernel command line for node " + node->name;
    SourceLocation where{node->name + "/kernel_args", 0, 0};
    if (iso) {
      check_talos_iso_command_lines(iso->grub_cfg, iso->kernel, iso->ukis, add, subject, where, diagnostics);
    } else {
      // The ISO is a download: Talos' imager writes at least its default arguments (known for a
      // `talos.version`; without one, only what the build adds is counted), so a line over the limit
      // with those alone is over with the real ISO too.
      std::vector<std::string> estimate = version ? append_kernel_args(talos_default_kernel_args(*version), add) : add;
      std::string counted = version ? " (at least: Talos' default arguments for " + version->str() + ")"
                                    : " (at least: the arguments the build adds; set talos.version to count Talos' own)";
      if (auto problem = check_kernel_command_line(subject + counted, estimate, grub_loader("/boot/vmlinuz"),
                                                   assumed_talos_kernel("").limit, "the ISO")) {
        diagnostics.error(where, *problem);
      }
    }
  }
  if (wants("config-iso") && iso) {
    std::vector<std::string> add = talos_shared_kernel_args(nodes);
    add.push_back("talos.config=metal-iso");
    check_talos_iso_command_lines(iso->grub_cfg, iso->kernel, iso->ukis, add, "kernel command line of talos-metal-iso.iso",
                                  {"talos-metal-iso.iso", 0, 0}, diagnostics);
  }
}

}  // namespace aggrik8s::builder
