#include "builder/talos/talos_image_builder.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <ctime>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <thread>
#include <fstream>
#include <nlohmann/json.hpp>

#include "builder/build_manifest.hpp"
#include "builder/build_output.hpp"
#include "builder/talos/iso_template_cache.hpp"
#include "builder/talos/iso_variant.hpp"
#include "builder/talos/read_only_file_mapping.hpp"
#include "builder/talos/talos_boot_files.hpp"
#include "builder/talos/talos_build_checks.hpp"
#include "builder/talos/talos_extension_image.hpp"
#include "builder/talos/talos_iso_image.hpp"
#include "builder/talos_kernel_args.hpp"
#include "builder/talos/talos_machine_config.hpp"
#include "builder/talos/uki_boot_files.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/huge_pages.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/log.hpp"
#include "core/secret.hpp"
#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/linux_kernel_image.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr const char* shared_boot_iso_name = "talos-metal-iso.iso";
constexpr const char* metal_iso_arg = "talos.config=metal-iso";
constexpr const char* node_iso_volume_id = "metal-iso";

bool wants(const Profile& profile, const std::string& output) {
  const auto& o = profile.talos.outputs;
  return std::find(o.begin(), o.end(), output) != o.end();
}

// Machine configs (and files derived from them) are 0600 whatever the umask; files anyone may read
// (grub.cfg, boot.ipxe, SHA256SUMS, manifest.json) are exactly 0644.
constexpr FileMode config_mode = FileMode::exactly(0600);
constexpr FileMode public_mode = FileMode::exactly(0644);
// Node ISOs hashed at once (start_iso_digest): two keep both cores of a small machine busy while the
// main thread edits and copies; more would only add buffers (a UKI and an EFI partition each).
constexpr std::size_t max_iso_digests_in_flight = 2;

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
    // d.str() would say "warning: " a second time after the logger's own.
    if (d.severity == Diagnostic::Severity::warning) log::warning(d.where.str(), ": ", d.message);
  }
  diagnostics.throw_if_errors(profile.file.string() + ": machine configs");
  return plans;
}

std::string without_trailing_slash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// What step 2 fetched: the ISO, and the kernel and initramfs when netboot has its own.
struct TalosInputs {
  std::optional<FetchedArtifact> iso;
  std::optional<FetchedArtifact> kernel;
  std::optional<FetchedArtifact> initramfs;
  // A local ISO with no pinned sha256 is hashed only for the manifest: on a thread, while the nodes
  // are written (iso->sha256 is set from it before the manifest), and by the first node ISO when it
  // looks for a cached template. Waited for on every path out.
  std::shared_future<Sha256Digest> iso_digest{};
};

// Step 2: the inputs the wanted outputs need, fetched together (cache, checksums).
TalosInputs fetch_talos_inputs(const Profile& profile, const FetchOptions& fetch) {
  const TalosSettings& talos = profile.talos;
  // config-iso alone needs no ISO (without one, no shared boot ISO is written: the user boots a stock
  // ISO with talos.config=metal-iso added by hand or by Image Factory's extraKernelArgs).
  bool need_iso = wants(profile, "iso") || (wants(profile, "netboot") && !talos.kernel) ||
                  (wants(profile, "config-iso") && talos.iso);
  if (need_iso && !talos.iso) {
    throw Error(profile.file.string() + ": the " + std::string(wants(profile, "iso") ? "iso" : "netboot") +
                " output needs 'talos.iso'" + (wants(profile, "iso") ? "" : " or 'talos.kernel' + 'talos.initramfs'"));
  }
  ArtifactFetcher fetcher(fetch);
  TalosInputs inputs;
  std::vector<ArtifactSource> sources;
  std::optional<FetchedArtifact> local_iso = need_iso ? fetcher.local_without_digest(*talos.iso) : std::nullopt;
  if (need_iso && !local_iso) sources.push_back(*talos.iso);
  bool separate_netboot_files = wants(profile, "netboot") && talos.kernel && talos.initramfs;
  if (separate_netboot_files) {
    sources.push_back(*talos.kernel);
    sources.push_back(*talos.initramfs);
  }
  std::vector<FetchedArtifact> fetched = fetcher.fetch_all(sources);
  std::size_t i = 0;
  if (local_iso) {
    inputs.iso = std::move(local_iso);
    inputs.iso_digest = std::async(std::launch::async, [path = inputs.iso->path] { return Sha256::of_file(path); }).share();
  } else if (need_iso) {
    inputs.iso = fetched[i++];
  }
  if (separate_netboot_files) {
    inputs.kernel = fetched[i++];
    inputs.initramfs = fetched[i++];
  }
  return inputs;
}

// What the build edits of the input ISO (empty without one).
struct TalosIsoContents {
  IsoVolumeInfo volume;
  std::string grub_cfg;
  TalosIsoUkis ukis;
};

// Checks the ISO is a Talos ISO (/boot/vmlinuz, /boot/initramfs.xz, grub.cfg) and reads what is edited.
TalosIsoContents read_talos_iso(const Profile& profile, const FetchedArtifact& iso) {
  TalosIsoContents contents;
  contents.volume = read_iso_volume_info(iso.path);
  std::vector<std::string> files = list_iso_files(iso.path);
  for (const char* required : {"boot/vmlinuz", "boot/initramfs.xz", "boot/grub/grub.cfg"}) {
    if (std::find(files.begin(), files.end(), required) == files.end()) {
      throw Error(iso.source.shown() + ": no /" + required + " in the ISO: this is not a Talos ISO (" +
                  profile.talos.iso->where.str() + ")");
    }
  }
  // UEFI through systemd-boot (Talos >= 1.10): the command line is inside each UKI.
  if (wants(profile, "iso") || wants(profile, "config-iso")) contents.ukis = TalosIsoUkis::read(iso.path, files);
  contents.grub_cfg = read_iso_text_file(iso.path, "boot/grub/grub.cfg");
  return contents;
}

struct KnownTalosVersion {
  TalosVersion version;
  std::string source;  // for the manifest: "profile", the ISO's volume id, ...
};

// 'talos.version' as the profile gives it, checked before any ISO is read.
std::optional<TalosVersion> talos_version_from_profile(const Profile& profile) {
  if (!profile.talos.version) return std::nullopt;
  auto version = TalosVersion::parse(*profile.talos.version);
  if (!version) {
    throw Error(profile.file.string() + ": 'talos.version' must look like v1.12.0, got '" + *profile.talos.version + "'");
  }
  return version;
}

// The profile's version, else the one the ISO's volume id names; config-iso alone does without.
KnownTalosVersion choose_talos_version(const Profile& profile, std::optional<TalosVersion> version, bool have_iso,
                                       const TalosIsoContents& iso) {
  std::string source = "profile";
  if (have_iso) {
    auto detected = TalosVersion::from_volume_id(iso.volume.volume_id);
    if (!version && detected) {
      version = detected;
      source = "ISO volume id " + iso.volume.volume_id;
    } else if (version && detected && detected->str() != version->str()) {
      log::warning("talos.version is ", version->str(), " but the ISO's volume id says ", detected->str(),
                   "; using ", version->str());
    }
  }
  bool need_version = wants(profile, "iso") || wants(profile, "netboot");
  if (!version && !need_version) {
    version = TalosVersion{};  // config-iso only: the version changes nothing
    source = "unknown (not needed for config-iso)";
  }
  if (!version) {
    throw Error(profile.file.string() + ": the Talos version is unknown (" +
                (have_iso ? "the ISO's volume id '" + iso.volume.volume_id + "' does not name it"
                          : std::string("no ISO to read it from")) +
                "): set 'talos.version'");
  }
  return {*version, source};
}

void report_uki_editing(const TalosIsoUkis& ukis) {
  if (ukis.empty()) return;
  std::string where;
  for (const auto& l : ukis.locations()) where += (where.empty() ? "" : ", ") + l;
  log::info("the ISO boots UEFI through systemd-boot: editing the command line of its UKIs (", where, ")");
  if (ukis.any_signed()) {
    log::warning("the ISO's UKI is signed for Secure Boot; editing its command line voids the signature, so the "
                 "edited UKIs are written unsigned: boot them with Secure Boot off (or re-sign them); see docs/proxmox.md");
  }
}

// The kernel arguments the shared boot ISO adds, and whether it differs from the input ISO at all.
struct SharedBootIsoPlan {
  std::vector<std::string> shared_args;  // the arguments every node has
  bool write = false;
};

std::vector<std::string> with_metal_iso_arg(std::vector<std::string> args) {
  args.push_back(metal_iso_arg);
  return args;
}

// Step 3: each node's command lines (into `plans`) and the shared boot ISO's, checked against what the
// kernel each one boots keeps (its setup header's cmdline_size); all problems reported at once.
SharedBootIsoPlan plan_command_lines(const Profile& profile, const TalosInputs& inputs, const TalosIsoContents& iso,
                                     const TalosVersion& version, std::vector<NodePlan>& plans) {
  const TalosSettings& talos = profile.talos;
  std::optional<KernelFile> iso_kernel;
  if (inputs.iso) iso_kernel = read_talos_iso_kernel(inputs.iso->path, inputs.iso->source.shown() + ":/boot/vmlinuz");
  std::optional<KernelFile> netboot_kernel_limit = iso_kernel;
  if (inputs.kernel) netboot_kernel_limit = read_kernel_file(inputs.kernel->path, inputs.kernel->source.shown());
  Diagnostics cmdline_problems;
  std::string netboot_base = talos.netboot_url ? without_trailing_slash(*talos.netboot_url) : "";
  for (auto& plan : plans) {
    const TalosNode& node = *plan.node;
    if (wants(profile, "iso")) {
      std::vector<std::string> add = with_metal_iso_arg(node.kernel_args);
      plan.iso_command_line = split_kernel_args(edit_grub_config(iso.grub_cfg, {add, {}}).command_lines.front());
      check_talos_iso_command_lines(iso.grub_cfg, *iso_kernel, iso.ukis, add, "iso: kernel command line for node " + node.name,
                                    {node.name + "/kernel_args", 0, 0}, cmdline_problems);
    }
    if (wants(profile, "netboot")) {
      plan.netboot_command_line = talos_netboot_command_line(version, node, netboot_base);
      check_talos_netboot_command_line(plan.netboot_command_line, node, *netboot_kernel_limit, cmdline_problems);
    }
  }
  std::vector<const TalosNode*> planned_nodes;
  for (const auto& plan : plans) planned_nodes.push_back(plan.node);
  SharedBootIsoPlan shared;
  shared.shared_args = talos_shared_kernel_args(planned_nodes);
  if (wants(profile, "config-iso") && inputs.iso) {
    std::vector<std::string> add = with_metal_iso_arg(shared.shared_args);
    EditedGrubConfig edited = edit_grub_config(iso.grub_cfg, {add, {}});
    // An input that already boots with every shared argument (an Image Factory ISO with
    // talos.config=metal-iso in extraKernelArgs) is the shared boot ISO as it is.
    shared.write = edited.command_lines != edit_grub_config(iso.grub_cfg, {}).command_lines ||
                   iso.ukis.command_lines_with(add) != iso.ukis.command_lines_with({});
    check_talos_iso_command_lines(iso.grub_cfg, *iso_kernel, iso.ukis, add,
                                  std::string("kernel command line of ") + shared_boot_iso_name,
                                  {shared_boot_iso_name, 0, 0}, cmdline_problems);
    for (const auto& plan : plans) {
      for (const auto& arg : plan.node->kernel_args) {
        if (std::find(shared.shared_args.begin(), shared.shared_args.end(), arg) == shared.shared_args.end()) {
          log::warning("node ", plan.node->name, ": kernel argument ", arg, " is not shared by every node, so the shared ",
                       shared_boot_iso_name, " cannot carry it (the iso and netboot outputs do)");
        }
      }
    }
  }
  cmdline_problems.throw_if_errors(profile.file.string() + ": kernel command lines");
  return shared;
}

// One UKI copy in the template ISO (the tree's, the EFI partition's), for nodes written by rewriting
// only its archive slot (uki_image.hpp: uki_append_slot): where the slot's bytes and its balancing word
// lie in the ISO, and the template's bytes there. The tree's UKI is one extent of the ISO; the
// partition's may be several runs of FAT clusters.
struct TemplateUkiSlot {
  UkiAppendSlot slot;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> region_ranges;  // ISO offset and length, in slot order
  std::uint64_t balance_offset = 0;                                    // in the ISO
  std::vector<std::uint8_t> region;                                    // the template's bytes there
  std::array<std::uint8_t, 2> balance{};
};

// Every UKI copy's slot, for nodes whose UKIs take the template's command-line arguments and whose
// archives end in the same 4 KiB: their ISOs are the template with the slots, the balancing words and
// their small files patched in. No UKI is rebuilt and no FAT rewritten (~45 MiB copied four times a
// node before; docs/benchmarks.md, Talos section).
struct TemplateUkiSlots {
  std::vector<std::string> add_args;
  bool appended = false;  // an archive in every UKI (Talos >= 1.12); without one, equal arguments give equal UKIs
  TalosIsoUkis::Applied applied;  // the template's: the same arguments give the same command lines
  std::vector<TemplateUkiSlot> ukis;  // in TalosIsoUkis::append_slots order
};

// The first node's ISO, once written, as the template the other nodes' ISOs are variants of
// (builder/talos/iso_variant.hpp): remastering each node from scratch with libisoburn wrote the whole
// image through libburn's writer each time; a variant is one copy of it with the node's files patched in
// (docs/benchmarks.md, Talos section).
struct NodeIsoTemplate {
  // A template from the cache: held while the build reads it, so another build's pruning leaves it
  // (builder/template_store.hpp). First, so it goes last.
  TemplateStore::Lease in_use{};
  fs::path path;
  ReadOnlyFileMapping bytes;                   // its content, mapped once for every variant's hash
  std::vector<IsoFilePlacement> placements;    // the files that differ between nodes
  std::optional<IsoEfiPartition> partition;    // where the edited EFI partition sits in it
  std::vector<std::uint8_t> input_partition;   // the input ISO's EFI partition: each node's starting point
  // Buffers for the nodes' edited partitions: one for each hash in flight (IsoDigestInFlight) and one
  // for the node being edited.
  std::array<std::vector<std::uint8_t>, max_iso_digests_in_flight + 1> partition_work;
  // Taken by the template's own hash (start_iso_digest); the variants' hashes wait for them and go on
  // from the last one before their first differing byte.
  IsoHashCheckpoints checkpoints{};
  std::shared_future<void> checkpoints_taken{};
  std::optional<TemplateUkiSlots> uki_slots{};  // nullopt: each node's UKIs are edited whole
  // A template from the cache (iso_template_cache.hpp): the SHA-256 recorded when it was stored, and
  // its own hash (the one that takes the checkpoints), compared before the build commits. Last: waited
  // for before the mapping and the checkpoints it uses go.
  std::optional<Sha256Digest> recorded_digest{};
  std::future<Sha256Digest> own_digest{};
};

// A node ISO that is written and renamed but whose SHA-256 is still being taken, on a thread of its
// own from the template's mapped bytes and the node's patches, while the next nodes' UKIs and EFI
// partitions are edited and their ISOs copied: per node the hash (~80 ms for 127 MiB on one core) takes
// longer than the edit and the copy. It owns what the patches point into (the config, grub.cfg and
// archive copies, the edited UKIs; the partition is the template's partition_work[partition_work_index]).
struct IsoDigestInFlight {
  fs::path target;
  std::string config_yaml;
  std::string grub_cfg;
  std::string embedded_segment;
  std::vector<UkiSlotBytes> uki_slot_bytes;  // the slot path's UKI bytes (TemplateUkiSlots)
  TalosIsoUkis::EditedInMemory edited;
  std::optional<std::size_t> partition_work_index;
  std::vector<IsoBytePatch> patches;
  std::future<Sha256Digest> digest;  // last: destroyed (and so waited for) before what it reads
};

// Step 4's writers: where outputs go, the scratch space beside them, and the outputs started so far
// (removed unless the build completes).
struct TalosOutputWriter {
  const fs::path& out;
  const WorkDirectory& work;
  PartialOutputs& partial;
  DigestsByInode& digests;
  std::optional<std::int64_t> source_date_epoch;
  std::int64_t uki_timestamp;  // FAT timestamps of files rewritten in an ISO's EFI partition

  // <target>.partial, to be written and then renamed by finish().
  fs::path start(const fs::path& target) { return partial.track(fs::path(target.string() + ".partial")); }
  BuiltFile finish(const fs::path& target) {
    partial.publish(target.string() + ".partial", target);
    return describe_file(target, digests);
  }
  // For a file whose SHA-256 was taken while it was written.
  BuiltFile finish(const fs::path& target, const Sha256Digest& digest) {
    partial.publish(target.string() + ".partial", target);
    return BuiltFile{target, fs::file_size(target), digest};
  }

  bool derive_node_isos = false;  // more than one node gets an ISO: the first is the others' template
  bool node_iso_template_tried = false;
  // Templates kept between builds (iso_template_cache.hpp): only for builds with a fixed time.
  std::optional<IsoTemplateCache> template_cache{};
  bool template_looked_up = false;
  std::optional<std::string> template_key{};  // this build's, once its first node ISO is planned
  IsoTemplateKeyParts template_key_parts{};
  bool template_from_cache = false;
  // False on the build run again after a cached template failed its check: it remasters, and keeps a
  // new template.
  bool cached_template_allowed = true;
  std::optional<NodeIsoTemplate> node_iso_template{};
  // After node_iso_template, whose mapping their hashes read: destroyed (waited for) first. Oldest first.
  std::deque<std::unique_ptr<IsoDigestInFlight>> digests_in_flight{};
  std::map<fs::path, Sha256Digest> late_digests{};  // node ISOs' SHA-256s, for their BuiltFiles and reports
};

// Waits for the oldest node ISO whose SHA-256 is being taken, if any, and keeps the digest for the
// manifest; its UKI buffers go back to `ukis` for the next edit.
void settle_oldest_iso_digest(TalosOutputWriter& writer, const TalosIsoUkis& ukis) {
  if (writer.digests_in_flight.empty()) return;
  std::unique_ptr<IsoDigestInFlight> job = std::move(writer.digests_in_flight.front());
  writer.digests_in_flight.pop_front();
  writer.late_digests[job->target] = job->digest.get();
  ukis.recycle(std::move(job->edited));
}

void settle_iso_digests(TalosOutputWriter& writer, const TalosIsoUkis& ukis) {
  while (!writer.digests_in_flight.empty()) settle_oldest_iso_digest(writer, ukis);
}

// A partition_work buffer no hash in flight reads, for the next node's edit.
std::size_t free_partition_work(const TalosOutputWriter& writer) {
  for (std::size_t i = 0; i < writer.node_iso_template->partition_work.size(); ++i) {
    bool in_use = std::any_of(writer.digests_in_flight.begin(), writer.digests_in_flight.end(),
                              [i](const auto& job) { return job->partition_work_index == i; });
    if (!in_use) return i;
  }
  throw Error("internal: every EFI partition buffer is in use");
}

// The template's own SHA-256 (hash_iso_template), on a thread: it takes the checkpoints every variant's
// hash goes on from, and t.checkpoints_taken is ready once it has. `t` must be where it stays (the
// writer's): the checkpoints are filled in place.
std::future<Sha256Digest> start_template_hash(NodeIsoTemplate& t) {
  auto taken = std::make_shared<std::promise<void>>();
  t.checkpoints_taken = taken->get_future().share();
  return std::async(std::launch::async, [bytes = t.bytes.bytes(), checkpoints = &t.checkpoints, taken] {
    try {
      Sha256Digest digest = hash_iso_template(bytes, *checkpoints);
      taken->set_value();
      return digest;
    } catch (...) {
      taken->set_exception(std::current_exception());
      throw;
    }
  });
}

// Starts hashing `job`'s ISO (the template's mapped bytes with the job's patches; none for the template
// itself) on a thread of its own. Up to max_iso_digests_in_flight run at once, the oldest settled first:
// one core hashing could not keep up with the other copying and editing (the hash of a 127 MiB ISO
// takes longer than the rest of a node's work), and the bound keeps the partition and UKI buffers in
// use bounded.
void start_iso_digest(TalosOutputWriter& writer, const TalosIsoUkis& ukis, std::unique_ptr<IsoDigestInFlight> job) {
  while (writer.digests_in_flight.size() >= max_iso_digests_in_flight) settle_oldest_iso_digest(writer, ukis);
  NodeIsoTemplate& t = *writer.node_iso_template;
  std::span<const std::uint8_t> template_bytes = t.bytes.bytes();
  IsoHashCheckpoints* checkpoints = &t.checkpoints;
  if (!t.checkpoints_taken.valid()) {
    // The first job is the template's own hash: it keeps the checkpoints the variants' hashes start from.
    job->digest = start_template_hash(t);
  } else {
    const IsoDigestInFlight* in_flight = job.get();
    std::shared_future<void> taken = t.checkpoints_taken;
    job->digest = std::async(std::launch::async, [template_bytes, checkpoints, taken, in_flight] {
      taken.get();
      return hash_iso_variant(template_bytes, in_flight->patches, *checkpoints);
    });
  }
  writer.digests_in_flight.push_back(std::move(job));
}

// The SHA-256s settle_oldest_iso_digest kept, put where write_node_iso left a placeholder: the nodes'
// built files (SHA256SUMS) and their manifest entries.
void fill_late_digests(TalosOutputWriter& writer, std::vector<TalosBuiltNode>& nodes, nlohmann::json& reports) {
  std::size_t filled = 0;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    for (auto& file : nodes[i].files) {
      auto it = writer.late_digests.find(file.path);
      if (it == writer.late_digests.end()) continue;
      file.sha256 = it->second;
      nlohmann::json& iso = reports.at(i)["outputs"]["iso"];
      if (iso.value("file", "") != fs::relative(file.path, writer.out).string()) {
        throw Error("internal: the manifest entry of " + file.path.string() + " is not where it was written");
      }
      iso["sha256"] = it->second.hex();
      ++filled;
    }
  }
  if (filled != writer.late_digests.size()) throw Error("internal: a node ISO's SHA-256 has no manifest entry");
}

// talos-metal-iso.iso: the input ISO with the shared arguments and talos.config=metal-iso, for nodes
// booted with their <node>-config.iso beside it.
BuiltFile write_shared_boot_iso(TalosOutputWriter& writer, const FetchedArtifact& iso, const TalosIsoContents& contents,
                                const SharedBootIsoPlan& plan) {
  log::info("writing ", shared_boot_iso_name, " (the input ISO with ", metal_iso_arg, ")");
  std::vector<std::string> add = with_metal_iso_arg(plan.shared_args);
  fs::path cfg = writer.work.path() / "shared-grub.cfg";
  write_file_with_mode(cfg, edit_grub_config(contents.grub_cfg, {add, {}}).text, public_mode);
  fs::path target = writer.out / shared_boot_iso_name;
  IsoRemaster request{iso.path, writer.start(target), {{cfg, "/boot/grub/grub.cfg", 0444}}, std::nullopt,
                      writer.source_date_epoch, 0644};
  if (!contents.ukis.empty()) {
    fs::path uki_work = writer.work.path() / "shared-uki";
    fs::create_directories(uki_work);
    contents.ukis.apply({add, {}}, uki_work, writer.uki_timestamp, request);
  }
  remaster_iso(request);
  return writer.finish(target);
}

// The kernel and initramfs every node's netboot directory links to.
struct NetbootBootFiles {
  fs::path kernel;
  fs::path initramfs;
};

NetbootBootFiles prepare_netboot_boot_files(const TalosOutputWriter& writer, const TalosInputs& inputs) {
  NetbootBootFiles files{writer.work.path() / "vmlinuz", writer.work.path() / "initramfs.xz"};
  if (inputs.kernel && inputs.initramfs) {
    // Copies, so the per-node hard links never share an inode with the cache or the user's files.
    fs::copy_file(inputs.kernel->path, files.kernel);
    fs::copy_file(inputs.initramfs->path, files.initramfs);
  } else {
    extract_iso_files(inputs.iso->path, {{"boot/vmlinuz", files.kernel}, {"boot/initramfs.xz", files.initramfs}});
  }
  create_output_directories(writer.out / "netboot");
  return files;
}

// Extensions the ISO already carries (an Image Factory ISO's) stay listed next to the embedded config.
// The layers the ISO's initramfs lists. The initramfs is read where the ISO's directory records put
// it in a mapping of the image (libarchive is the fallback), not copied out first; decompressing it
// to find /extensions.yaml is the costly part, so the build starts this on a thread of its own while
// it reads the rest of the ISO (docs/benchmarks.md, Talos section). Logs nothing: see
// report_iso_extensions.
std::vector<TalosExtensionLayer> read_iso_extensions(const fs::path& iso, const std::string& iso_location) {
  std::string location = iso_location + ":/boot/initramfs.xz";
  std::optional<ReadOnlyFileMapping> image;
  std::string_view initramfs;
  try {
    image.emplace(iso);
    auto bytes = iso_file_bytes(image->bytes(), locate_iso_files(image->bytes(), {"boot/initramfs.xz"}).front());
    initramfs = {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  } catch (const Error&) {
    image.reset();
  }
  if (image) return initramfs_extension_layers(initramfs, location);
  return initramfs_extension_layers(read_iso_text_file(iso, "boot/initramfs.xz"), location);
}

// read_iso_extensions, remembered in the cache by the ISO's SHA-256 (talos-extensions/<sha256>.json):
// the list depends on the ISO's bytes alone, and decompressing its initramfs (~0.12-0.19 s of a core
// for a 127 MiB ISO) was the longest step before a build's first node (docs/benchmarks.md, Talos
// section). `iso_digest` is waited for on this thread; a list read is written only once `checked` is
// ready (a pinned digest is the ISO's only once fetch has checked it: a broken promise, fetch failing,
// writes nothing). A cache that cannot be written costs only the next build's read.
std::vector<TalosExtensionLayer> read_iso_extensions_cached(const fs::path& cache_dir, std::shared_future<Sha256Digest> iso_digest,
                                                            std::shared_future<void> checked, const fs::path& iso,
                                                            const std::string& iso_location) {
  constexpr int format = 1;
  fs::path record = cache_dir / "talos-extensions" / (iso_digest.get().hex() + ".json");
  if (std::ifstream in{record}) {
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.value("format", 0) == format && j.contains("layers") && j["layers"].is_array()) {
      std::vector<TalosExtensionLayer> layers;
      for (const auto& l : j["layers"]) {
        if (!l.is_object()) break;
        layers.push_back({l.value("image", ""), l.value("name", ""), l.value("version", ""), l.value("author", ""),
                          l.value("description", ""), l.value("talos_version", "")});
      }
      if (layers.size() == j["layers"].size()) return layers;
    }
  }
  std::vector<TalosExtensionLayer> layers = read_iso_extensions(iso, iso_location);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& l : layers) {
    list.push_back({{"image", l.image}, {"name", l.name}, {"version", l.version}, {"author", l.author},
                    {"description", l.description}, {"talos_version", l.talos_version}});
  }
  try {
    checked.get();
    create_output_directories(record.parent_path());
    write_text_file_atomically(record, nlohmann::json{{"format", format}, {"layers", list}}.dump(2) + "\n", public_mode);
  } catch (const std::future_error&) {
    // fetch refused the ISO: the build fails there
  } catch (const std::exception& e) {
    log::debug("the ISO's extension list is not kept in the cache: ", e.what());
  }
  return layers;
}

void report_iso_extensions(const std::vector<TalosExtensionLayer>& layers) {
  for (const auto& layer : layers) {
    log::info("the ISO's initramfs has system extension ", layer.name, " ", layer.version,
              layer.name == "embedded-config" ? ": replaced by each node's own" : ": kept");
  }
}

// Each node's embedded-config archive (a squashfs and a zstd pass at level 18, a few ms a node), built
// in node order on a thread of its own from the start of step 4, so that the first node's remaster
// and every node's copy are not kept waiting for it (docs/benchmarks.md, Talos section).
// The archives depend only on the node's config, so the bytes are those built in line.
class EmbeddedConfigArchivesAhead {
 public:
  EmbeddedConfigArchivesAhead(const std::vector<NodePlan>& plans, std::int64_t epoch,
                              const std::vector<TalosExtensionLayer>& iso_extensions) {
    for (const auto& plan : plans) {
      promises_.emplace_back();
      archives_.emplace(plan.node->name, promises_.back().get_future());
    }
    worker_ = std::thread([this, &plans, epoch, &iso_extensions] {
      for (std::size_t i = 0; i < plans.size() && !stop_; ++i) {
        try {
          promises_[i].set_value(build_embedded_config_extension(plans[i].config_yaml, epoch, iso_extensions));
        } catch (...) {
          promises_[i].set_exception(std::current_exception());
        }
      }
    });
  }
  // Stops after the archive under way (a build that failed elsewhere).
  ~EmbeddedConfigArchivesAhead() {
    stop_ = true;
    worker_.join();
  }
  EmbeddedConfigArchivesAhead(const EmbeddedConfigArchivesAhead&) = delete;
  EmbeddedConfigArchivesAhead& operator=(const EmbeddedConfigArchivesAhead&) = delete;

  // The node's archive, waiting for it if need be; rethrows what building it threw.
  EmbeddedConfigExtension take(const TalosNode& node) {
    auto it = archives_.find(node.name);
    if (it == archives_.end()) throw Error("internal: no embedded-config archive was started for node " + node.name);
    return it->second.get();
  }

 private:
  std::deque<std::promise<EmbeddedConfigExtension>> promises_;  // a deque: set_value from the worker, never moved
  std::map<std::string, std::future<EmbeddedConfigExtension>> archives_;
  std::atomic<bool> stop_ = false;
  std::thread worker_;
};

// What every node's outputs are made from.
struct TalosNodeSources {
  const TalosInputs& inputs;
  const TalosIsoContents& iso;
  bool embed_config = false;  // Talos >= 1.12 reads an embedded config; older versions only the metal-iso volume
  const std::vector<TalosExtensionLayer>& iso_extensions;
  const NetbootBootFiles& netboot;
  EmbeddedConfigArchivesAhead* embedded_config_archives = nullptr;  // when embed_config and the iso output
};

// <node>-config.iso: the config alone, on a volume labelled metal-iso.
BuiltFile write_node_config_iso(TalosOutputWriter& writer, const NodePlan& plan) {
  log::info("node ", plan.node->name, ": writing the config ISO");
  fs::path target = writer.out / (plan.node->name + "-config.iso");
  write_config_iso(writer.start(target), plan.config_yaml, {"metal-iso", writer.source_date_epoch});
  return writer.finish(target);
}

std::span<const std::uint8_t> bytes_of(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

std::string without_leading_slash(const std::string& path) { return path.substr(path.find_first_not_of('/')); }

// After the first node's ISO (or a cached template): it becomes the template when the files that differ
// between nodes (`paths`, without the leading '/') can be found in it (they always can in what
// remaster_iso writes; otherwise every node is remastered).
std::optional<NodeIsoTemplate> make_node_iso_template(const fs::path& iso, const std::vector<std::string>& paths,
                                                      const TalosIsoUkis& ukis) {
  NodeIsoTemplate t;
  t.path = iso;
  t.bytes = ReadOnlyFileMapping(iso);
  try {
    t.placements = locate_iso_files(t.bytes.bytes(), paths);
    if (ukis.ukis_in_partition()) {
      t.partition = find_iso_efi_partition(iso);
      if (!t.partition || t.partition->size != ukis.partition()->size) throw Error("its EFI partition is not the input's size");
      t.input_partition = ukis.read_partition();
    }
  } catch (const Error& e) {
    log::info("each node's ISO is remastered from scratch: ", iso.string(), " cannot serve as their template (", e.what(), ")");
    return std::nullopt;
  }
  return t;
}

// Where the template's UKI copies hold their archive slots, or nullopt (and why, at debug level) when
// a node's UKIs must be edited whole: a UKI that cannot be balanced, a copy not found where expected.
// Without an archive (Talos < 1.12) there are no slots: a node with the same arguments has the
// template's UKIs. The template's bytes in each slot must be the first node's archive and zeros (only
// zeros in a cached template: `slots_emptied`), which checks the offsets found.
std::optional<TemplateUkiSlots> find_template_uki_slots(const NodeIsoTemplate& t, const TalosIsoUkis& ukis,
                                                        const UkiEdit& edit, const TalosIsoUkis::Applied& applied,
                                                        bool slots_emptied = false) {
  if (ukis.empty()) return std::nullopt;
  if (edit.append_to_initrd.empty()) return TemplateUkiSlots{edit.add_args, false, applied, {}};
  auto refuse = [&](const std::string& why) -> std::optional<TemplateUkiSlots> {
    log::debug(t.path.filename().string(), ": each node's UKIs are edited whole: ", why);
    return std::nullopt;
  };
  std::span<const std::uint8_t> image = t.bytes.bytes();
  // The template's partition read in place (FAT and directories only), not copied: a fresh 49 MiB
  // buffer costs ~0.3 s of page faults on the development VMs.
  std::optional<FileBlockDevice> file;
  std::optional<SubrangeBlockDevice> device;
  std::optional<FatFilesystem> fat;
  TemplateUkiSlots out{edit.add_args, true, applied, {}};
  for (const auto& at : ukis.append_slots(edit.add_args, edit.append_to_initrd.size())) {
    if (!at.slot) return refuse("/" + at.path + " has no room to balance its checksum");
    TemplateUkiSlot u{*at.slot, {}, 0, {}, {}};
    // File offsets in the UKI -> ISO offsets, through the file's extents.
    std::vector<FatFilesystem::Extent> extents;
    if (!at.in_partition) {
      auto placement = std::find_if(t.placements.begin(), t.placements.end(), [&](const auto& p) { return p.path == at.path; });
      if (placement == t.placements.end() || placement->size != u.slot.image_size) return refuse("/" + at.path + " is not where expected");
      extents.push_back({0, placement->data_offset, placement->size});
    } else {
      if (!t.partition) return refuse("no EFI partition");
      if (!fat) {
        file.emplace(t.path, FileBlockDevice::Access::read_only);
        device.emplace(*file, t.partition->offset, t.partition->size, t.path.string() + " EFI partition");
        fat.emplace(*device);
      }
      extents = fat->file_extents(at.path);
      std::uint64_t size = extents.empty() ? 0 : extents.back().file_offset + extents.back().length;
      if (size != u.slot.image_size) return refuse("EFI partition:/" + at.path + " is not the edited UKI's size");
      for (auto& e : extents) e.device_offset += t.partition->offset;
    }
    auto map = [&](std::uint64_t from, std::uint64_t length) {
      std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
      for (const auto& e : extents) {
        std::uint64_t begin = std::max(from, e.file_offset);
        std::uint64_t end = std::min(from + length, e.file_offset + e.length);
        if (begin < end) ranges.emplace_back(e.device_offset + (begin - e.file_offset), end - begin);
      }
      return ranges;
    };
    u.region_ranges = map(u.slot.archive_offset, u.slot.length);
    auto balance = map(u.slot.balance_offset, 2);
    if (balance.size() != 1 || balance.front().second != 2) return refuse("/" + at.path + "'s checksum word spans two clusters");
    u.balance_offset = balance.front().first;
    for (const auto& [offset, length] : u.region_ranges) {
      std::span<const std::uint8_t> part = image.subspan(offset, length);
      u.region.insert(u.region.end(), part.begin(), part.end());
    }
    u.balance = {image[u.balance_offset], image[u.balance_offset + 1]};
    std::vector<std::uint8_t> expected;
    if (!slots_emptied) expected.assign(edit.append_to_initrd.begin(), edit.append_to_initrd.end());
    expected.resize(u.slot.length, 0);
    if (u.region != expected) return refuse("/" + at.path + "'s archive is not where expected");
    out.ukis.push_back(std::move(u));
  }
  return out;
}

// The node's UKI patches through the template's slots, or nullopt when its UKIs need editing whole
// (other command-line arguments, an archive that ends in another 4 KiB). `job` keeps the bytes.
std::optional<std::vector<IsoRegionReplacement>> uki_slot_patches(const TemplateUkiSlots& slots, const TalosIsoUkis& ukis,
                                                                  const UkiEdit& edit, IsoDigestInFlight& job) {
  if (edit.add_args != slots.add_args || edit.append_to_initrd.empty() == slots.appended) return std::nullopt;
  if (!slots.appended) return std::vector<IsoRegionReplacement>{};  // the template's UKIs, byte for byte
  auto at = ukis.append_slots(edit.add_args, edit.append_to_initrd.size());
  if (at.size() != slots.ukis.size()) return std::nullopt;
  for (std::size_t i = 0; i < at.size(); ++i) {
    if (at[i].slot != slots.ukis[i].slot) return std::nullopt;
  }
  job.uki_slot_bytes.clear();
  for (const auto& u : slots.ukis) {
    job.uki_slot_bytes.push_back(uki_slot_bytes(u.slot, u.region, u.balance, edit.append_to_initrd));
  }
  // Spans into job.uki_slot_bytes, complete now (no reallocation after this point).
  std::vector<IsoRegionReplacement> regions;
  for (std::size_t i = 0; i < slots.ukis.size(); ++i) {
    const auto& bytes = job.uki_slot_bytes[i];
    std::size_t taken = 0;
    for (const auto& [offset, length] : slots.ukis[i].region_ranges) {
      regions.push_back({offset, std::span<const std::uint8_t>(bytes.region).subspan(taken, length)});
      taken += length;
    }
    regions.push_back({slots.ukis[i].balance_offset, std::span<const std::uint8_t>(bytes.balance)});
  }
  return regions;
}

// <node>.iso as a variant of the template: the node's files, their directory records and the EFI
// partition patched into a copy. nullopt when a file would need another number of blocks (the caller
// then remasters this node from scratch). The returned file's SHA-256 is a placeholder: the hash runs
// on while the next node is edited, and fill_late_digests puts it in place.
std::optional<BuiltFile> write_node_iso_variant(TalosOutputWriter& writer, const TalosIsoUkis& ukis, const UkiEdit& uki_edit,
                                                const std::string& config_yaml, const std::string& grub_cfg,
                                                bool embedded, const fs::path& target,
                                                std::optional<TalosIsoUkis::Applied>& uefi) {
  NodeIsoTemplate& t = *writer.node_iso_template;
  auto job = std::make_unique<IsoDigestInFlight>();
  job->target = target;
  job->config_yaml = config_yaml;
  job->grub_cfg = grub_cfg;
  job->embedded_segment = uki_edit.append_to_initrd;
  std::vector<IsoFileReplacement> files{{"config.yaml", bytes_of(job->config_yaml)}, {"boot/grub/grub.cfg", bytes_of(job->grub_cfg)}};
  if (embedded) files.push_back({std::string(talos_extension_initrd_iso_path).substr(1), bytes_of(job->embedded_segment)});
  // The node's UKIs: their archive slots patched in where the template's slots fit them, else edited
  // whole with its EFI partition. The small files' block counts are checked either way.
  std::optional<std::vector<IsoRegionReplacement>> slot_regions;
  if (t.uki_slots) slot_regions = uki_slot_patches(*t.uki_slots, ukis, uki_edit, *job);
  std::optional<std::vector<IsoBytePatch>> patches;
  std::string what = " with this node's files (";
  if (slot_regions) {
    patches = plan_iso_variant(t.bytes.size(), t.placements, files, *slot_regions);
    uefi = t.uki_slots->applied;
    what = t.uki_slots->appended ? " with this node's files and UKI archives (" : " with this node's files, the first node's UKIs (";
  } else {
    std::size_t set = free_partition_work(writer);
    std::vector<std::uint8_t>& partition = t.partition_work[set];
    reserve_on_huge_pages(partition, t.input_partition.size());
    partition.assign(t.input_partition.begin(), t.input_partition.end());
    if (!ukis.empty()) job->edited = ukis.edit(uki_edit, writer.uki_timestamp, partition);
    for (const auto& [path, index] : job->edited.in_tree) files.push_back({path, job->edited.images[index].image});
    std::vector<IsoRegionReplacement> regions;
    if (t.partition) regions.push_back({t.partition->offset, partition});
    patches = plan_iso_variant(t.bytes.size(), t.placements, files, regions);
    if (!ukis.empty()) uefi = job->edited.applied;
    if (t.partition) job->partition_work_index = set;
  }
  if (!patches) {
    log::debug(target.filename().string(), ": a file needs another number of blocks than in ", t.path.filename().string(),
               ": remastered from scratch");
    ukis.recycle(std::move(job->edited));
    uefi.reset();  // the remaster sets it
    return std::nullopt;
  }
  log::debug(target.filename().string(), ": a copy of ", t.path.filename().string(), what, patches->size(), " patches)");
  job->patches = std::move(*patches);
  const IsoDigestInFlight* in_flight = job.get();
  start_iso_digest(writer, ukis, std::move(job));
  copy_iso_variant(t.bytes.fd(), t.bytes.bytes(), in_flight->patches, writer.start(target), 0600);
  return writer.finish(target, Sha256Digest{});
}

// A node's config.yaml, grub.cfg and embedded-config archive in its ISO, padded with `fill` (newlines
// for the text files, which YAML and GRUB skip: the config is to_yaml's, which writes no `|+` block
// scalar that could take them in; zeros for the archive, which the kernel skips between initramfs
// archives) to whole 2048-byte blocks, and laid out after every other file. Their sizes, in
// the directory records near the start of the image, are then the same for nodes whose files take as
// many blocks, and two nodes' ISOs first differ at the UKI's appended archive, ~60% into the image:
// each node's SHA-256 starts from the template's state there (hash_iso_variant with checkpoints).
constexpr std::int32_t node_file_weight = -2;  // after the UKIs (-1, uki_boot_files.cpp) and the input's files (0)

std::string in_whole_iso_blocks(std::string bytes, char fill) {
  constexpr std::size_t block = 2048;
  bytes.resize((bytes.size() + block - 1) / block * block, fill);
  return bytes;
}

// A node's own files in its ISO (laid out last: node_file_weight), as write_node_iso pads them: what a
// remaster maps in (from work files of these names and modes) and what a cached template's key names.
struct NodeIsoFile {
  std::string path_in_image;
  std::uint32_t mode = 0;
  std::string work_name;
  FileMode work_mode;
  const std::string* content = nullptr;
};

std::vector<NodeIsoFile> node_iso_files(const std::string& config_yaml, const std::string* embedded_segment,
                                        const std::string& grub_cfg) {
  std::vector<NodeIsoFile> files{{"/config.yaml", 0400, "iso-config.yaml", config_mode, &config_yaml}};
  if (embedded_segment) {
    files.push_back({talos_extension_initrd_iso_path, 0400, "embedded-config.cpio.zst", config_mode, embedded_segment});
  }
  files.push_back({"/boot/grub/grub.cfg", 0444, "grub.cfg", public_mode, &grub_cfg});
  return files;
}

// The node's files and the ISO's tree UKIs: what differs between nodes' ISOs, as the template's
// placements are found for.
std::vector<std::string> varying_iso_paths(const std::vector<NodeIsoFile>& files, const TalosIsoUkis& ukis) {
  std::vector<std::string> paths;
  for (const auto& f : files) paths.push_back(without_leading_slash(f.path_in_image));
  for (const auto& p : ukis.tree_paths()) paths.push_back(p);
  return paths;
}

// For a build's first node ISO, with a fixed time: this build's template key, and the template kept
// under it by an earlier build, which then serves as this build's template (every node, the first too,
// a variant of it: no remaster). Anything amiss with a cached template only means remastering.
void look_up_cached_node_iso_template(TalosOutputWriter& writer, const TalosNodeSources& sources, const UkiEdit& uki_edit,
                                      const std::vector<NodeIsoFile>& files) {
  const TalosIsoUkis& ukis = sources.iso.ukis;
  IsoTemplateKeyParts& parts = writer.template_key_parts;
  // An unpinned local ISO's digest is being taken on a thread since the fetch: waited for here.
  parts.input_iso = sources.inputs.iso_digest.valid() ? sources.inputs.iso_digest.get() : sources.inputs.iso->sha256;
  parts.source_date_epoch = *writer.source_date_epoch;
  parts.volume_id = node_iso_volume_id;
  if (!ukis.empty()) parts.uki_args = uki_edit.add_args;
  for (const auto& f : files) parts.node_files.push_back({f.path_in_image, f.mode, node_file_weight, f.content->size()});
  writer.template_key = iso_template_key(parts);
  if (!writer.template_key) {
    log::debug("no node ISO template is cached: this program has no build ID");
    return;
  }
  if (!writer.cached_template_allowed) return;
  std::optional<CachedIsoTemplate> cached = writer.template_cache->find(*writer.template_key);
  if (!cached) return;
  auto refuse = [&](const std::string& why) {
    log::debug(cached->path.string(), ": not used as the node ISO template (", why, "): removed");
    cached->in_use.reset();  // this build's lease would keep it
    writer.template_cache->forget(*writer.template_key);
  };
  std::optional<NodeIsoTemplate> t;
  try {
    t = make_node_iso_template(cached->path, varying_iso_paths(files, ukis), ukis);
    if (t && !ukis.empty()) {
      t->uki_slots = find_template_uki_slots(*t, ukis, uki_edit, ukis.applied_with(uki_edit.add_args), true);
      // Without its slots, the template's UKIs would have to be replaced whole in every node.
      if (!t->uki_slots) t.reset();
    }
  } catch (const Error& e) {
    refuse(e.what());
    return;
  }
  if (!t) return refuse("its files or UKI archive slots are not where this build puts them");
  t->recorded_digest = cached->sha256;
  t->in_use = cached->in_use;
  writer.node_iso_template = std::move(t);
  writer.node_iso_template_tried = true;
  writer.template_from_cache = true;
  // Its hash starts now: every node's, the first's too, goes on from its checkpoints.
  writer.node_iso_template->own_digest = start_template_hash(*writer.node_iso_template);
  log::debug("node ISOs: variants of the template in the cache (", cached->path.string(), ")");
}

// The patches that turn the template (the first node's ISO) into what the cache keeps: the node's
// files and each UKI copy's archive slot zeroed, the slot's checksum word set for an empty slot. nullopt
// when the UKIs hold an archive whose slots were not found (it could not be removed).
std::optional<std::vector<IsoBytePatch>> template_scrub_patches(const NodeIsoTemplate& t, const std::vector<std::string>& node_paths,
                                                                bool archive_in_ukis) {
  if (archive_in_ukis && (!t.uki_slots || !t.uki_slots->appended)) return std::nullopt;
  std::vector<IsoBytePatch> patches;
  for (const auto& placement : t.placements) {
    if (std::find(node_paths.begin(), node_paths.end(), placement.path) == node_paths.end()) continue;
    patches.push_back({placement.data_offset, {}, std::vector<std::uint8_t>(placement.size, 0)});
  }
  if (archive_in_ukis) {
    for (const auto& u : t.uki_slots->ukis) {
      UkiSlotBytes empty = uki_slot_bytes(u.slot, u.region, u.balance, "");
      for (const auto& [offset, length] : u.region_ranges) patches.push_back({offset, {}, std::vector<std::uint8_t>(length, 0)});
      patches.push_back({u.balance_offset, {}, std::vector<std::uint8_t>(empty.balance.begin(), empty.balance.end())});
    }
  }
  std::sort(patches.begin(), patches.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
  return patches;
}

// A cached template whose bytes are not those recorded for it (bit rot, or an edit that kept its
// stamp): found only once every node was written from it, so the build is run again without it.
class CachedTemplateMismatch : public Error {
 public:
  using Error::Error;
};

// After the nodes (every ISO hash settled): a template this build remastered goes into the cache,
// scrubbed; a template that came from the cache is checked against the SHA-256 recorded for it, and a
// mismatch removes it and throws CachedTemplateMismatch before the build commits (its outputs are
// removed).
void settle_node_iso_template(TalosOutputWriter& writer, bool archive_in_ukis) {
  if (!writer.node_iso_template || !writer.template_key) return;
  NodeIsoTemplate& t = *writer.node_iso_template;
  if (writer.template_from_cache) {
    Sha256Digest digest = t.own_digest.get();
    if (digest != *t.recorded_digest) {
      writer.template_cache->forget(*writer.template_key);
      throw CachedTemplateMismatch("the node ISO template in the cache (" + t.path.string() +
                                   ") does not have the SHA-256 recorded when it was stored (" + digest.hex() +
                                   " instead of " + t.recorded_digest->hex() + "): it was removed");
    }
    return;
  }
  std::vector<std::string> node_paths;
  for (const auto& f : writer.template_key_parts.node_files) node_paths.push_back(without_leading_slash(f.path_in_image));
  std::optional<std::vector<IsoBytePatch>> scrub = template_scrub_patches(t, node_paths, archive_in_ukis);
  if (!scrub) {
    log::debug(t.path.filename().string(), ": not kept as a template (its UKIs' archive slots were not found)");
    return;
  }
  try {
    Sha256Digest digest = hash_iso_variant(t.bytes.bytes(), *scrub, t.checkpoints);
    writer.template_cache->store(*writer.template_key, writer.template_key_parts, digest, [&](const fs::path& file) {
      copy_iso_variant(t.bytes.fd(), t.bytes.bytes(), *scrub, file, 0644);
    });
    log::debug(t.path.filename().string(), ": kept in the cache as the node ISO template for later builds");
  } catch (const Error& e) {
    log::warning(e.what());
  }
}

// <node>.iso: the input ISO remastered with the node's config and kernel arguments (the first node's
// with libisoburn, unless a template is cached; the others as variants of it where they fit). Returns
// its manifest entry.
nlohmann::json write_node_iso(TalosOutputWriter& writer, const TalosNodeSources& sources, const NodePlan& plan,
                              const fs::path& node_work, TalosBuiltNode& built) {
  const TalosNode& node = *plan.node;
  const TalosIsoUkis& ukis = sources.iso.ukis;
  log::info("node ", node.name, ": writing the ISO");
  std::vector<std::string> add = with_metal_iso_arg(node.kernel_args);
  GrubConfigEdit edit{add, {}};
  // The node's own files fill whole blocks and come last in the ISO (in_whole_iso_blocks, node_file_weight).
  std::string config_yaml = in_whole_iso_blocks(plan.config_yaml, '\n');
  std::string embedded_segment;
  std::optional<TalosExtensionLayer> extension_layer;
  if (sources.embed_config) {
    // The `embedded-config` system extension, as Talos' imager adds it to the initramfs.
    EmbeddedConfigExtension extension = sources.embedded_config_archives->take(node);
    embedded_segment = in_whole_iso_blocks(std::move(extension.initramfs_segment), '\0');
    extension_layer = extension.layer;
    edit.append_initrds.push_back(talos_extension_initrd_iso_path);
  }
  std::string grub_cfg = in_whole_iso_blocks(edit_grub_config(sources.iso.grub_cfg, edit).text, '\n');
  std::vector<NodeIsoFile> node_files = node_iso_files(config_yaml, sources.embed_config ? &embedded_segment : nullptr, grub_cfg);
  fs::path target = writer.out / (node.name + ".iso");
  // The UKI's initramfs gets the same extension archive GRUB loads as a second initrd.
  UkiEdit uki_edit{add, embedded_segment};
  if (writer.template_cache && !writer.template_looked_up) {
    writer.template_looked_up = true;
    look_up_cached_node_iso_template(writer, sources, uki_edit, node_files);
  }
  std::optional<TalosIsoUkis::Applied> uefi;
  std::optional<BuiltFile> written;
  if (writer.node_iso_template) {
    written = write_node_iso_variant(writer, ukis, uki_edit, config_yaml, grub_cfg, sources.embed_config, target, uefi);
  }
  if (!written) {
    // The files libisoburn maps in, written only for a remaster (a variant patches them in from memory).
    log::debug(target.filename().string(), ": remastering the input ISO");
    // Not create_directories: after an interrupt's cleanup removed the work directory, this must not
    // make it again in the moment before the process ends.
    fs::create_directory(node_work);
    std::vector<IsoFileToAdd> files;
    for (const auto& f : node_files) {
      files.push_back({node_work / f.work_name, f.path_in_image, f.mode, node_file_weight});
      write_file_with_mode(files.back().source, *f.content, f.work_mode);
    }
    IsoRemaster request{sources.inputs.iso->path, writer.start(target), files, std::string(node_iso_volume_id),
                        writer.source_date_epoch, 0600};
    if (!ukis.empty()) uefi = ukis.apply(uki_edit, node_work, writer.uki_timestamp, request);
    remaster_iso(request);
    // ~100 MiB of edited UKI and EFI partition there: gone now rather than at the build's end.
    fs::remove_all(node_work);
    // The first remastered ISO is the template of the others, and of later builds' (the cache).
    if ((writer.derive_node_isos || writer.template_key) && !writer.node_iso_template_tried) {
      writer.node_iso_template_tried = true;
      written = writer.finish(target, Sha256Digest{});  // the digest follows
      std::vector<std::string> paths;
      for (const auto& file : request.files) paths.push_back(without_leading_slash(file.path_in_image));
      writer.node_iso_template = make_node_iso_template(target, paths, ukis);
      if (writer.node_iso_template && uefi) {
        try {
          writer.node_iso_template->uki_slots = find_template_uki_slots(*writer.node_iso_template, ukis, uki_edit, *uefi);
        } catch (const Error& e) {  // e.g. the FAT of its EFI partition not as our writer left it: the slower path
          log::debug(target.filename().string(), ": each node's UKIs are edited whole: ", e.what());
        }
      }
      if (writer.node_iso_template) {
        // The template's SHA-256 is its ISO's: taken from its mapping on a thread, as the variants'
        // are, while the next node is edited, instead of reading the ISO back here (~0.1 s a build).
        auto job = std::make_unique<IsoDigestInFlight>();
        job->target = target;
        start_iso_digest(writer, ukis, std::move(job));
      } else {
        written = describe_file(target, writer.digests);
      }
    } else {
      written = writer.finish(target);
    }
  }
  BuiltFile f = *written;
  built.files.push_back(f);
  built.config_method = sources.embed_config ? "embedded+metal-iso" : "metal-iso";
  nlohmann::json report = built_file_json(f, writer.out);
  report["config_method"] = built.config_method;
  if (extension_layer) {
    report["embedded_config"] = {{"extension", extension_layer->name},
                                 {"version", extension_layer->version},
                                 {"image", extension_layer->image}};
  }
  report["kernel_args"] = join_kernel_args(plan.iso_command_line);
  if (uefi) {
    report["uefi"] = {{"bootloader", "systemd-boot"},
                      {"ukis", ukis.locations()},
                      {"kernel_args", uefi->command_lines.empty() ? "" : uefi->command_lines.front()},
                      {"secure_boot_signature", uefi->signature_removed ? "removed" : "none"}};
  }
  return report;
}

// netboot/<node>/{vmlinuz, initramfs.xz, config.yaml, boot.ipxe} for `serve`, written as
// netboot/<node>.partial and renamed whole. Returns its manifest entry.
nlohmann::json write_netboot_directory(TalosOutputWriter& writer, const NetbootBootFiles& boot_files, const NodePlan& plan,
                                       TalosBuiltNode& built) {
  const TalosNode& node = *plan.node;
  log::info("node ", node.name, ": writing netboot files");
  fs::path dir = writer.out / "netboot" / node.name;
  fs::path dir_partial = writer.start(dir);
  fs::remove_all(dir_partial);
  create_output_directories(dir_partial);
  link_or_copy(boot_files.kernel, dir_partial / "vmlinuz");
  link_or_copy(boot_files.initramfs, dir_partial / "initramfs.xz");
  write_file_with_mode(dir_partial / "config.yaml", plan.config_yaml, config_mode);
  write_file_with_mode(dir_partial / "boot.ipxe", ipxe_script({node.name, plan.netboot_command_line}), public_mode);
  writer.partial.publish(dir_partial, dir);  // the earlier build's directory is kept until the build commits
  nlohmann::json files = nlohmann::json::array();
  for (const char* name : {"vmlinuz", "initramfs.xz", "config.yaml", "boot.ipxe"}) {
    BuiltFile f = describe_file(dir / name, writer.digests);
    built.files.push_back(f);
    files.push_back(built_file_json(f, writer.out));
  }
  return {{"files", files}, {"kernel_args", join_kernel_args(plan.netboot_command_line)}};
}

// Every output the profile asks for, for one node; `report` gets its manifest entry.
TalosBuiltNode write_node_outputs(const Profile& profile, TalosOutputWriter& writer, const TalosNodeSources& sources,
                                  const NodePlan& plan, nlohmann::json& report) {
  const TalosNode& node = *plan.node;
  TalosBuiltNode built;
  built.name = node.name;
  report = {{"name", node.name},
            {"hostname", node.hostname},
            {"machine_type", plan.config.machine_type()},
            {"config_sha256", plan.config_fingerprint.hex()},
            {"outputs", nlohmann::json::object()}};
  if (node.mac) report["mac"] = *node.mac;
  if (node.uuid) report["uuid"] = *node.uuid;
  fs::path node_work = writer.work.path() / node.name;  // made when a remaster needs it

  if (wants(profile, "config-iso")) {
    BuiltFile f = write_node_config_iso(writer, plan);
    built.files.push_back(f);
    report["outputs"]["config-iso"] = built_file_json(f, writer.out);
  }
  if (wants(profile, "iso")) report["outputs"]["iso"] = write_node_iso(writer, sources, plan, node_work, built);
  if (wants(profile, "netboot")) report["outputs"]["netboot"] = write_netboot_directory(writer, sources.netboot, plan, built);
  return built;
}

// Step 5: SHA256SUMS and manifest.json (config fingerprints only, never config text).
BuildRecord write_talos_build_record(const Profile& profile, const BuildOptions& options, const TalosInputs& inputs,
                                     const KnownTalosVersion& version, const SharedBootIsoPlan& shared,
                                     const TalosBuildResult& result, const nlohmann::json& node_reports) {
  const fs::path& out = options.output_dir;
  std::vector<BuiltFile> sums;
  if (result.shared_boot_iso) sums.push_back(*result.shared_boot_iso);
  for (const auto& n : result.nodes) sums.insert(sums.end(), n.files.begin(), n.files.end());
  nlohmann::json input_list = nlohmann::json::array();
  if (inputs.iso) input_list.push_back(input_json("talos-iso", *inputs.iso));
  if (inputs.kernel) input_list.push_back(input_json("talos-kernel", *inputs.kernel));
  if (inputs.initramfs) input_list.push_back(input_json("talos-initramfs", *inputs.initramfs));
  nlohmann::json manifest = manifest_base(profile, options.source_date_epoch);
  manifest["talos_version"] = {{"version", version.version.str()}, {"from", version.source}};
  manifest["outputs"] = profile.talos.outputs;
  manifest["inputs"] = input_list;
  manifest["nodes"] = node_reports;
  if (result.shared_boot_iso) {
    manifest["shared_boot_iso"] = built_file_json(*result.shared_boot_iso, out);
    manifest["shared_boot_iso"]["kernel_args_added"] = join_kernel_args(append_kernel_args(shared.shared_args, {metal_iso_arg}));
  }
  if (!options.only_nodes.empty()) {
    std::vector<std::string> names;
    for (const auto& node : profile.talos_nodes) names.push_back(node.name);
    keep_unbuilt_nodes(out, names, manifest, sums);
  }
  return write_build_record(out, sums, manifest, public_mode);
}

TalosBuildResult build_talos_outputs_once(const Profile& profile, const BuildOptions& options, bool cached_template_allowed) {
  std::vector<const TalosNode*> nodes = select_nodes(profile.talos_nodes, options.only_nodes, profile.file);
  // 1. configs
  std::vector<NodePlan> plans = plan_node_configs(profile, nodes);
  // 2. inputs. The ISO's extension list is needed for Talos >= 1.12 (embedded config), which the ISO's
  // volume id may be what tells. It is kept in the cache by the ISO's SHA-256
  // (read_iso_extensions_cached); a local ISO's is looked up (and on a miss read) while fetch takes a
  // pinned ISO's SHA-256, an unpinned one's once its digest is taken (TalosInputs::iso_digest, on a
  // thread beside the nodes): each costs ~0.1-0.2 s of a core (docs/benchmarks.md, Talos section).
  // Only read: nothing is written before fetch has checked a pinned checksum (the list's record is
  // written by the digest fetch checks).
  std::optional<TalosVersion> profile_version = talos_version_from_profile(profile);
  bool need_iso_extensions = wants(profile, "iso") && (!profile_version || profile_version->at_least(1, 12));
  fs::path cache_dir = options.fetch.cache_dir.empty() ? default_cache_dir() : options.fetch.cache_dir;
  std::future<std::vector<TalosExtensionLayer>> iso_extensions_read;
  // Ready once fetch has returned (after the future above: on an exception it goes first, as a broken
  // promise).
  std::promise<void> fetched;
  std::shared_future<void> fetch_checked = fetched.get_future().share();
  auto digest_now = [](const Sha256Digest& d) {
    std::promise<Sha256Digest> known;
    known.set_value(d);
    return known.get_future().share();
  };
  if (need_iso_extensions && profile.talos.iso && profile.talos.iso->sha256) {
    // A regular file only: opening a FIFO would block this thread, and fetch refuses anything else.
    std::error_code ec;
    if (auto path = local_artifact_path(*profile.talos.iso); path && fs::is_regular_file(*path, ec)) {
      iso_extensions_read = std::async(std::launch::async, [cache_dir, digest = digest_now(*profile.talos.iso->sha256), fetch_checked,
                                                            path = *path, location = profile.talos.iso->location] {
        return read_iso_extensions_cached(cache_dir, digest, fetch_checked, path, location);
      });
    }
  }
  TalosInputs inputs = fetch_talos_inputs(profile, options.fetch);
  fetched.set_value();
  if (need_iso_extensions && inputs.iso && !iso_extensions_read.valid()) {
    // By value: the future is declared before `inputs`, so on an exception it is waited for after
    // `inputs` is gone.
    std::shared_future<Sha256Digest> digest = inputs.iso_digest.valid() ? inputs.iso_digest : digest_now(inputs.iso->sha256);
    iso_extensions_read = std::async(std::launch::async, [cache_dir, digest, fetch_checked, path = inputs.iso->path,
                                                          location = inputs.iso->source.shown()] {
      return read_iso_extensions_cached(cache_dir, digest, fetch_checked, path, location);
    });
  }
  TalosIsoContents iso;
  if (inputs.iso) iso = read_talos_iso(profile, *inputs.iso);
  KnownTalosVersion version = choose_talos_version(profile, profile_version, inputs.iso.has_value(), iso);
  report_uki_editing(iso.ukis);
  // 3. command lines
  SharedBootIsoPlan shared = plan_command_lines(profile, inputs, iso, version.version, plans);

  // 4. outputs
  const OutputDirectoryLock output_lock(options.output_dir);  // and creates it
  WorkDirectory work(options.output_dir, "work-talos");
  PartialOutputs partial;
  DigestsByInode digests;
  TalosOutputWriter writer{options.output_dir, work, partial, digests, options.source_date_epoch,
                           options.source_date_epoch.value_or(static_cast<std::int64_t>(std::time(nullptr)))};
  TalosBuildResult result;
  result.talos_version = version.version.str();
  if (shared.write) result.shared_boot_iso = write_shared_boot_iso(writer, *inputs.iso, iso, shared);
  NetbootBootFiles netboot;
  if (wants(profile, "netboot")) netboot = prepare_netboot_boot_files(writer, inputs);
  bool embed_config = version.version.at_least(1, 12);
  std::vector<TalosExtensionLayer> iso_extensions;
  if (wants(profile, "iso") && !plans.empty()) {
    // The first node's UKI edit starts with the command lines, which do not need the extension list
    // below: done while it is still being read (~30 ms of ~70 ms waited for it; docs/benchmarks.md).
    iso.ukis.prepare_command_line_edits(with_metal_iso_arg(plans.front().node->kernel_args));
  }
  if (wants(profile, "iso") && embed_config) {
    iso_extensions = iso_extensions_read.valid() ? iso_extensions_read.get()
                                                 : read_iso_extensions(inputs.iso->path, inputs.iso->source.shown());
    report_iso_extensions(iso_extensions);
  }
  std::optional<EmbeddedConfigArchivesAhead> embedded_config_archives;
  if (wants(profile, "iso") && embed_config) {
    embedded_config_archives.emplace(plans, options.source_date_epoch.value_or(0), iso_extensions);
  }
  TalosNodeSources sources{inputs, iso, embed_config, iso_extensions, netboot,
                           embedded_config_archives ? &*embedded_config_archives : nullptr};
  writer.derive_node_isos = wants(profile, "iso") && plans.size() > 1;
  if (wants(profile, "iso") && options.source_date_epoch) {
    writer.template_cache.emplace(cache_dir);
    writer.cached_template_allowed = cached_template_allowed;
  }
  nlohmann::json node_reports = nlohmann::json::array();
  for (const auto& plan : plans) {
    nlohmann::json report;
    result.nodes.push_back(write_node_outputs(profile, writer, sources, plan, report));
    node_reports.push_back(std::move(report));
  }
  settle_iso_digests(writer, iso.ukis);
  settle_node_iso_template(writer, embed_config && !iso.ukis.empty());
  fill_late_digests(writer, result.nodes, node_reports);
  if (inputs.iso_digest.valid()) inputs.iso->sha256 = inputs.iso_digest.get();

  // 5. SHA256SUMS and manifest.json, and the outputs kept: all or nothing if interrupted.
  InterruptCleanup::hold_off([&] {
    BuildRecord record = write_talos_build_record(profile, options, inputs, version, shared, result, node_reports);
    result.checksums = record.checksums;
    result.manifest = record.manifest;
    partial.commit();
  });
  return result;
}

}  // namespace

// A cache is only ever a shortcut: a cached template that fails its check costs this build a second
// run (the first run's outputs are already gone), not an error.
TalosBuildResult build_talos_outputs(const Profile& profile, const BuildOptions& options) {
  try {
    return build_talos_outputs_once(profile, options, true);
  } catch (const CachedTemplateMismatch& e) {
    log::warning(e.what(), "; building the ISOs again without it");
  }
  return build_talos_outputs_once(profile, options, false);
}

}  // namespace aggrik8s::builder
