#pragma once
// Puts a talos-iso build's ISO outputs on a Proxmox VE storage (docs/proxmox.md, "Uploading to
// Proxmox"): the files `qm set --ide2 STORAGE:iso/NAME` attaches — the shared boot ISO, each node's
// config ISO and per-node ISO — read from the build's manifest.json.
//
// Order of work: list the storage's ISOs once; decide for every file (proxmox_upload_decision) before
// anything is sent, and stop if a file of that name is there that this output directory did not put
// there (unless forced); then upload each file not known to be there already (multipart POST, sha256
// for Proxmox to check) and poll the task Proxmox answers with until it stops; a task that stops with
// anything but "OK" is an error. A dry run prints each request (secret redacted) and sends nothing.
#include <chrono>
#include <cstdint>
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

// What to do with one file, from what the storage lists (its size there, if the name is taken) and
// what the output directory's record says was uploaded from it to that volume (its sha256). Proxmox
// lists no checksum and every config ISO has the same size, so a size alone proves nothing: a file is
// left in place only when the record says these very bytes went there; a name taken by a file the
// record does not know (another profile's node of the same name, another output directory's build)
// is a conflict, replaced only when forced.
struct ProxmoxUploadDecision {
  enum class Action { upload, replace, skip, conflict };
  Action action = Action::upload;
  std::string why;  // for the log: why it is replaced, skipped or refused
};
ProxmoxUploadDecision proxmox_upload_decision(const ProxmoxUploadFile& file, std::optional<std::uint64_t> size_there,
                                              const std::optional<std::string>& recorded_sha256, bool force);

struct ProxmoxUploadOptions {
  bool dry_run = false;
  bool force = false;  // upload even what the record says is there, and replace what it does not know
  // Remembers what was uploaded where from this output directory (volume, size, sha256; no secret).
  // Empty: no record, so every file of the same name on the storage is a conflict unless forced.
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
