// `export`: what the site inventory derives for the tools downstream, as files they read unchanged.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "builder/build_output.hpp"
#include "cli/commands.hpp"
#include "cli/profile_command_support.hpp"
#include "core/error.hpp"
#include "site/ansible_inventory.hpp"
#include "site/nodes_file.hpp"
#include "site/site_inventory.hpp"
#include "site/terraform_export.hpp"

namespace aggrik8s::cli {

Command export_command() {
  CommandSpec spec{"export",
                   "ansible|terraform|nodes SITE",
                   "Derive the Ansible inventory, the Proxmox Terraform or serve's nodes file from a site",
                   "SITE is a site inventory (kind: site, docs/site.md); it is validated first, as `validate` does.\n"
                   "  ansible    a YAML inventory in rancherfederal/rke2-ansible's shape: rke2_cluster with\n"
                   "             rke2_servers / rke2_agents, per host ansible_host, node_ip, node_name,\n"
                   "             node_labels, node_taints; the RKE2 version and the token as a reference\n"
                   "             (ansible.token_lookup), never its value\n"
                   "  terraform  .tf.json for the bpg/proxmox provider: one proxmox_virtual_environment_vm per\n"
                   "             proxmox-vm machine (MAC, SMBIOS UUID, sizing, boot order, ISO); the API\n"
                   "             endpoint and token are variables (proxmox_endpoint, proxmox_api_token)\n"
                   "  nodes      the nodes file `serve --site` derives (docs/netboot.md), as YAML\n"
                   "Written to stdout (also with -o -), or with -o to FILE (replaced whole: written as FILE.partial,\n"
                   "then renamed; a symlink FILE is followed). A FILE that is the site, a profile or any file they\n"
                   "read (secrets, Talos patches, local inputs, overlays) is refused.",
                   {{"output", 'o', "FILE", "write to FILE instead of stdout ('-': stdout)"}},
                   2,
                   2};
  return {spec, [](const ParsedArguments& args) {
            const std::string& what = args.positional[0];
            const std::string& file = args.positional[1];
            if (what != "ansible" && what != "terraform" && what != "nodes") {
              throw UsageError("export what? 'ansible', 'terraform' or 'nodes', got '" + what + "'");
            }
            // Where the output goes, settled before the site is read: a file, not a directory; through a
            // symlink to where it points (an inventory linked into an rke2-ansible checkout stays linked).
            std::optional<std::filesystem::path> destination;
            if (auto out = args.value("output"); out && *out != "-") {
              if (out->empty()) throw UsageError("-o needs a file name (or '-' for stdout)");
              std::error_code ec;
              destination = std::filesystem::path(*out);
              // Followed by hand: weakly_canonical leaves a link whose target does not exist yet as it is.
              for (int hops = 0; hops < 40 && std::filesystem::is_symlink(*destination, ec); ++hops) {
                std::filesystem::path target = std::filesystem::read_symlink(*destination, ec);
                if (ec) break;
                destination = target.is_absolute() ? target : destination->parent_path() / target;
              }
              if (std::filesystem::is_directory(*destination, ec)) {
                throw UsageError("-o " + *out + " is a directory; give the file to write, e.g. " +
                                 (std::filesystem::path(*out) / (what == "ansible" ? "hosts.yml" : what == "terraform" ? "site.tf.json" : "nodes.yaml")).string());
              }
            }
            Diagnostics diagnostics;
            // Secrets are referenced by what is exported, never read: their files need not exist here.
            builder::ProfileCheckOptions options;
            options.check_secrets = false;
            auto loaded = site::load_site(file, diagnostics, options);
            print_diagnostics(diagnostics);
            if (!loaded) return exit_failure;
            std::string text;
            if (what == "ansible") {
              Diagnostics warnings;  // what rke2-ansible would trip over: said, the inventory still written
              text = site::ansible_inventory_yaml(*loaded, &warnings);
              print_diagnostics(warnings);
            } else if (what == "terraform") {
              text = site::terraform_json(*loaded);
            } else {
              text = to_yaml(site::derive_nodes_file(*loaded));
            }
            // "-o -" is stdout, as for most tools (it wrote a file named "-").
            if (destination) {
              const std::string out = *args.value("output");
              // The output replaces whatever is there: never one of the files the export was read from.
              // Compared as files, not names (./site.yaml, a symlink or a hard link to it are the site).
              for (const auto& input : loaded->input_files()) {
                std::error_code ec;
                if (std::filesystem::equivalent(*destination, input.path, ec)) {
                  throw Error("-o " + out + " is " + input.what + " this export reads (" + input.path.string() +
                              "): writing there would replace it; give another output file");
                }
              }
              builder::write_text_file_atomically(*destination, text, builder::FileMode::less_umask(0644));
            } else {
              std::fputs(text.c_str(), stdout);
            }
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
