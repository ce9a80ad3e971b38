#include <cstdio>

#include "deploy/proxmox/proxmox_upload.hpp"
#include "cli/commands.hpp"
#include "cli/profile_command_support.hpp"
#include "core/error.hpp"

namespace aggrik8s::cli {

void upload_talos_isos(const builder::Profile& profile, const std::filesystem::path& out_dir,
                       const std::vector<std::string>& only_nodes, bool dry_run, bool force, bool quiet_stdout) {
  if (profile.kind != builder::ProfileKind::talos_iso) {
    throw Error(profile.file.string() + ": only talos-iso profiles have outputs for Proxmox");
  }
  if (!profile.proxmox) {
    throw Error(profile.file.string() + ": has no 'proxmox' section (api_url, token_id, token_secret, node, "
                "storage) saying where to upload");
  }
  std::vector<builder::ProxmoxUploadFile> files = builder::talos_iso_outputs(profile, out_dir, only_nodes);
  builder::ProxmoxUploadOptions options;
  options.dry_run = dry_run;
  options.force = force;
  options.record_file = out_dir / "proxmox-uploads.json";
  options.dry_run_output = quiet_stdout ? stderr : stdout;
  auto outcomes = builder::upload_to_proxmox(*profile.proxmox, files, options);
  if (quiet_stdout) return;  // the uploader has logged each file
  for (const auto& outcome : outcomes) {
    if (outcome.action == builder::ProxmoxUploadOutcome::Action::uploaded) {
      std::printf("uploaded  %s\n", outcome.volid.c_str());
    } else if (outcome.action == builder::ProxmoxUploadOutcome::Action::skipped) {
      std::printf("present   %s  (uploaded from here already)\n", outcome.volid.c_str());
    }
  }
}

Command upload_command() {
  CommandSpec spec{
      "upload",
      "PROFILE",
      "Upload a talos-iso build's ISOs to the Proxmox storage in the profile",
      "Puts the ISO outputs of a finished build (read from DIR/manifest.json: the shared boot ISO, each\n"
      "node's config ISO and per-node ISO) on the storage named by the profile's 'proxmox' section,\n"
      "through the Proxmox VE API with an API token: POST /nodes/NODE/storage/STORAGE/upload\n"
      "(content=iso, with the sha256 for Proxmox to check), then the task is polled until it stops.\n"
      "DIR/proxmox-uploads.json records what was uploaded from DIR (by sha256): a file it says is there\n"
      "already is skipped; a file of the same name it does not know (another profile's node of that name,\n"
      "an upload from another directory) stops the upload before anything is sent, unless --force.\n"
      "TLS is verified (system CAs, or proxmox.ca_file, or a pinned proxmox.fingerprint).\n"
      "--dry-run prints each request (method, URL, headers with the token secret redacted, form\n"
      "fields, file name and size) and sends nothing. See docs/proxmox.md.",
      {{"out", 'o', "DIR", "the build's output directory (default: ./out/<profile name>)"},
       {"node", 'n', "NAME", "upload only this node's ISOs, and the shared boot ISO (repeatable)", true},
       {"dry-run", '\0', "", "print the requests instead of sending them"},
       {"force", '\0', "", "upload every file again, replacing files of the same name this directory did not upload"}},
      1,
      1};
  return {spec, [](const ParsedArguments& args) {
            Diagnostics diagnostics;
            // A dry run sends nothing, so it needs no secret: not even the token's file must exist yet.
            builder::ProfileCheckOptions checks;
            checks.check_secrets = !args.flag("dry-run");
            auto profile = load_profile_reporting(args.positional.front(), diagnostics, true, checks);
            if (!profile) return exit_failure;
            std::vector<std::string> nodes;
            if (auto it = args.values.find("node"); it != args.values.end()) nodes = it->second;
            upload_talos_isos(*profile, args.value("out").value_or("out/" + profile->name), nodes,
                              args.flag("dry-run"), args.flag("force"));
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
