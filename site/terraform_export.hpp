#pragma once
// `aggrik8s-image export terraform SITE`: the site's Proxmox VMs as Terraform JSON (`.tf.json`) for the
// bpg/proxmox provider, one `proxmox_virtual_environment_vm` per `platform: proxmox-vm` machine, so the
// VMs Terraform creates carry exactly the MAC, SMBIOS UUID, boot order and ISO that the builds and
// `serve` expect. JSON rather than HCL because it can be checked here without Terraform: it is parsed
// and every attribute name is compared with a snapshot of the provider's documented schema
// (tests/fixtures/bpg-proxmox-vm-schema.json). See docs/site.md, "Terraform (Proxmox VMs)".
#include <string>

#include "site/site_inventory.hpp"

namespace aggrik8s::site {

// The provider version constraint written to required_providers: the schema snapshot was read from
// bpg/terraform-provider-proxmox after v0.111.1, and the `proxmox_virtual_environment_` resource names
// are kept until 1.0 (the provider's ADR-007 renames them then).
inline constexpr const char* bpg_proxmox_version_constraint = "~> 0.111";

// The whole `.tf.json` document, pretty-printed with a fixed key order (same site, same bytes). The API
// endpoint and token are Terraform variables (the token `sensitive`); no secret of the site or its
// profiles is read. Throws Error naming the machine (file:line:col of its entry) when a VM cannot be
// described for the provider: no `vm:` sizing, no MAC, `boot: disk` with a profile that writes no
// per-node ISO (the provider attaches one CD-ROM, see docs/site.md), or the site's proxmox.iso_storage
// differing from the storage the profile's `upload` puts the ISO on.
std::string terraform_json(const LoadedSite& site);

}  // namespace aggrik8s::site
