# e2e: what `validate SITE` promises, through the CLI, for what the unit tests cannot see alone.
# A Talos machine whose role does not fit its profile's machine config (the example configs, read
# as build reads them): validate and build refuse it, at the machine's role line. export -o never
# replaces one of the files the export reads.
source "$(dirname "$0")/lib.bash"

# The example profiles and their secrets (0600, as the secret checks want), the overlays beside them.
cp -r "$SRC/profiles" "$WORK/p"
cp -r "$SRC/overlays" "$WORK/overlays"
chmod 600 "$WORK"/p/example-secrets/*

talos_site() {  # talos_site ROLE-OF-TCP1 ROLE-OF-TW1 > site
  cat <<Y
kind: site
name: roles
networks:
  pve-lan: {subnet: 10.0.20.0/24, gateway: 10.0.20.1}
proxmox: {nodes: [pve1]}
machines:
  - {name: tcp1, platform: proxmox-vm, mac: "bc:24:11:00:20:11", address: 10.0.20.11/24,
     role: $1, profile: talos-proxmox-controlplane.yaml, boot: netboot, vm: {node: pve1, vmid: 211}}
  - {name: tw1, platform: proxmox-vm, mac: "bc:24:11:00:20:21", address: 10.0.20.21/24,
     role: $2, profile: talos-proxmox-worker.yaml, boot: disk, vm: {node: pve1, vmid: 221}}
Y
}
talos_site controlplane worker >"$WORK/p/roles.yaml"
expect_status 0 "validate: Talos roles that fit their machine configs" -- "$CLI" validate "$WORK/p/roles.yaml"
talos_site controlplane controlplane >"$WORK/p/roles.yaml"
expect_status 1 "validate: role controlplane with a worker config" -- "$CLI" validate "$WORK/p/roles.yaml"
expect_output "roles.yaml:10:12: machine 'tw1' has role controlplane, but its talos-iso profile talos-proxmox-worker.yaml builds worker nodes \(machine.type worker in its machine config, file .*/example-secrets/worker.yaml\)" \
  "the error names the machine, its role line and the config's machine.type"
expect_status 1 "build: refused before any work" -- "$CLI" build --no-sync "$WORK/p/roles.yaml"
expect_output "machine 'tw1' has role controlplane, but its talos-iso profile" "build says why"
[ -e "$WORK/p/out" ] && fail "build wrote outputs for a refused site"
pass "build wrote nothing"
talos_site worker controlplane >"$WORK/p/roles.yaml"  # the roles swapped: the role counts are fooled
expect_status 1 "validate: role worker with a control plane config" -- "$CLI" validate "$WORK/p/roles.yaml"
expect_output "roles.yaml:8:12: machine 'tcp1' has role worker, but its talos-iso profile talos-proxmox-controlplane.yaml builds control plane nodes" \
  "a worker on a control plane config is refused too"

# export -o never replaces a file the export reads: the site, a profile (or a file it extends), a
# secret, however the path is spelled (compared as files).
cat >"$WORK/p/pis.yaml" <<'Y'
kind: site
name: lab
networks:
  pi-lan: {subnet: 10.0.10.0/24, gateway: 10.0.10.1, dns: [10.0.10.1]}
machines:
  - {name: cp1, platform: rpi5, serial: a1b2c311, address: 10.0.10.11/24, role: server, profile: rpi5-rke2-server.yaml, boot: disk}
Y
cp "$WORK/p/pis.yaml" "$WORK/pis.yaml.orig"
ln -s pis.yaml "$WORK/p/pis-link.yaml"
for out in "$WORK/p/pis.yaml" "$WORK/p/../p/pis-link.yaml" "$WORK/p/rpi5-rke2-server.yaml" \
  "$WORK/p/common/rpi5-rke2-base.yaml" "$WORK/p/example-secrets/rke2-token"; do
  [ -e "$out" ] || fail "test set-up: $out does not exist"
  cp -L "$out" "$WORK/before"
  expect_status 1 "export -o $(basename "$out") refused" -- "$CLI" export ansible "$WORK/p/pis.yaml" -o "$out"
  expect_output "-o .* is (the site file|a profile|a secret file) this export reads \(.*\): writing there would replace it" \
    "the refusal says what $(basename "$out") is"
  cmp -s "$WORK/before" "$out" || fail "export -o replaced $out"
done
pass "no input was replaced"
expect_status 0 "export -o another file still works" -- "$CLI" export ansible "$WORK/p/pis.yaml" -o "$WORK/hosts.yml"
cmp -s "$WORK/p/pis.yaml" "$WORK/pis.yaml.orig" || fail "the site changed"
pass "the site is unchanged"

echo "site_validate_cli: $CHECKS checks passed"
