#include "builder/talos/talos_image_builder.hpp"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

#include "builder/build_manifest.hpp"
#include "builder/build_output.hpp"
#include "builder/talos/talos_build_checks.hpp"
#include "builder/talos/talos_boot_files.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "builder/talos/talos_extension_image.hpp"
#include "builder/talos/talos_kernel_args.hpp"
#include "builder/talos/talos_machine_config.hpp"
#include "builder/talos/uki_boot_files.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/secret.hpp"
#include "disk/linux_kernel_image.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr const char* shared_boot_iso_name = "talos-metal-iso.iso";
constexpr const char* metal_iso_arg = "talos.config=metal-iso";

bool wants(const Profile& profile, const std::string& output) {
  const auto& o = profile.talos.outputs;
  return std::find(o.begin(), o.end(), output) != o.end();
}

// Machine configs (and files derived from them) are 0600 whatever the umask; files anyone may read
// (grub.cfg, boot.ipxe, SHA256SUMS, manifest.json) are exactly 0644.
constexpr FileMode config_mode = FileMode::exactly(0600);
constexpr FileMode public_mode = FileMode::exactly(0644);

// Netboot nodes share the kernel and initramfs bytes: a hard link costs nothing; a copy where links
// are impossible.
void link_or_copy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_hard_link(from, to, ec);
  if (ec) fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

struct NodePlan {
  const TalosNode* node = nullptr;
  TalosMachineConfig config;
  std::string config_yaml;
  Sha256Digest config_fingerprint;
  std::vector<std::string> iso_command_line;      // the "Talos ISO" entry of <node>.iso
  std::vector<std::string> netboot_command_line;  // boot.ipxe's kernel line (without initrd=)
};

// Step 1: every config loaded, patched and checked; all problems reported at once (the same checks
// `validate` runs: builder/talos/talos_build_checks.hpp).
std::vector<NodePlan> plan_node_configs(const Profile& profile, const std::vector<const TalosNode*>& nodes) {
  Diagnostics diagnostics;
  std::vector<NodePlan> plans;
  for (auto& prepared : prepare_talos_node_configs(profile, nodes, diagnostics)) {
    NodePlan plan;
    plan.node = prepared.node;
    plan.config_yaml = std::move(prepared.yaml);
    plan.config_fingerprint = prepared.fingerprint;
    plan.config = std::move(prepared.config);
    plans.push_back(std::move(plan));
  }
  for (const auto& d : diagnostics.all()) {
    if (d.severity == Diagnostic::Severity::warning) log::warning(d.str());
  }
  diagnostics.throw_if_errors(profile.file.string() + ": machine configs");
  return plans;
}

std::string without_trailing_slash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

}  // namespace

TalosBuildResult build_talos_outputs(const Profile& profile, const BuildOptions& options) {
  std::vector<const TalosNode*> nodes = select_nodes(profile.talos_nodes, options.only_nodes, profile.file);

  // 1. configs
  std::vector<NodePlan> plans = plan_node_configs(profile, nodes);

  // 2. inputs
  const TalosSettings& talos = profile.talos;
  // config-iso alone needs no ISO (without one, no shared boot ISO is written: the user boots a stock
  // ISO with talos.config=metal-iso added by hand or by Image Factory's extraKernelArgs).
  bool need_iso = wants(profile, "iso") || (wants(profile, "netboot") && !talos.kernel) ||
                  (wants(profile, "config-iso") && talos.iso);
  if (need_iso && !talos.iso) {
    throw Error(profile.file.string() + ": the " + std::string(wants(profile, "iso") ? "iso" : "netboot") +
                " output needs 'talos.iso'" + (wants(profile, "iso") ? "" : " or 'talos.kernel' + 'talos.initramfs'"));
  }
  ArtifactFetcher fetcher(options.fetch);
  std::optional<FetchedArtifact> iso;
  std::optional<FetchedArtifact> kernel;
  std::optional<FetchedArtifact> initramfs;
  {
    std::vector<ArtifactSource> sources;
    if (need_iso) sources.push_back(*talos.iso);
    bool separate_netboot_files = wants(profile, "netboot") && talos.kernel && talos.initramfs;
    if (separate_netboot_files) {
      sources.push_back(*talos.kernel);
      sources.push_back(*talos.initramfs);
    }
    std::vector<FetchedArtifact> fetched = fetcher.fetch_all(sources);
    std::size_t i = 0;
    if (need_iso) iso = fetched[i++];
    if (separate_netboot_files) {
      kernel = fetched[i++];
      initramfs = fetched[i++];
    }
  }

  std::optional<TalosVersion> version;
  std::string version_source = "profile";
  if (talos.version) {
    version = TalosVersion::parse(*talos.version);
    if (!version) throw Error(profile.file.string() + ": 'talos.version' must look like v1.12.0, got '" + *talos.version + "'");
  }
  std::string grub_cfg;
  IsoVolumeInfo iso_info;
  TalosIsoUkis ukis;
  if (iso) {
    iso_info = read_iso_volume_info(iso->path);
    std::vector<std::string> files = list_iso_files(iso->path);
    for (const char* required : {"boot/vmlinuz", "boot/initramfs.xz", "boot/grub/grub.cfg"}) {
      if (std::find(files.begin(), files.end(), required) == files.end()) {
        throw Error(iso->source.location + ": no /" + required + " in the ISO: this is not a Talos ISO (" +
                    talos.iso->where.str() + ")");
      }
    }
    // UEFI through systemd-boot (Talos >= 1.10): the command line is inside each UKI.
    if (wants(profile, "iso") || wants(profile, "config-iso")) ukis = TalosIsoUkis::read(iso->path, files);
    grub_cfg = read_iso_text_file(iso->path, "boot/grub/grub.cfg");
    auto detected = TalosVersion::from_volume_id(iso_info.volume_id);
    if (!version && detected) {
      version = detected;
      version_source = "ISO volume id " + iso_info.volume_id;
    } else if (version && detected && detected->str() != version->str()) {
      log::warning("talos.version is ", version->str(), " but the ISO's volume id says ", detected->str(),
                   "; using ", version->str());
    }
  }
  bool need_version = wants(profile, "iso") || wants(profile, "netboot");
  if (!version && !need_version) {
    version = TalosVersion{};  // config-iso only: the version changes nothing
    version_source = "unknown (not needed for config-iso)";
  }
  if (!version) {
    throw Error(profile.file.string() + ": the Talos version is unknown (" +
                (iso ? "the ISO's volume id '" + iso_info.volume_id + "' does not name it" : std::string("no ISO to read it from")) +
                "): set 'talos.version'");
  }
  if (!ukis.empty()) {
    std::string where;
    for (const auto& l : ukis.locations()) where += (where.empty() ? "" : ", ") + l;
    log::info("the ISO boots UEFI through systemd-boot: editing the command line of its UKIs (", where, ")");
    if (ukis.any_signed()) {
      log::warning("the ISO's UKI is signed for Secure Boot; editing its command line voids the signature, so the "
                   "edited UKIs are written unsigned: boot them with Secure Boot off (or re-sign them); see docs/proxmox.md");
    }
  }
  // Talos >= 1.12 reads an embedded config; older versions only the metal-iso volume.
  bool embed_config = version->at_least(1, 12);

  // 3. command lines, against what the kernel each one boots keeps (its setup header's cmdline_size)
  std::optional<KernelFile> iso_kernel;
  if (iso) iso_kernel = read_talos_iso_kernel(iso->path, iso->source.location + ":/boot/vmlinuz");
  std::optional<KernelFile> netboot_kernel_limit = iso_kernel;
  if (kernel) netboot_kernel_limit = read_kernel_file(kernel->path, kernel->source.location);
  Diagnostics cmdline_problems;
  std::string netboot_base = talos.netboot_url ? without_trailing_slash(*talos.netboot_url) : "";
  for (auto& plan : plans) {
    const TalosNode& node = *plan.node;
    if (wants(profile, "iso")) {
      std::vector<std::string> add = node.kernel_args;
      add.push_back(metal_iso_arg);
      plan.iso_command_line = split_kernel_args(edit_grub_config(grub_cfg, {add, {}}).command_lines.front());
      check_talos_iso_command_lines(grub_cfg, *iso_kernel, ukis, add, "iso: kernel command line for node " + node.name,
                                    {node.name + "/kernel_args", 0, 0}, cmdline_problems);
    }
    if (wants(profile, "netboot")) {
      plan.netboot_command_line = talos_netboot_command_line(*version, node, netboot_base);
      check_talos_netboot_command_line(plan.netboot_command_line, node, *netboot_kernel_limit, cmdline_problems);
    }
  }
  std::vector<const TalosNode*> planned_nodes;
  for (const auto& plan : plans) planned_nodes.push_back(plan.node);
  std::vector<std::string> shared_args = talos_shared_kernel_args(planned_nodes);
  bool make_shared_boot_iso = false;
  if (wants(profile, "config-iso") && iso) {
    std::vector<std::string> add = shared_args;
    add.push_back(metal_iso_arg);
    EditedGrubConfig edited = edit_grub_config(grub_cfg, {add, {}});
    // An input that already boots with every shared argument (an Image Factory ISO with
    // talos.config=metal-iso in extraKernelArgs) is the shared boot ISO as it is.
    make_shared_boot_iso = edited.command_lines != edit_grub_config(grub_cfg, {}).command_lines ||
                           ukis.command_lines_with(add) != ukis.command_lines_with({});
    check_talos_iso_command_lines(grub_cfg, *iso_kernel, ukis, add, std::string("kernel command line of ") + shared_boot_iso_name,
                                  {shared_boot_iso_name, 0, 0}, cmdline_problems);
    for (const auto& plan : plans) {
      for (const auto& arg : plan.node->kernel_args) {
        if (std::find(shared_args.begin(), shared_args.end(), arg) == shared_args.end()) {
          log::warning("node ", plan.node->name, ": kernel argument ", arg, " is not shared by every node, so the shared ",
                       shared_boot_iso_name, " cannot carry it (the iso and netboot outputs do)");
        }
      }
    }
  }
  cmdline_problems.throw_if_errors(profile.file.string() + ": kernel command lines");

  // 4. outputs
  fs::create_directories(options.output_dir);
  WorkDirectory work(options.output_dir, "work-talos");
  PartialOutputs partial;
  DigestsByInode digests;
  TalosBuildResult result;
  result.talos_version = version->str();
  const fs::path& out = options.output_dir;
  // FAT timestamps of files rewritten in an ISO's EFI partition.
  const std::int64_t uki_timestamp = options.source_date_epoch.value_or(static_cast<std::int64_t>(std::time(nullptr)));

  if (make_shared_boot_iso) {
    log::info("writing ", shared_boot_iso_name, " (the input ISO with ", metal_iso_arg, ")");
    std::vector<std::string> add = shared_args;
    add.push_back(metal_iso_arg);
    fs::path cfg = work.path() / "shared-grub.cfg";
    write_file_with_mode(cfg, edit_grub_config(grub_cfg, {add, {}}).text, public_mode);
    fs::path target = out / shared_boot_iso_name;
    fs::path target_partial = partial.track(fs::path(target.string() + ".partial"));
    IsoRemaster request{iso->path, target_partial, {{cfg, "/boot/grub/grub.cfg", 0444}}, std::nullopt, options.source_date_epoch, 0644};
    if (!ukis.empty()) {
      fs::path uki_work = work.path() / "shared-uki";
      fs::create_directories(uki_work);
      ukis.apply({add, {}}, uki_work, uki_timestamp, request);
    }
    remaster_iso(request);
    fs::rename(target_partial, target);
    partial.track(target);
    result.shared_boot_iso = describe_file(target, digests);
  }

  // Netboot kernel and initramfs: extracted once, linked into each node's directory.
  fs::path netboot_kernel;
  fs::path netboot_initramfs;
  if (wants(profile, "netboot")) {
    if (kernel && initramfs) {
      // Copies, so the per-node hard links never share an inode with the cache or the user's files.
      netboot_kernel = work.path() / "vmlinuz";
      netboot_initramfs = work.path() / "initramfs.xz";
      fs::copy_file(kernel->path, netboot_kernel);
      fs::copy_file(initramfs->path, netboot_initramfs);
    } else {
      netboot_kernel = work.path() / "vmlinuz";
      netboot_initramfs = work.path() / "initramfs.xz";
      extract_iso_files(iso->path, {{"boot/vmlinuz", netboot_kernel}, {"boot/initramfs.xz", netboot_initramfs}});
    }
    fs::create_directories(out / "netboot");
  }

  // Extensions the ISO already carries (an Image Factory ISO's) stay listed next to the embedded config.
  std::vector<TalosExtensionLayer> iso_extensions;
  if (wants(profile, "iso") && embed_config) {
    std::string location = iso->source.location + ":/boot/initramfs.xz";
    iso_extensions = initramfs_extension_layers(read_iso_text_file(iso->path, "boot/initramfs.xz"), location);
    for (const auto& layer : iso_extensions) {
      log::info("the ISO's initramfs has system extension ", layer.name, " ", layer.version,
                layer.name == "embedded-config" ? ": replaced by each node's own" : ": kept");
    }
  }

  nlohmann::json node_reports = nlohmann::json::array();
  for (const auto& plan : plans) {
    const TalosNode& node = *plan.node;
    TalosBuiltNode built;
    built.name = node.name;
    nlohmann::json report{{"name", node.name},
                          {"hostname", node.hostname},
                          {"machine_type", plan.config.machine_type()},
                          {"config_sha256", plan.config_fingerprint.hex()},
                          {"outputs", nlohmann::json::object()}};
    if (node.mac) report["mac"] = *node.mac;
    if (node.uuid) report["uuid"] = *node.uuid;
    fs::path node_work = work.path() / node.name;
    fs::create_directories(node_work);
    fs::path config_file = node_work / "config.yaml";
    write_file_with_mode(config_file, plan.config_yaml, config_mode);

    if (wants(profile, "config-iso")) {
      log::info("node ", node.name, ": writing the config ISO");
      fs::path target = out / (node.name + "-config.iso");
      fs::path target_partial = partial.track(fs::path(target.string() + ".partial"));
      write_config_iso(target_partial, plan.config_yaml, {"metal-iso", options.source_date_epoch});
      fs::rename(target_partial, target);
      partial.track(target);
      BuiltFile f = describe_file(target, digests);
      built.files.push_back(f);
      report["outputs"]["config-iso"] = built_file_json(f, out);
    }

    if (wants(profile, "iso")) {
      log::info("node ", node.name, ": remastering the ISO");
      std::vector<std::string> add = node.kernel_args;
      add.push_back(metal_iso_arg);
      GrubConfigEdit edit{add, {}};
      std::vector<IsoFileToAdd> files{{config_file, "/config.yaml", 0400}};
      std::string embedded_segment;
      std::optional<TalosExtensionLayer> extension_layer;
      if (embed_config) {
        // The `embedded-config` system extension, as Talos' imager adds it to the initramfs.
        EmbeddedConfigExtension extension =
            build_embedded_config_extension(plan.config_yaml, node_work, options.source_date_epoch.value_or(0), iso_extensions);
        embedded_segment = std::move(extension.initramfs_segment);
        extension_layer = extension.layer;
        fs::path segment = node_work / "embedded-config.cpio.zst";
        write_file_with_mode(segment, embedded_segment, config_mode);
        files.push_back({segment, talos_extension_initrd_iso_path, 0400});
        edit.append_initrds.push_back(talos_extension_initrd_iso_path);
      }
      fs::path cfg = node_work / "grub.cfg";
      write_file_with_mode(cfg, edit_grub_config(grub_cfg, edit).text, public_mode);
      files.push_back({cfg, "/boot/grub/grub.cfg", 0444});
      fs::path target = out / (node.name + ".iso");
      fs::path target_partial = partial.track(fs::path(target.string() + ".partial"));
      IsoRemaster request{iso->path, target_partial, files, std::string("metal-iso"), options.source_date_epoch, 0600};
      std::optional<TalosIsoUkis::Applied> uefi;
      if (!ukis.empty()) {
        // The UKI's initramfs gets the same extension archive GRUB loads as a second initrd.
        uefi = ukis.apply({add, embedded_segment}, node_work, uki_timestamp, request);
      }
      remaster_iso(request);
      fs::rename(target_partial, target);
      partial.track(target);
      BuiltFile f = describe_file(target, digests);
      built.files.push_back(f);
      built.config_method = embed_config ? "embedded+metal-iso" : "metal-iso";
      report["outputs"]["iso"] = built_file_json(f, out);
      report["outputs"]["iso"]["config_method"] = built.config_method;
      if (extension_layer) {
        report["outputs"]["iso"]["embedded_config"] = {{"extension", extension_layer->name},
                                                       {"version", extension_layer->version},
                                                       {"image", extension_layer->image}};
      }
      report["outputs"]["iso"]["kernel_args"] = join_kernel_args(plan.iso_command_line);
      if (uefi) {
        report["outputs"]["iso"]["uefi"] = {{"bootloader", "systemd-boot"},
                                            {"ukis", ukis.locations()},
                                            {"kernel_args", uefi->command_lines.empty() ? "" : uefi->command_lines.front()},
                                            {"secure_boot_signature", uefi->signature_removed ? "removed" : "none"}};
      }
    }

    if (wants(profile, "netboot")) {
      log::info("node ", node.name, ": writing netboot files");
      fs::path dir = out / "netboot" / node.name;
      fs::path dir_partial = partial.track(fs::path(dir.string() + ".partial"));
      fs::remove_all(dir_partial);
      fs::create_directories(dir_partial);
      link_or_copy(netboot_kernel, dir_partial / "vmlinuz");
      link_or_copy(netboot_initramfs, dir_partial / "initramfs.xz");
      write_file_with_mode(dir_partial / "config.yaml", plan.config_yaml, config_mode);
      write_file_with_mode(dir_partial / "boot.ipxe", ipxe_script({node.name, plan.netboot_command_line}), public_mode);
      fs::remove_all(dir);
      fs::rename(dir_partial, dir);
      partial.track(dir);
      nlohmann::json files = nlohmann::json::array();
      for (const char* name : {"vmlinuz", "initramfs.xz", "config.yaml", "boot.ipxe"}) {
        BuiltFile f = describe_file(dir / name, digests);
        built.files.push_back(f);
        files.push_back(built_file_json(f, out));
      }
      report["outputs"]["netboot"] = {{"files", files}, {"kernel_args", join_kernel_args(plan.netboot_command_line)}};
    }
    node_reports.push_back(report);
    result.nodes.push_back(std::move(built));
  }

  // 5. SHA256SUMS and manifest.json
  std::vector<BuiltFile> sums;
  if (result.shared_boot_iso) sums.push_back(*result.shared_boot_iso);
  for (const auto& n : result.nodes) sums.insert(sums.end(), n.files.begin(), n.files.end());
  nlohmann::json inputs = nlohmann::json::array();
  if (iso) inputs.push_back(input_json("talos-iso", *iso));
  if (kernel) inputs.push_back(input_json("talos-kernel", *kernel));
  if (initramfs) inputs.push_back(input_json("talos-initramfs", *initramfs));
  nlohmann::json manifest = manifest_base(profile, options.source_date_epoch);
  manifest["talos_version"] = {{"version", version->str()}, {"from", version_source}};
  manifest["outputs"] = talos.outputs;
  manifest["inputs"] = inputs;
  manifest["nodes"] = node_reports;
  if (result.shared_boot_iso) {
    manifest["shared_boot_iso"] = built_file_json(*result.shared_boot_iso, out);
    manifest["shared_boot_iso"]["kernel_args_added"] = join_kernel_args(append_kernel_args(shared_args, {metal_iso_arg}));
  }
  BuildRecord record = write_build_record(out, sums, manifest, public_mode);
  result.checksums = record.checksums;
  result.manifest = record.manifest;
  partial.commit();
  return result;
}

}  // namespace aggrik8s::builder
