# e2e: the example site (profiles/site-lab.yaml) round-trips with stand-in inputs. The site file is the
# example's own, only its profiles are swapped for ones that `extends:` the repository's example
# profiles and replace what users download (Raspberry Pi OS, the RKE2 release, the Talos ISO) by the
# fixtures served over loopback HTTP. Then: validate; build the whole site (7 Pi images incl. an
# ephemeral output, 5 Talos machines); every profile's SHA256SUMS; each machine's identity in its
# image (host name, address, RKE2 role and join URL, labels/taints) and in its Talos config; serve
# --site starts on the real outputs (every derived path exists) and boots an ephemeral Pi by its
# serial; export ansible (ansible-inventory --list), terraform (MAC/UUID per VM equal the site's), and
# status names each machine's built image by the sha256 SHA256SUMS has.
source "$(dirname "$0")/lib.bash"
make_fixtures
make_talos_fixture
start_http "$FIXTURES"
BASE_SHA=$(sha256sum "$FIXTURES/firstrun/raspios-lite-arm64.img.xz" | cut -d' ' -f1)
ISO_SHA=$(sha256sum "$TALOS_FIXTURE/metal-amd64.iso" | cut -d' ' -f1)
URL=http://127.0.0.1:$HTTP_PORT

# ---- the example site, its profiles on stand-in inputs ----
P=$WORK/profiles
mkdir -p "$P"
pi_inputs="base: {url: $URL/firstrun/raspios-lite-arm64.img.xz, sha256: $BASE_SHA}"
pi_rke2="version: v1.33.1+rke2r1, release_url: $URL/rke2, images: [rke2-images-core]"
for pair in servers:rpi5-rke2-server agents:rpi5-rke2-agent; do
  cat >"$P/${pair%%:*}.yaml" <<YAML
extends: $SRC/profiles/${pair#*:}.yaml
$pi_inputs
rke2: {$pi_rke2}
output: {image_size: null, root_free_space: 16MiB, compress: []}
YAML
done
# The example's busybox .deb is the user's download; the fixture image's own busybox is static.
cat >"$P/ephemeral.yaml" <<YAML
extends: $SRC/profiles/rpi5-rke2-ephemeral.yaml
$pi_inputs
rke2: {$pi_rke2}
output: {image_size: null, root_free_space: 16MiB, compress: [], ephemeral: {busybox: null, memory: 2GiB, runtime_reserve: 256MiB}}
YAML
for pair in talos-cp:talos-proxmox-controlplane talos-workers:talos-proxmox-worker; do
  cat >"$P/${pair%%:*}.yaml" <<YAML
extends: $SRC/profiles/${pair#*:}.yaml
talos: {version: null, iso: {url: $URL/talos/metal-amd64.iso, sha256: $ISO_SHA}}
YAML
done
sed -e "s#profile: rpi5-rke2-server.yaml#profile: profiles/servers.yaml#" \
    -e "s#profile: rpi5-rke2-agent.yaml#profile: profiles/agents.yaml#" \
    -e "s#profile: rpi5-rke2-ephemeral.yaml#profile: profiles/ephemeral.yaml#" \
    -e "s#profile: talos-proxmox-controlplane.yaml#profile: profiles/talos-cp.yaml#" \
    -e "s#profile: talos-proxmox-worker.yaml#profile: profiles/talos-workers.yaml#" \
    -e "s#boot_log: .*#boot_log: boot.jsonl#" \
    -e "s#token_lookup: .*#token_lookup: \"{{ lookup('file', '$SRC/profiles/example-secrets/rke2-token') }}\"#" \
    "$SRC/profiles/site-lab.yaml" >"$WORK/site.yaml"
[ "$(grep -c 'profile: profiles/' "$WORK/site.yaml")" = 12 ] || fail "every machine of the example site uses a stand-in profile"
cd "$WORK"

expect_status 0 "validate the site" -- "$CLI" validate site.yaml
expect_output "site.yaml: ok \(site lab, 12 machines, 5 profiles\)" "validate: 12 machines, 5 profiles"

# ---- build ----
export SOURCE_DATE_EPOCH=1767225600
# fetch SITE downloads every profile's inputs: the build then needs no network (--offline).
expect_status 0 "fetch the whole site's inputs" -- "$CLI" fetch --cache-dir "$WORK/cache" site.yaml
expect_status 0 "build the whole site" -- "$CLI" build --cache-dir "$WORK/cache" --offline --no-sync site.yaml
OUT=$WORK/out/lab
for f in lab-servers/cp1.img lab-servers/cp2.img lab-servers/cp3.img lab-agents/worker1.img lab-agents/worker2.img \
         lab-ephemeral/ephemeral/lab-ephemeral/current.json pve-controlplane/tcp1-config.iso \
         pve-controlplane/netboot/tcp3/config.yaml pve-workers/tw1.iso pve-workers/tw2.iso; do
  [ -e "$OUT/$f" ] || fail "build SITE did not write $OUT/$f"
done
pass "every machine's outputs under <output>/<profile name>/"
[ ! -e "$OUT/lab-ephemeral/eph-worker1.img" ] || fail "the ephemeral profile wrote disk images"
for d in lab-servers lab-agents lab-ephemeral pve-controlplane pve-workers; do
  (cd "$OUT/$d" && sha256sum -c --quiet SHA256SUMS) || fail "$d: SHA256SUMS does not match"
done
pass "sha256sum -c SHA256SUMS in every profile's output"

# What a machine's image says about it: its root filesystem, read with debugfs.
root_of() {  # root_of IMAGE -> path of the extracted root partition
  local start size
  start=$(partition_field "$1" 1 start)
  size=$(partition_field "$1" 1 size)
  dd if="$1" of="$WORK/root.ext4" bs=512 skip="$start" count="$size" conv=sparse status=none
  echo "$WORK/root.ext4"
}
root=$(root_of "$OUT/lab-servers/cp2.img")
e2fsck -fn "$root" >/dev/null || fail "cp2's root filesystem is not clean"
# Bookworm bases take host name and network settings at first boot, from firstrun.sh on the boot partition.
firstrun_of() {  # firstrun_of IMAGE FILE
  mcopy -n -i "$1@@$(( $(partition_field "$1" 0 start) * 512 ))" ::/firstrun.sh "$2" || fail "$1: no firstrun.sh"
}
firstrun_of "$OUT/lab-servers/cp2.img" "$WORK/cp2.firstrun.sh"
grep -q "cp2" "$WORK/cp2.firstrun.sh" || fail "cp2's host name in its first-boot settings"
debugfs -R "cat /etc/rancher/rke2/config.yaml" "$root" 2>/dev/null >"$WORK/cp2.rke2"
grep -q 'server: "\?https://10.0.10.11:9345' "$WORK/cp2.rke2" || { cat "$WORK/cp2.rke2" >&2; fail "cp2 joins cp1 (the site's first server)"; }
grep -q 'topology.kubernetes.io/zone=rack-a' "$WORK/cp2.rke2" || fail "cp2's label from the site"
grep -q 'CriticalAddonsOnly=true:NoExecute' "$WORK/cp2.rke2" || fail "cp2 keeps its profile's taint"
debugfs -R "cat /etc/rancher/rke2/config.yaml" "$(root_of "$OUT/lab-servers/cp1.img")" 2>/dev/null >"$WORK/cp1.rke2"
! grep -q '^server:' "$WORK/cp1.rke2" || fail "cp1 (the first server) must start the cluster, not join"
pass "RKE2 servers: cp1 starts the cluster, cp2 joins it, labels and taints from the site"
firstrun_of "$OUT/lab-agents/worker2.img" "$WORK/worker2.firstrun.sh"
grep -q "10.0.10.22/24" "$WORK/worker2.firstrun.sh" || fail "worker2's static address from the site is in its first-boot network settings"
pass "worker2's address from the site"
grep -q 'node.aggrik8s.io/ephemeral=true:PreferNoSchedule' <(tar -xOf "$OUT/lab-ephemeral/ephemeral/lab-ephemeral/$(python3 -c 'import json; print(json.load(open("out/lab/lab-ephemeral/ephemeral/lab-ephemeral/current.json"))["build"])')/nodes/eph-worker2/layer.tar" ./etc/rancher/rke2/config.yaml 2>/dev/null || true) ||
  fail "eph-worker2's taint from the site is in its layer's RKE2 config"
pass "eph-worker2's layer carries its taint"
grep -q 'rack-b' "$OUT/pve-controlplane/netboot/tcp3/config.yaml" || fail "tcp3's node label from the site is in its Talos config"
grep -q '10.0.20.13/24' "$OUT/pve-controlplane/netboot/tcp3/config.yaml" || fail "tcp3's address from the site"
pass "Talos: tcp3's address and label from the site in its machine config"

# ---- serve --site on the real outputs ----
mkdir -p "$WORK/state"
"$CLI" serve --site site.yaml --address 127.0.0.1 --tftp-port 0 --http-port 0 --boot-log boot.jsonl --state-dir "$WORK/state" 2>"$WORK/serve.log" &
SERVE_PID=$!
trap 'kill "$SERVE_PID" 2>/dev/null || true; [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true' EXIT
for _ in $(seq 600); do grep -q "http: listening on" "$WORK/serve.log" && break; kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
TFTP_PORT=$(sed -n 's/.*tftp: listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
[ -n "$TFTP_PORT" ] || { cat "$WORK/serve.log" >&2; fail "serve --site did not start on the built site"; }
pass "serve --site starts on the built site"
curl -sSf -o "$WORK/eph.config.txt" "tftp://127.0.0.1:$TFTP_PORT/a1b2c331/config.txt" || { cat "$WORK/serve.log" >&2; fail "eph-worker1's config.txt by its serial"; }
grep -q "initramfs" "$WORK/eph.config.txt" || fail "eph-worker1's config.txt boots the ephemeral initramfs"
pass "eph-worker1 (ephemeral) gets its boot config by serial"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true

# ---- export ----
expect_status 0 "export ansible" -- "$CLI" export ansible site.yaml -o hosts.yml
ANSIBLE_HOME=$WORK/ansible ANSIBLE_LOCAL_TEMP=$WORK/ansible/tmp ansible-inventory -i hosts.yml --list >"$WORK/inventory.json" 2>"$WORK/ansible.err" ||
  { cat "$WORK/ansible.err" >&2; fail "ansible-inventory cannot read the export"; }
python3 - "$WORK/inventory.json" <<'PY' || fail "ansible-inventory: groups and host vars"
import json, sys
inv = json.load(open(sys.argv[1]))
assert sorted(inv["rke2_servers"]["hosts"]) == ["cp1", "cp2", "cp3"], inv["rke2_servers"]
assert sorted(inv["rke2_agents"]["hosts"]) == ["eph-worker1", "eph-worker2", "worker1", "worker2"], inv["rke2_agents"]
hv = inv["_meta"]["hostvars"]
assert hv["worker2"]["node_ip"] == "10.0.10.22" and hv["worker2"]["ansible_host"] == "10.0.10.22"
assert "tcp1" not in hv, "Talos VMs are not RKE2 hosts"
PY
pass "ansible-inventory: servers, agents, node_ip; no Talos VM"
! grep -qF "$(cat "$SRC/profiles/example-secrets/rke2-token")" hosts.yml || fail "the RKE2 token's value is in the Ansible export"
expect_status 0 "export terraform" -- "$CLI" export terraform site.yaml -o vms.tf.json
python3 - vms.tf.json site.yaml <<'PY' || fail "terraform: one VM per proxmox-vm machine, MAC and UUID as in the site"
import json, sys, yaml
tf = json.load(open(sys.argv[1]))
site = yaml.safe_load(open(sys.argv[2]))
vms = tf["resource"]["proxmox_virtual_environment_vm"]
want = {m["name"]: m for m in site["machines"] if m["platform"] == "proxmox-vm"}
assert sorted(vms) == sorted(want), sorted(vms)
for name, m in want.items():
    vm = vms[name]
    assert vm["network_device"][0]["mac_address"].lower() == m["mac"].lower(), name
    assert vm["smbios"]["uuid"].lower() == m["uuid"].lower(), name
    assert vm["node_name"] == m["vm"]["node"], name
PY
pass "terraform: 5 VMs, MAC/UUID/node equal the site's"
expect_status 0 "export nodes" -- "$CLI" export nodes site.yaml -o nodes.yaml
[ "$(grep -c '^  - name:' nodes.yaml)" = 12 ] || fail "the derived nodes file has every machine"
pass "export nodes: 12 machines"

# ---- status ----
expect_status 0 "status" -- "$CLI" status --json site.yaml
cp "$WORK/last.out" "$WORK/status.json"
want=$(cd "$OUT/lab-servers" && sed -n 's/^\([0-9a-f]*\)  cp2.img$/\1/p' SHA256SUMS)
grep -q "$want" "$WORK/status.json" || { cat "$WORK/status.json" >&2; fail "status names cp2's image by its SHA256SUMS digest"; }
pass "status: cp2's built image by the sha256 SHA256SUMS has"
echo "site_round_trip: $CHECKS checks passed"
