#!/usr/bin/env bash
# Rebuild-on-reboot Talos nodes (docs/netboot.md, "Rebuild-on-reboot Talos nodes"): serve in full-mode
# DHCP in a network namespace (10.98.14.1/24), a Talos profile with mode: ephemeral and one node with a
# machine config, booted by QEMU over PXE with the stand-in Talos (tests/fixtures/make-talos-iso: its
# /init wipes the STATE/EPHEMERAL markers of its virtio disk on talos.experimental.wipe= and reboots,
# or reports whether the marker of an earlier boot is there, fetches talos.config= and powers off).
# QEMU runs with -no-reboot, so a reboot ends the run and the next run is the reboot.
#   SeaBIOS + iPXE: power-on 1 = wipe boot (blank disk: the wipe fails, as Talos' does, and reboots)
#     + normal boot ("state: fresh", config delivered); power-on 2 = wipe boot (markers wiped) + normal
#     boot ("fresh" again: the wipe worked);
#   OVMF (EDK2 PXE -> ipxe.efi): a wipe boot, then serve is killed with SIGKILL and started again, and
#     the reboot still gets the normal boot (the cycle is in state_dir/talos-wipe.json).
# Checks one /ipxe request per boot, the boot event log's cycle and the metrics. Needs root, QEMU,
# busybox, the stand-in's build tools; skipped otherwise.
source "$(dirname "$0")/lib.bash"

MISSING=$(qemu_netboot_missing)
[ -z "$MISSING" ] || { echo "SKIP: needs" $MISSING; exit 0; }
make_talos_fixture
SRV=a8s-tpxe-$$
SERVE_PID=
trap 'qemu_lan_cleanup "$SRV"' EXIT
qemu_lan "$SRV" 10.98.14.1/24
pass "namespace $SRV: br0 10.98.14.1/24 with tap0"

MAC=52:54:00:98:14:02
NODE_ADDRESS=10.98.14.50
mkdir -p "$WORK/tftp" "$WORK/state"
cat >"$WORK/t1.yaml" <<'YAML'
version: v1alpha1
machine:
  type: worker
  token: e2e-SECRET-worker-token
cluster:
  controlPlane: {endpoint: "https://10.98.14.10:6443"}
YAML
chmod 600 "$WORK/t1.yaml"
# no_timer_check: under TCG on a loaded machine the kernel's IO-APIC timer check can fail and panic
# ("IO-APIC + timer doesn't work!"); panic=-1 turns any panic into a reboot that ends the QEMU run.
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  talos-ram:
    mode: ephemeral
    talos: {kernel: $TALOS_FIXTURE/vmlinuz-amd64, initramfs: $TALOS_FIXTURE/initramfs-amd64.xz, args: "console=ttyS0 no_timer_check panic=-1"}
nodes:
  - {name: talos-w1, match: {mac: "$MAC"}, profile: talos-ram, address: $NODE_ADDRESS, talos_config: {file: t1.yaml}}
unknown_nodes: {action: ignore}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.14.1}
tftp: {root: tftp}
http: {port: 8080}
inventory: nodes.yaml
boot_log: boot.jsonl
state_dir: state
dhcp: {mode: full, interface: br0, pool: 10.98.14.100-10.98.14.150, router: 10.98.14.1, lease_file: leases}
YAML
# serve is started twice, minutes apart: from a copy, so that a rebuild of the tree in between (other
# work in the same checkout) cannot replace the binary under the second start.
cp "$CLI" "$WORK/aggrik8s-image"
start_serve() {
  ip netns exec "$SRV" "$WORK/aggrik8s-image" serve --config "$WORK/netboot.yaml" >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 100); do
    [ "$(grep -c "dhcp: listening" "$WORK/serve.log")" -ge "$1" ] && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/serve.log" >&2
  fail "serve did not start"
}
start_serve 1
pass "serve (full-mode DHCP, a talos profile with mode: ephemeral) is up"

# The node's system disk, kept from run to run: what the stand-in's STATE/EPHEMERAL markers live on.
truncate -s 4M "$WORK/disk.img"
# boot_node NAME [QEMU ARGS...]: one QEMU run (one boot) on tap0, the serial console in $WORK/NAME.log.
boot_node() {
  local name=$1; shift
  ip netns exec "$SRV" timeout 150 qemu-system-x86_64 -m 512 -smp 1 -display none -monitor none -no-reboot "$@" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "virtio-net-pci,netdev=n0,mac=$MAC${NIC_EXTRA:-}" \
    -drive "file=$WORK/disk.img,if=virtio,format=raw" -boot n \
    -serial "file:$WORK/$name.log" </dev/null >"$WORK/$name.qemu" 2>&1 || true
  # A kernel message printed while a line of ours was on its way lands on the same console line
  # ("...@2.71s[    2.741971] IPv6: ..."): each goes back to a line of its own before lines are matched.
  sed -i -E 's/([^[:space:]])(\[ *[0-9]+\.[0-9]{6}\] )/\1\n\2/g; s/\r$//' "$WORK/$name.log" 2>/dev/null || true
}
expect_line() {  # expect_line NAME PATTERN WHAT: the stand-in printed a line matching PATTERN
  grep -aqE -- "^talos-standin: $2" "$WORK/$1.log" || {
    grep -a talos-standin "$WORK/$1.log" >&2 || tail -n 20 "$WORK/$1.log" >&2
    tail -n 20 "$WORK/serve.log" >&2
    fail "$1: $3: no line /talos-standin: $2/"
  }
  pass "$1: $3"
}
no_line() {
  ! grep -aqE -- "^talos-standin: $2" "$WORK/$1.log" || fail "$1: $3: unexpected /talos-standin: $2/"
  pass "$1: $3"
}
ipxe_requests() { grep -c "GET /ipxe?" "$WORK/serve.log" || true; }
# A wipe boot: the wipe argument on the kernel line, no config fetched, reboots (QEMU exits without "done").
wipe_boot() {
  local name=$1 result=$2; shift 2
  local before; before=$(ipxe_requests)
  boot_node "$name" "$@"
  expect_line "$name" "cmdline: .*talos.config=http://10.98.14.1:8080/talos/52-54-00-98-14-02/config.yaml talos.experimental.wipe=system:EPHEMERAL,STATE" \
    "the wipe boot's kernel line ends with talos.experimental.wipe=system:EPHEMERAL,STATE"
  expect_line "$name" "wipe: system:EPHEMERAL,STATE" "the stand-in wipes"
  expect_line "$name" "wipe-result: $result" "wipe result: $result"
  no_line "$name" "config-source:" "a wipe boot loads no config (Talos wipes before its config phase)"
  no_line "$name" "done" "a wipe boot reboots by itself"
  [ "$(ipxe_requests)" = $((before + 1)) ] || fail "$name: $(($(ipxe_requests) - before)) /ipxe requests in one boot"
  pass "$name: one /ipxe request in this boot"
}
normal_boot() {
  local name=$1; shift
  local before; before=$(ipxe_requests)
  boot_node "$name" "$@"
  no_line "$name" "cmdline: .*talos.experimental.wipe" "the normal boot has no wipe argument"
  expect_line "$name" "state: fresh" "starts from wiped STATE (no marker of an earlier boot)"
  expect_line "$name" "config-source: url http://10.98.14.1:8080/talos/52-54-00-98-14-02/config.yaml" \
    "the machine config comes from talos.config="
  expect_line "$name" "config: +token: e2e-SECRET-worker-token" "the node's own config"
  expect_line "$name" "done" "the normal boot ran to the end"
  [ "$(ipxe_requests)" = $((before + 1)) ] || fail "$name: $(($(ipxe_requests) - before)) /ipxe requests in one boot"
  pass "$name: one /ipxe request in this boot"
}

# ---- SeaBIOS + iPXE: two power-ons ----
wipe_boot bios-1-wipe "failed: failed to get volume status with label EPHEMERAL"
normal_boot bios-1-normal
wipe_boot bios-2-wipe "wiped EPHEMERAL STATE"
normal_boot bios-2-normal

# ---- OVMF: a wipe boot, serve killed and restarted, then its reboot ----
if [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] && [ -f /usr/lib/ipxe/ipxe.efi ]; then
  cp /usr/lib/ipxe/ipxe.efi "$WORK/tftp/ipxe.efi"
  ovmf_firmware ovmf
  NIC_EXTRA=,romfile= wipe_boot uefi-3-wipe "wiped EPHEMERAL STATE" "${OVMF_ARGS[@]}"
  grep -q '"served": "wipe"' "$WORK/state/talos-wipe.json" || fail "talos-wipe.json does not hold the wipe boot"
  kill -9 "$SERVE_PID"
  wait "$SERVE_PID" 2>/dev/null || true
  start_serve 2
  pass "serve killed with SIGKILL between the wipe boot and its reboot, and started again"
  NIC_EXTRA=,romfile= normal_boot uefi-3-normal "${OVMF_ARGS[@]}"
  grep -qE "dhcp: DISCOVER from $MAC -> OFFER 10.98.14.50 boot=uefi-x64 file=ipxe.efi" "$WORK/serve.log" ||
    fail "ovmf: EDK2 PXE was not offered ipxe.efi: $(grep dhcp: "$WORK/serve.log" | tail -n 5)"
  pass "ovmf: EDK2 PXE -> ipxe.efi -> iPXE -> the node's script"
  EXPECTED_CYCLE="wipe-boot:power-on-wipe wipe-cycle:wipe-files-fetched normal-boot:wipe-reboot-normal wipe-cycle:normal-files-fetched"
  EXPECTED_CYCLE="$EXPECTED_CYCLE $EXPECTED_CYCLE $EXPECTED_CYCLE"
else
  echo "note: OVMF or /usr/lib/ipxe/ipxe.efi missing: UEFI and the restart not tested"
  EXPECTED_CYCLE="wipe-boot:power-on-wipe wipe-cycle:wipe-files-fetched normal-boot:wipe-reboot-normal wipe-cycle:normal-files-fetched"
  EXPECTED_CYCLE="$EXPECTED_CYCLE $EXPECTED_CYCLE"
fi

# The boot event log tells the whole cycle, in order.
CYCLE=$(python3 -c '
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join(e["step"] + ":" + e["detail"].removeprefix("transition=") for e in steps
               if e["step"] in ("wipe-boot", "normal-boot", "wipe-cycle") and e["node"] == "talos-w1"))' "$WORK/boot.jsonl")
[ "$CYCLE" = "$EXPECTED_CYCLE" ] || fail "boot event log: got '$CYCLE', expected '$EXPECTED_CYCLE'"
pass "boot event log: wipe-boot, files, normal-boot, files, for every power-on"
[ "$(grep '"step":"talos-config"' "$WORK/boot.jsonl" | grep -c '"result":"ok"')" -ge 2 ] ||
  fail "the boot log has not every normal boot's talos-config step"
grep -q 'talos wipe cycle: node talos-w1 at 10.98.14.50: normal-boot (wipe-reboot-normal)' "$WORK/serve.log" ||
  fail "serve's log has no wipe cycle line"
pass "serve's log names the transitions"
grep -q 'e2e-SECRET' "$WORK/serve.log" "$WORK/boot.jsonl" && fail "the machine config reached a log"
pass "the machine config is in no log"

METRICS=$(ip netns exec "$SRV" curl -sf http://10.98.14.1:8080/metrics) || fail "no /metrics"
WIPES=$(grep -c 'wipe-boot:' <<<"${EXPECTED_CYCLE// /$'\n'}")
# After the restart the counters start again: the last serve saw only the normal boot under OVMF.
if [ -f "$WORK/uefi-3-normal.log" ]; then
  grep -q 'aggrik8s_talos_normal_boots_total{node="talos-w1"} 1' <<<"$METRICS" || fail "metrics: $(grep talos <<<"$METRICS")"
  grep -q 'aggrik8s_talos_wipe_cycle_state{node="talos-w1",state="normal-running"} 1' <<<"$METRICS" ||
    fail "metrics: $(grep talos <<<"$METRICS")"
else
  grep -q "aggrik8s_talos_wipe_boots_total{node=\"talos-w1\"} $WIPES" <<<"$METRICS" || fail "metrics: $(grep talos <<<"$METRICS")"
fi
grep -q 'aggrik8s_talos_wipe_transitions_total{node="talos-w1",transition="wipe-reboot-normal"} 1' <<<"$METRICS" ||
  fail "metrics: $(grep talos <<<"$METRICS")"
pass "metrics: boots, transitions and the cycle's state"
STATUS=$(ip netns exec "$SRV" curl -sf http://10.98.14.1:8080/status) || fail "no /status"
grep -q 'talos-ram (wipe cycle: normal boot running; next script: wipe boot (power-on-wipe))' <<<"$STATUS" ||
  fail "status page: $(grep -o 'talos-ram[^<]*' <<<"$STATUS")"
pass "status page: the node runs its normal boot, the next power-on is wiped"

kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
