#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "builder/rpi/rpi_image_builder.hpp"
#include "builder/talos/talos_build_checks.hpp"
#include "builder/talos/talos_image_builder.hpp"
#include "cli/commands.hpp"
#include "cli/profile_command_support.hpp"
#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"
#include "site/site_inventory.hpp"

namespace aggrik8s::cli {

namespace {

// One profile's build and its summary on stdout (the manifest itself with --json).
int build_profile(const builder::Profile& profile, const builder::BuildOptions& build, const ParsedArguments& args) {
  // --upload applies to talos-iso profiles (checked before any work by the callers).
  bool upload = args.flag("upload") && profile.kind == builder::ProfileKind::talos_iso;
  if (profile.kind == builder::ProfileKind::talos_iso) {
    builder::TalosBuildResult talos = builder::build_talos_outputs(profile, build);
    if (args.flag("json")) {
      std::ifstream manifest(talos.manifest);
      std::ostringstream text;
      text << manifest.rdbuf();
      std::fputs(text.str().c_str(), stdout);
      std::fflush(stdout);
      // With --json, stdout is the manifest alone: the upload's lines go to the log.
      if (upload) upload_talos_isos(profile, build.output_dir, build.only_nodes, false, args.flag("force-upload"), true);
      return exit_success;
    }
    if (talos.shared_boot_iso) {
      std::printf("%s  %s  (boot ISO with talos.config=metal-iso, %s)\n", talos.shared_boot_iso->sha256.hex().c_str(),
                  talos.shared_boot_iso->path.c_str(), format_byte_size(talos.shared_boot_iso->size).c_str());
    }
    for (const auto& node : talos.nodes) {
      for (const auto& f : node.files) std::printf("%s  %s\n", f.sha256.hex().c_str(), f.path.c_str());
    }
    std::printf("talos: %s\nmanifest: %s\nchecksums: %s\n", talos.talos_version.c_str(), talos.manifest.c_str(),
                talos.checksums.c_str());
    std::fflush(stdout);
    if (upload) upload_talos_isos(profile, build.output_dir, build.only_nodes, false, args.flag("force-upload"));
    return exit_success;
  }
  builder::BuildResult result = builder::build_rpi5_images(profile, build);
  if (args.flag("json")) {
    // The manifest is the machine-readable summary: print it as written.
    std::ifstream manifest(result.manifest);
    std::ostringstream text;
    text << manifest.rdbuf();
    std::fputs(text.str().c_str(), stdout);
    return exit_success;
  }
  for (const auto& node : result.nodes) {
    std::printf("%s  %s  (%s, first boot: %s)\n", node.image.sha256.hex().c_str(), node.image.path.c_str(),
                format_byte_size(node.image.size).c_str(), node.first_boot_format.c_str());
    if (node.bmap) std::printf("%s  %s\n", node.bmap->sha256.hex().c_str(), node.bmap->path.c_str());
    for (const auto& c : node.compressed) {
      std::printf("%s  %s  (%s)\n", c.sha256.hex().c_str(), c.path.c_str(), format_byte_size(c.size).c_str());
    }
    if (node.boot_image) {
      std::printf("%s  %s  (%s, HTTP boot)\n", node.boot_image->sha256.hex().c_str(), node.boot_image->path.c_str(),
                  format_byte_size(node.boot_image->size).c_str());
    }
    if (node.boot_signature) std::printf("%s  %s\n", node.boot_signature->sha256.hex().c_str(), node.boot_signature->path.c_str());
  }
  if (result.ephemeral_build) {
    std::printf("ephemeral build %s: %s (current; serve profile: rpi_ephemeral: {build: %s})\n",
                result.ephemeral_build->c_str(), result.ephemeral_directory.c_str(),
                result.ephemeral_directory.parent_path().c_str());
  }
  std::printf("manifest: %s\nchecksums: %s\n", result.manifest.c_str(), result.checksums.c_str());
  return exit_success;
}

builder::BuildOptions build_options_from(const ParsedArguments& args) {
  builder::BuildOptions build;
  build.source_date_epoch = builder::source_date_epoch_from_environment();
  build.sync_images = !args.flag("no-sync");
  build.fetch = fetch_options_from(args);
  return build;
}

// `build SITE`: every profile the site uses, with the site's machines as its nodes (or those --node
// names), each into <output>/<profile name>.
int build_site(const std::string& file, const ParsedArguments& args) {
  Diagnostics diagnostics;
  auto loaded = site::load_site(file, diagnostics);
  // What the profiles build against the roles the site gives (Terraform's tags, the control-plane checks).
  if (loaded) site::check_site_talos_roles(*loaded, &builder::talos_profile_machine_type, diagnostics);
  print_diagnostics(diagnostics);
  if (!loaded || diagnostics.has_errors()) return exit_failure;
  std::vector<std::string> wanted;
  if (auto it = args.values.find("node"); it != args.values.end()) wanted = it->second;
  for (const auto& name : wanted) {
    // A name the site does not have is an error rather than a silently smaller build.
    if (loaded->site.find(name) == nullptr) throw Error(file + ": no machine named '" + name + "'");
  }
  if (args.flag("upload")) {
    for (const auto& [path, profile] : loaded->profiles) {
      if (profile.kind == builder::ProfileKind::talos_iso && !profile.proxmox) {
        throw UsageError("--upload needs every talos-iso profile of the site to have a 'proxmox' section; " +
                         path.string() + " has none");
      }
    }
  }
  std::filesystem::path base = args.value("out") ? std::filesystem::path(*args.value("out")) : loaded->site.output;
  for (const auto& profile_file : loaded->site.profile_files()) {
    const builder::Profile& profile = loaded->profiles.at(profile_file);
    builder::BuildOptions build = build_options_from(args);
    for (const site::Machine* m : loaded->site.machines_of(profile_file)) {
      if (wanted.empty() || std::find(wanted.begin(), wanted.end(), m->name) != wanted.end()) {
        build.only_nodes.push_back(m->name);
      }
    }
    if (build.only_nodes.empty()) continue;
    build.output_dir = base / profile.name;
    if (!args.flag("json") && !args.flag("quiet")) {  // a progress line: -q keeps only the files built
      std::printf("== %s (%s): %zu machine%s -> %s\n", profile.name.c_str(), profile_file.filename().c_str(),
                  build.only_nodes.size(), build.only_nodes.size() == 1 ? "" : "s", build.output_dir.c_str());
      std::fflush(stdout);
    }
    int status = build_profile(profile, build, args);
    if (status != exit_success) return status;
  }
  return exit_success;
}

}  // namespace

Command build_command() {
  std::vector<OptionSpec> options{
      {"out", 'o', "DIR", "output directory (default: ./out/<profile name>; for a site: its output:)"},
      {"node", 'n', "NAME", "build only this node (a site: this machine) (repeatable)", true},
      {"json", '\0', "", "print a machine-readable summary of the outputs"},
      {"upload", '\0', "", "talos-iso: then upload the ISOs to the profile's Proxmox storage (as `upload`)"},
      {"force-upload", '\0', "", "with --upload: upload every ISO again, replacing files of the same name (as `upload --force`)"},
      {"no-sync", '\0', "",
       "rpi5-rke2: rename each image into place without waiting for it to reach the disk"},
  };
  for (auto& o : fetch_option_specs()) options.push_back(o);
  CommandSpec spec{"build", "PROFILE|SITE", "Build the images a profile (or a whole site) describes",
                   "Outputs per node: <node>.img (sparse), <node>.img.bmap, the compressed copies the profile asks\n"
                   "for, then SHA256SUMS and manifest.json. Files are written as *.partial and renamed when\n"
                   "complete (Pi images after an fdatasync, unless --no-sync); a failed or interrupted (Ctrl-C)\n"
                   "build removes what it wrote; a build into a directory another build is writing into fails at once.\n"
                   "With --node, SHA256SUMS and manifest.json keep the other nodes' entries while their files are\n"
                   "intact. With SOURCE_DATE_EPOCH set, every timestamp written is pinned and the same inputs\n"
                   "give byte-identical images; a talos-iso build then also keeps its\n"
                   "first node ISO, scrubbed of the node's config, in the cache (talos-templates/) for the next.\n"
                   "rpi5-rke2 builds keep their base grown to hold the preload in the cache (rpi-bases/), so a\n"
                   "later build with the same base and sizes copies it instead of running e2fsck and resize2fs.\n"
                   "rpi5-rke2 profiles with output.ephemeral also write ephemeral/<profile>/<build>/ (root.squashfs,\n"
                   "initramfs, per-node layers; current.json names the newest) for `serve`'s rpi_ephemeral\n"
                   "profiles (docs/profiles.md, \"Ephemeral output\"); output.disk_images: false writes only that.\n"
                   "rpi5-rke2 profiles with output.http_boot also write <node>.boot.img (0600) and <node>.boot.sig,\n"
                   "signed with its key, for Pi 5 HTTP boot from `serve` (docs/profiles.md, \"HTTP boot\").\n"
                   "talos-iso profiles write <node>-config.iso, <node>.iso and netboot/<node>/ (docs/proxmox.md);\n"
                   "--upload then puts the ISOs on the profile's Proxmox storage, as `aggrik8s-image upload` does.\n"
                   "A site inventory (kind: site, docs/site.md) builds every profile its machines use, with those\n"
                   "machines as the profile's nodes, into <output>/<profile name>/ (--out replaces <output>);\n"
                   "--node then names machines of the site.",
                   options, 1, 1};
  return {spec, [](const ParsedArguments& args) {
            InterruptCleanup::install();  // Ctrl-C leaves no unfinished outputs behind
            if (args.flag("force-upload") && !args.flag("upload")) throw UsageError("--force-upload needs --upload");
            const std::string& file = args.positional.front();
            if (site::is_site_file(file)) return build_site(file, args);
            Diagnostics diagnostics;
            auto profile = load_profile_reporting(file, diagnostics);
            if (!profile) return exit_failure;
            if (args.flag("upload") && (profile->kind != builder::ProfileKind::talos_iso || !profile->proxmox)) {
              // Refused before any work: a long build should not end in "nowhere to upload to".
              throw UsageError("--upload needs a talos-iso profile with a 'proxmox' section");
            }
            builder::BuildOptions build = build_options_from(args);
            build.output_dir = args.value("out").value_or("out/" + profile->name);
            if (auto it = args.values.find("node"); it != args.values.end()) build.only_nodes = it->second;
            return build_profile(*profile, build, args);
          }};
}

}  // namespace aggrik8s::cli
