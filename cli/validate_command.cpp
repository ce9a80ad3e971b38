#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "builder/talos/talos_build_checks.hpp"
#include "core/error.hpp"
#include "cli/commands.hpp"
#include "cli/netboot_command_support.hpp"
#include "cli/profile_command_support.hpp"
#include "site/site_inventory.hpp"
#include "site/ansible_inventory.hpp"
#include "site/terraform_export.hpp"

namespace aggrik8s::cli {

namespace {

nlohmann::json diagnostics_json(const Diagnostics& diagnostics) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : diagnostics.distinct()) {
    out.push_back({{"file", d.where.file},
                   {"line", d.where.line},
                   {"column", d.where.column},
                   {"severity", d.severity == Diagnostic::Severity::error ? "error" : "warning"},
                   {"message", d.message}});
  }
  return out;
}

// A site inventory as a whole, then each profile with the site's machines as its nodes and what build
// checks before any work for its talos-iso profiles.
bool validate_site(const std::string& path, bool json, nlohmann::json& report) {
  Diagnostics diagnostics;
  auto loaded = site::load_site(path, diagnostics);
  if (loaded) {
    for (const auto& [file, profile] : loaded->profiles) {
      if (profile.kind == builder::ProfileKind::talos_iso) builder::check_talos_profile(profile, diagnostics);
    }
    site::check_site_talos_roles(*loaded, &builder::talos_profile_machine_type, diagnostics);
    // What the exports would refuse (a VM on another Proxmox node than its ISO's storage, RKE2
    // profiles that disagree on the version), said now as warnings: the site builds, but its Day-2
    // hand-off would fail later.
    auto export_would = [&](const char* what, bool applies, auto&& derive) {
      if (!applies) return;
      try {
        (void)derive(*loaded);
      } catch (const Error& e) {
        diagnostics.warning({path, 0, 0}, std::string("export ") + what + " would refuse this site: " + e.what());
      }
    };
    bool has_vms = std::any_of(loaded->site.machines.begin(), loaded->site.machines.end(),
                               [](const site::Machine& m) { return m.platform == site::Platform::proxmox_vm; });
    bool has_rke2 = std::any_of(loaded->site.machines.begin(), loaded->site.machines.end(), [](const site::Machine& m) {
      return m.platform == site::Platform::rpi5 && (m.role == site::Role::server || m.role == site::Role::agent);
    });
    export_would("terraform", has_vms, [](const site::LoadedSite& l) { return site::terraform_json(l); });
    export_would("ansible", has_rke2, [&](const site::LoadedSite& l) { return site::ansible_inventory_yaml(l, &diagnostics); });
    if (diagnostics.has_errors()) loaded.reset();
  }
  if (!json) print_diagnostics(diagnostics);
  if (json) {
    nlohmann::json entry{{"file", path}, {"kind", "site"}, {"valid", loaded.has_value()},
                         {"diagnostics", diagnostics_json(diagnostics)}};
    if (loaded) {
      entry["name"] = loaded->site.name;
      nlohmann::json machines = nlohmann::json::array();
      for (const auto& m : loaded->site.machines) machines.push_back(m.name);
      entry["machines"] = machines;
    }
    report.push_back(entry);
  } else if (loaded) {
    std::size_t machines = loaded->site.machines.size();
    std::printf("%s: ok (site %s, %zu machine%s, %zu profile%s)\n", path.c_str(), loaded->site.name.c_str(), machines,
                machines == 1 ? "" : "s", loaded->profiles.size(), loaded->profiles.size() == 1 ? "" : "s");
  } else {
    std::fprintf(stderr, "%s: invalid (%zu error%s)\n", path.c_str(), diagnostics.distinct_error_count(),
                 diagnostics.distinct_error_count() == 1 ? "" : "s");
  }
  return loaded.has_value();
}

// serve's netboot configuration or nodes file, checked as `serve --check` checks it.
bool validate_serve_file(const std::string& path, ServeFileKind kind, bool json, nlohmann::json& report) {
  Diagnostics diagnostics;
  netboot::NetbootConfig config;
  if (kind == ServeFileKind::netboot_config) {
    config = netboot::read_netboot_config(path, diagnostics);
  } else {
    config.inventory = path;
  }
  bool valid = !diagnostics.has_errors();
  if (!json) print_diagnostics(diagnostics);
  nlohmann::json entry{{"file", path}, {"kind", kind == ServeFileKind::netboot_config ? "netboot-config" : "nodes-file"}};
  nlohmann::json problems = diagnostics_json(diagnostics);
  if (valid) {
    try {
      if (json) {
        // What the text form logs as warnings (an interface this machine lacks) belongs in the report.
        for (const auto& warning : netboot::check_netboot_configuration(config, &site_nodes_file).warnings) {
          problems.push_back({{"file", path}, {"line", 0}, {"column", 0}, {"severity", "warning"}, {"message", warning}});
        }
      } else {
        print_netboot_check(path, config);
      }
    } catch (const Error& e) {
      valid = false;
      if (!json) std::fprintf(stderr, "%s\n", e.what());
      problems.push_back({{"file", path}, {"line", 0}, {"column", 0}, {"severity", "error"}, {"message", e.what()}});
    }
  }
  if (!valid && !json) std::fprintf(stderr, "%s: invalid\n", path.c_str());
  entry["valid"] = valid;
  entry["diagnostics"] = problems;
  report.push_back(entry);
  return valid;
}

}  // namespace

Command validate_command() {
  CommandSpec spec{"validate",
                   "PROFILE|SITE|NETBOOT-CONFIG|NODES-FILE...",
                   "Check profiles, site inventories and serve's files without building or serving anything",
                   "Reports every problem in every profile as FILE:LINE:COLUMN: MESSAGE: unknown keys, wrong\n"
                   "types, missing fields, malformed checksums and addresses, secret files that cannot be read.\n"
                   "For talos-iso profiles also what build checks before any work: each machine config's\n"
                   "structure, every node's patches (FILE:LINE:COL of the failing operation, or NODE/FIELD),\n"
                   "and every kernel command line against what the kernel keeps (its cmdline_size, 2047 bytes\n"
                   "for Talos' kernels) with the boot loader's own bytes (GRUB's BOOT_IMAGE=..., iPXE's image\n"
                   "name). The ISO outputs' lines are read from talos.iso when it is a local file; for a download\n"
                   "validate checks Talos' default arguments plus the node's (a lower bound) and build the rest.\n"
                   "A site inventory (kind: site, docs/site.md) is checked as a whole: duplicate names, MACs,\n"
                   "serials, UUIDs and addresses; addresses outside every network or inside a DHCP pool; agents\n"
                   "with no server, no server that starts the cluster, workers with no control plane, an even\n"
                   "control plane (a warning); a profile whose kind does not fit the machine's platform or role (a\n"
                   "Talos role against its machine config's machine.type), or lacks the output its boot needs;\n"
                   "then every profile with the site's machines as its nodes.\n"
                   "serve's netboot configuration (netboot.yaml) and nodes files are checked as `serve --check`\n"
                   "checks them: loaded as a start would load them, nothing bound or written.",
                   {{"json", '\0', "", "machine-readable output"}},
                   1,
                   1000};
  return {spec, [](const ParsedArguments& args) {
            bool json = args.flag("json");
            nlohmann::json report = nlohmann::json::array();
            int failed = 0;
            for (const auto& path : args.positional) {
              if (site::is_site_file(path)) {
                if (!validate_site(path, json, report)) ++failed;
                continue;
              }
              if (auto kind = serve_file_kind(path); kind != ServeFileKind::none) {
                if (!validate_serve_file(path, kind, json, report)) ++failed;
                continue;
              }
              Diagnostics diagnostics;
              auto profile = load_profile_reporting(path, diagnostics, false);
              // What build checks before any work, by the same code: configs, patches, command lines.
              if (profile && profile->kind == builder::ProfileKind::talos_iso) {
                builder::check_talos_profile(*profile, diagnostics);
                if (diagnostics.has_errors()) profile.reset();
              }
              if (!json) print_diagnostics(diagnostics);
              if (!profile) ++failed;
              if (json) {
                nlohmann::json entry{{"file", path}, {"valid", profile.has_value()},
                                     {"diagnostics", diagnostics_json(diagnostics)}};
                if (profile) {
                  entry["name"] = profile->name;
                  entry["kind"] = builder::to_string(profile->kind);
                  entry["nodes"] = profile->node_names();
                }
                report.push_back(entry);
              } else if (profile) {
                auto nodes = profile->node_names();
                std::string list;
                for (const auto& n : nodes) list += (list.empty() ? "" : ", ") + n;
                std::printf("%s: ok (%s, %zu node%s: %s)\n", path.c_str(), builder::to_string(profile->kind),
                            nodes.size(), nodes.size() == 1 ? "" : "s", list.c_str());
              } else {
                std::fprintf(stderr, "%s: invalid (%zu error%s)\n", path.c_str(), diagnostics.distinct_error_count(),
                             diagnostics.distinct_error_count() == 1 ? "" : "s");
              }
            }
            if (json) std::printf("%s\n", nlohmann::json{{"profiles", report}, {"valid", failed == 0}}.dump(2).c_str());
            return failed == 0 ? exit_success : exit_failure;
          }};
}

}  // namespace aggrik8s::cli
