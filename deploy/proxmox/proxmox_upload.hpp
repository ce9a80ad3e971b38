#pragma once
// Puts a talos-iso build's ISO outputs on a Proxmox VE storage (docs/proxmox.md, "Uploading to
// Proxmox"): the files `qm set --ide2 STORAGE:iso/NAME` attaches — the shared boot ISO, each node's
// config ISO and per-node ISO — read from the build's manifest.json.
//
// Order of work: list the storage's ISOs once; per file, skip it when the storage already holds a file
// of that name and size (unless forced, or the upload record says another file went there), else
// upload it (multipart POST, sha256 for Proxmox to check)
// and poll the task Proxmox answers with until it stops; a task that stops with anything but "OK" is
// an error. A dry run prints each request (secret redacted) and sends nothing.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "deploy/proxmox/proxmox_api.hpp"

namespace aggrik8s::builder {

// The ISO outputs listed in `out_dir`/manifest.json, shared boot ISO first, then per node (only the
// nodes in `only_nodes`, all when empty). Throws Error when the manifest belongs to another profile,
// names no ISO, or a file is missing or not the size the manifest says.
std::vector<ProxmoxUploadFile> talos_iso_outputs(const Profile& profile, const std::filesystem::path& out_dir,
                                                 const std::vector<std::string>& only_nodes = {});

struct ProxmoxUploadOptions {
  bool dry_run = false;
  bool force = false;  // upload even when the storage has a file of the same name and size
  // Remembers what was uploaded where (volume, size, sha256; no secret): a file of the same name and
  // size on the storage is skipped unless this record says a different file went there from here.
  // Empty: no record, size alone decides.
  std::filesystem::path record_file;
  std::FILE* dry_run_output = stdout;
  std::chrono::seconds task_timeout{1800};
};

struct ProxmoxUploadOutcome {
  enum class Action { uploaded, skipped, planned };
  std::string file_name;
  std::string volid;  // "local:iso/cp1.iso"
  Action action = Action::planned;
};

std::vector<ProxmoxUploadOutcome> upload_to_proxmox(const ProxmoxSettings& settings,
                                                    const std::vector<ProxmoxUploadFile>& files,
                                                    const ProxmoxUploadOptions& options);

}  // namespace aggrik8s::builder
