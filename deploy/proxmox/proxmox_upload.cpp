#include "deploy/proxmox/proxmox_upload.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "deploy/proxmox/proxmox_client.hpp"
#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/secret.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

// Proxmox reads the token secret (a UUID) from a file that usually ends in a newline.
Secret load_token_secret(const SecretReference& reference) {
  std::string value = load_secret(reference).reveal();
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) value.pop_back();
  bool printable = !value.empty() && std::all_of(value.begin(), value.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c > ' ' && c != 0x7f;
  });
  // A control character would end or split the Authorization header.
  if (!printable) {
    throw Error(reference.where.str() + ": the Proxmox token secret in " + reference.describe() +
                " must be one line of printable characters");
  }
  return Secret(std::move(value));
}

ProxmoxUploadFile file_from_manifest(const nlohmann::json& entry, const fs::path& out_dir, const std::string& what) {
  if (!entry.is_object() || !entry.contains("file") || !entry["file"].is_string() || !entry.contains("size") ||
      !entry["size"].is_number_unsigned() || !entry.contains("sha256") || !entry["sha256"].is_string()) {
    throw Error((out_dir / "manifest.json").string() + ": " + what + " has no file, size and sha256");
  }
  ProxmoxUploadFile file;
  file.path = out_dir / entry["file"].get<std::string>();
  file.file_name = file.path.filename().string();
  file.size = entry["size"].get<std::uint64_t>();
  file.sha256 = entry["sha256"].get<std::string>();
  std::error_code ec;
  std::uintmax_t size = fs::file_size(file.path, ec);
  if (ec) throw Error(file.path.string() + ": cannot read it (" + ec.message() + "); build again");
  if (size != file.size) {
    throw Error(file.path.string() + ": is " + std::to_string(size) + " bytes, the manifest says " +
                std::to_string(file.size) + "; build again");
  }
  return file;
}

// Proxmox' tasks for an upload (moving the received file into the storage) take from milliseconds to
// a few seconds: ask soon, then once a second.
std::chrono::milliseconds poll_delay(int attempt) {
  return std::chrono::milliseconds(std::min(1000, 100 << std::min(attempt, 4)));
}

// What was uploaded from this output directory, to where: config ISOs are all the same size (a
// rebuilt one with a changed config is too), so "same size on the storage" alone would keep a stale
// config there. Holds volume names and sha256s, never a secret.
class UploadRecord {
 public:
  UploadRecord(fs::path file, const ProxmoxSettings& settings) : file_(std::move(file)) {
    target_ = {{"api_url", settings.api_url}, {"node", settings.node}, {"storage", settings.storage}};
    if (file_.empty()) return;
    std::ifstream in(file_);
    if (!in) return;
    try {
      record_ = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception&) {
      log::warning(file_.string(), ": not readable as JSON; starting it over");
    }
    if (!record_.is_object() || !record_.contains("uploads") || !record_["uploads"].is_array()) {
      record_ = {{"uploads", nlohmann::json::array()}};
    }
  }

  // The sha256 last uploaded from here to `volid` on this target, if any.
  std::optional<std::string> uploaded_sha256(const std::string& volid) const {
    for (const auto& u : record_["uploads"]) {
      if (matches(u, volid) && u.contains("sha256") && u["sha256"].is_string()) return u["sha256"].get<std::string>();
    }
    return std::nullopt;
  }

  // Written after every upload (under a temporary name, then renamed), so an interrupted run keeps
  // what it finished.
  void remember(const std::string& volid, const ProxmoxUploadFile& file) {
    if (file_.empty()) return;
    auto& uploads = record_["uploads"];
    for (auto it = uploads.begin(); it != uploads.end();) {
      it = matches(*it, volid) ? uploads.erase(it) : it + 1;
    }
    nlohmann::json entry = target_;
    entry["volid"] = volid;
    entry["size"] = file.size;
    entry["sha256"] = file.sha256;
    uploads.push_back(entry);
    fs::path partial = file_;
    partial += ".partial";
    {
      std::ofstream out(partial, std::ios::trunc);
      out << record_.dump(2) << "\n";
      if (!out) throw Error("cannot write " + partial.string());
    }
    fs::rename(partial, file_);
  }

 private:
  bool matches(const nlohmann::json& u, const std::string& volid) const {
    return u.is_object() && u.value("volid", "") == volid && u.value("api_url", "") == target_["api_url"] &&
           u.value("node", "") == target_["node"] && u.value("storage", "") == target_["storage"];
  }

  fs::path file_;
  nlohmann::json target_;
  nlohmann::json record_{{"uploads", nlohmann::json::array()}};
};

// The shape build writes (builder/talos/talos_image_builder.cpp), checked before anything is read from it.
bool is_build_manifest(const nlohmann::json& manifest) {
  if (!manifest.is_object() || !manifest.contains("profile") || !manifest["profile"].is_object() ||
      !manifest["profile"].contains("name") || !manifest["profile"]["name"].is_string()) {
    return false;
  }
  if (!manifest.contains("nodes") || !manifest["nodes"].is_array()) return false;
  return std::all_of(manifest["nodes"].begin(), manifest["nodes"].end(), [](const nlohmann::json& n) {
    return n.is_object() && n.contains("name") && n["name"].is_string() &&
           (!n.contains("outputs") || n["outputs"].is_object());
  });
}

}  // namespace

ProxmoxUploadDecision proxmox_upload_decision(const ProxmoxUploadFile& file, std::optional<std::uint64_t> size_there,
                                              const std::optional<std::string>& recorded_sha256, bool force) {
  using Action = ProxmoxUploadDecision::Action;
  if (!size_there) return {Action::upload, ""};
  if (!recorded_sha256) {
    if (force) return {Action::replace, "exists and this output directory did not upload it; --force: replacing it"};
    return {Action::conflict,
            "is already there, and this output directory did not upload it (no entry in its proxmox-uploads.json): "
            "another profile's node of the same name, or a build uploaded from another directory"};
  }
  if (*recorded_sha256 != file.sha256) {
    return {Action::replace, *size_there == file.size
                                 ? "exists with the same size, but this file changed since it was uploaded; replacing it"
                                 : "exists, and this file changed since it was uploaded; replacing it"};
  }
  if (*size_there != file.size) {
    return {Action::replace, "exists with another size than the file uploaded from here; replacing it"};
  }
  if (force) return {Action::replace, "was uploaded from here already; --force: uploading it again"};
  return {Action::skip, "was uploaded from here already (the same sha256)"};
}

std::vector<ProxmoxUploadFile> talos_iso_outputs(const Profile& profile, const fs::path& out_dir,
                                                 const std::vector<std::string>& only_nodes) {
  fs::path manifest_path = out_dir / "manifest.json";
  std::ifstream in(manifest_path);
  if (!in) throw Error(manifest_path.string() + ": cannot read it: build the profile first (or pass --out)");
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw Error(manifest_path.string() + ": not a manifest written by build");
  }
  if (!is_build_manifest(manifest)) {
    throw Error(manifest_path.string() + ": not a manifest written by build (no profile name or nodes list)");
  }
  std::string name = manifest["profile"]["name"].get<std::string>();
  if (name != profile.name) {
    throw Error(manifest_path.string() + ": holds the outputs of profile '" + name + "', not '" + profile.name + "'");
  }
  for (const auto& wanted : only_nodes) {
    bool built = std::any_of(manifest["nodes"].begin(), manifest["nodes"].end(),
                             [&](const nlohmann::json& n) { return n.value("name", "") == wanted; });
    if (!built) throw Error(manifest_path.string() + ": has no node named '" + wanted + "'");
  }
  std::vector<ProxmoxUploadFile> files;
  if (manifest.contains("shared_boot_iso")) {
    files.push_back(file_from_manifest(manifest["shared_boot_iso"], out_dir, "shared_boot_iso"));
  }
  for (const auto& node : manifest.value("nodes", nlohmann::json::array())) {
    std::string node_name = node.value("name", "");
    if (!only_nodes.empty() && std::find(only_nodes.begin(), only_nodes.end(), node_name) == only_nodes.end()) continue;
    for (const char* output : {"config-iso", "iso"}) {
      if (node.contains("outputs") && node["outputs"].contains(output)) {
        files.push_back(file_from_manifest(node["outputs"][output], out_dir, "node " + node_name + "'s " + output));
      }
    }
  }
  if (files.empty()) {
    throw Error(manifest_path.string() + ": the build wrote no ISO (talos.outputs has neither config-iso nor iso)");
  }
  return files;
}

std::vector<ProxmoxUploadOutcome> upload_to_proxmox(const ProxmoxSettings& settings,
                                                    const std::vector<ProxmoxUploadFile>& files,
                                                    const ProxmoxUploadOptions& options) {
  ProxmoxTarget target{settings.api_url, settings.node, settings.storage};
  std::vector<ProxmoxUploadOutcome> outcomes;
  auto volid_of = [&](const ProxmoxUploadFile& f) { return settings.storage + ":iso/" + f.file_name; };

  if (options.dry_run) {
    // The secret is not even loaded: nothing printed here can hold it.
    std::string text = "# dry run: these requests would be sent to " + settings.api_url + "; nothing is sent\n";
    text += describe_request(storage_content_request(target), settings.token_id);
    for (const auto& file : files) {
      text += "# " + file.file_name + ": uploaded unless " + volid_of(file) + " exists" +
              (options.force ? " (--force: uploaded anyway)"
                             : ": then skipped if " +
                                   (options.record_file.empty() ? std::string("the upload record")
                                                                : options.record_file.string()) +
                                   " says these bytes went there, else refused") + "\n";
      text += describe_request(iso_upload_request(target, file), settings.token_id);
      text += "#   then GET " + settings.api_url + "/nodes/" + percent_encode(settings.node) +
              "/tasks/{UPID}/status until \"stopped\", \"exitstatus\" \"OK\"\n";
      outcomes.push_back({file.file_name, volid_of(file), ProxmoxUploadOutcome::Action::planned});
    }
    std::fputs(text.c_str(), options.dry_run_output);
    std::fflush(options.dry_run_output);
    return outcomes;
  }

  if (!settings.verify_tls) {
    log::warning("proxmox.verify_tls is false: the API token goes to ", settings.api_url,
                 " without checking who answers");
  }
  ProxmoxClient client(settings.token_id, load_token_secret(settings.token_secret),
                       {settings.verify_tls, settings.ca_file, settings.fingerprint});
  ProxmoxRequest listing = storage_content_request(target);
  std::vector<ProxmoxVolume> present = parse_storage_content(client.send(listing), listing.what);

  UploadRecord record(options.record_file, settings);
  // Every file is decided before any is sent: a name conflict stops the run with nothing replaced.
  std::vector<ProxmoxUploadDecision> decisions;
  std::string conflicts;
  for (const auto& file : files) {
    std::string volid = volid_of(file);
    auto existing = find_iso_volume(present, settings.storage, file.file_name);
    decisions.push_back(proxmox_upload_decision(file, existing ? std::optional<std::uint64_t>(existing->size) : std::nullopt,
                                                record.uploaded_sha256(volid), options.force));
    if (decisions.back().action == ProxmoxUploadDecision::Action::conflict) {
      conflicts += "\n  " + volid + " (for " + file.file_name + ") " + decisions.back().why;
    }
  }
  if (!conflicts.empty()) {
    throw Error("not uploading to " + settings.storage + " on " + settings.node + ": files of these names are there" +
                conflicts + "\nNothing was replaced. `upload --force` (`build --upload --force-upload`) replaces them; "
                "give the profile's nodes other names to keep both");
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto& file = files[i];
    const auto& decision = decisions[i];
    std::string volid = volid_of(file);
    if (decision.action == ProxmoxUploadDecision::Action::skip) {
      log::info(file.file_name, ": on ", settings.storage, " on ", settings.node, " as ", volid, ": ", decision.why,
                "; skipped (--force uploads it again)");
      outcomes.push_back({file.file_name, volid, ProxmoxUploadOutcome::Action::skipped});
      continue;
    }
    if (decision.action == ProxmoxUploadDecision::Action::replace) {
      log::info(file.file_name, ": ", volid, " ", decision.why);
    }
    log::info(file.file_name, ": uploading ", format_byte_size(file.size), " to ", settings.storage, " on ",
              settings.node);
    ProxmoxRequest upload = iso_upload_request(target, file);
    std::string upid = parse_upload_task(client.send(upload), upload.what);
    log::debug(file.file_name, ": Proxmox task ", upid);
    auto deadline = std::chrono::steady_clock::now() + options.task_timeout;
    for (int attempt = 0;; ++attempt) {
      ProxmoxRequest poll = task_status_request(target, upid);
      ProxmoxTaskStatus status = parse_task_status(client.send(poll), poll.what);
      if (status.stopped) {
        if (status.exitstatus != "OK") {
          throw Error(upload.what + ": Proxmox task " + upid + " failed: " + status.exitstatus +
                      " (its log: Datacenter > Tasks, or `pvenode task log " + upid + "`)");
        }
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        throw Error(upload.what + ": Proxmox task " + upid + " still runs after " +
                    std::to_string(options.task_timeout.count()) + " s");
      }
      std::this_thread::sleep_for(poll_delay(attempt));
    }
    record.remember(volid, file);
    log::info(file.file_name, ": on ", settings.storage, " on ", settings.node, " as ", volid);
    outcomes.push_back({file.file_name, volid, ProxmoxUploadOutcome::Action::uploaded});
  }
  return outcomes;
}

}  // namespace aggrik8s::builder
