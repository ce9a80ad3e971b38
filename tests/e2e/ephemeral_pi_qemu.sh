#!/usr/bin/env bash
# e2e: an ephemeral (diskless, RAM-only) Raspberry Pi 5 node, emulated. `build` writes the profile's
# ephemeral output; `serve` (full-mode DHCP, TFTP, HTTP) runs in a network namespace this script
# creates. Each boot is what a Pi does: the scripted Pi 5 bootloader (tests/tools/dhcp_pi5_client.py,
# the node's MAC and serial, in its own namespace on the same bridge) gets a lease and fetches
# <serial>/config.txt, the kernel, cmdline.txt and the initramfs over TFTP exactly as the EEPROM
# bootloader does; then qemu-system-aarch64 -M virt boots that kernel, initramfs and command line with
# a virtio NIC of the same MAC on the bridge. Our initramfs brings the link up with DHCP, downloads
# the root squashfs into RAM, checks its sha256, mounts it under a tmpfs overlay, fetches the node's
# identity and switches root. The root's overlay runs a check script first that prints the host name,
# a hash of the RKE2 node password and of the SSH host key, whether the marker it writes on every boot
# exists already, and which build it is.
# Boots: 1 (first), 2 (after kill -9 and restart of serve: same identity, marker gone), 3 (after a
# rebuild with a changed profile: the new build, same identity). Plus: an unknown serial gets nothing,
# the identity is refused to another address, and builds whose root cannot fit the node's memory or
# whose kernel lacks a module are refused with the numbers / the module's name.
source "$(dirname "$0")/lib.bash"
command -v qemu-system-aarch64 >/dev/null || fail "qemu-system-aarch64 is not installed (scripts/setup)"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 0; }
[ -c /dev/net/tun ] || { echo "SKIP: needs /dev/net/tun"; exit 0; }
START=$(date +%s)
make_fixtures
start_http "$FIXTURES"

SRV=a8s-eph-$$
PI=a8s-ephpi-$$
MAC=52:54:00:98:06:21
SERIAL=9ffefd21
SERVE_PID=
cleanup() {
  [ -z "$SERVE_PID" ] || kill -9 "$SERVE_PID" 2>/dev/null || true
  qemu_lan_cleanup "$SRV" "$PI"
}
trap cleanup EXIT

TOKEN=K10ephemeral-e2e-secret-token::server:0123456789
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"

# The node's checks, run by busybox init before the fixture's rcS (which powers off with
# fixture.poweroff on the command line).
OV=$WORK/overlay
mkdir -p "$OV/etc/acc" "$OV/usr/local/sbin"
echo "build one" >"$OV/etc/acc/build.txt"
cat >"$OV/etc/inittab" <<'EOF'
::sysinit:/usr/local/sbin/acc-ephemeral-checks
::sysinit:/etc/init.d/rcS
::askfirst:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
EOF
cat >"$OV/usr/local/sbin/acc-ephemeral-checks" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
[ -e /proc/mounts ] || mount -t proc proc /proc
say() { echo "ephemeral-check: $*"; }
say "hostname $(cat /etc/hostname)"
say "node-password $(sha256sum </etc/rancher/node/password | cut -c1-64) mode $(stat -c '%a %u:%g' /etc/rancher/node/password)"
say "ssh-host-key $(sha256sum </etc/ssh/ssh_host_ed25519_key.pub | cut -c1-64) mode $(stat -c '%a' /etc/ssh/ssh_host_ed25519_key)"
say "machine-id $(cat /etc/machine-id)"
say "rke2-config mode $(stat -c '%a %u:%g' /etc/rancher/rke2/config.yaml) token-lines $(grep -c '^token:' /etc/rancher/rke2/config.yaml)"
say "marker $([ -e /var/lib/acc-marker ] && echo present || echo absent)"
say "build $(cat /etc/acc/build.txt)"
say "root $(awk '$2 == "/" {print $1, $3}' /proc/mounts | tail -n 1)"
say "first-boot-unit $(readlink /etc/systemd/system/sysinit.target.wants/aggrik8s-first-boot.service) script $(stat -c '%a %u:%g' /usr/local/lib/aggrik8s/first-boot.sh) userconfig $(readlink /etc/systemd/system/userconfig.service)"
say "fstab-active $(grep -v '^#' /etc/fstab | awk 'NF {print $2}' | tr '\n' ' ')"
date >/var/lib/acc-marker
EOF
chmod 0755 "$OV/usr/local/sbin/acc-ephemeral-checks"

sha=$(sha256sum "$FIXTURES/firstrun/raspios-lite-arm64.img.xz" | cut -d' ' -f1)
write_profile() {  # write_profile FILE [EPHEMERAL-SETTINGS]
  cat >"$1" <<YAML
kind: rpi5-rke2
name: eph-test
base: {url: "http://127.0.0.1:$HTTP_PORT/firstrun/raspios-lite-arm64.img.xz", sha256: $sha}
rke2:
  version: v1.33.1+rke2r1
  release_url: http://127.0.0.1:$HTTP_PORT/rke2
  images: [rke2-images-core]
  role: agent
  server: "https://10.0.0.1:9345"
  token: {file: token}
output: {root_free_space: 16MiB, bmap: false, disk_images: false, ephemeral: ${2:-{memory: 1GiB, runtime_reserve: 256MiB\}}}
overlays: [overlay]
nodes:
  - name: w1
    system:
      hostname: worker-1
      users: [{name: ops, ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEphemeralE2eKey000000000000000000000000 ops@e2e"]}]
    boot: {kernel_page_size_kib: 4, cmdline: [fixture.poweroff]}
YAML
}
write_profile "$WORK/eph.yaml"
expect_status 0 "build the ephemeral output" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out" "$WORK/eph.yaml"
BUILDS=$WORK/out/ephemeral/eph-test
BUILD1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["build"])' "$BUILDS/current.json")
[ -f "$BUILDS/$BUILD1/root.squashfs" ] || fail "no root.squashfs in build $BUILD1"
[ "$(stat -c %a "$BUILDS/$BUILD1/nodes/w1/layer.tar")" = 600 ] || fail "the node layer (it holds the token) is not 0600"
! grep -rqF "${TOKEN%%::*}" "$BUILDS/$BUILD1/root.squashfs" "$WORK/out/manifest.json" "$BUILDS/$BUILD1/ephemeral.json" ||
  fail "the token is in the shared root or a manifest"
pass "build $BUILD1: root.squashfs without the token, node layer 0600"
# The firstrun.sh base's first-boot settings (user ops): run at every boot by a oneshot unit, not by
# systemd.run= (which reboots when done); the unit as systemd reads it.
mkdir -p "$WORK/layer"
tar -x -C "$WORK/layer" -f "$BUILDS/$BUILD1/nodes/w1/layer.tar"
grep -q "^ExecStart=/bin/bash /usr/local/lib/aggrik8s/first-boot.sh$" "$WORK/layer/etc/systemd/system/aggrik8s-first-boot.service" ||
  fail "no first-boot unit in the layer"
grep -q "ops@e2e" "$WORK/layer/usr/local/lib/aggrik8s/first-boot.sh" || fail "the first-boot script lacks the user's key"
! grep -q "systemd.run" "$BUILDS/$BUILD1/nodes/w1/cmdline.txt" || fail "the ephemeral cmdline still has systemd.run"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$WORK/layer/etc/systemd/system/aggrik8s-first-boot.service" >"$WORK/verify.log" 2>&1 ||
    { cat "$WORK/verify.log" >&2; fail "systemd-analyze verify refuses the first-boot unit"; }
fi
pass "first-boot settings of the firstrun.sh base: a oneshot unit runs the script at every boot (systemd-analyze verify accepts it), no systemd.run="

# ---- the network: serve's namespace (bridge, tap0 for QEMU) and the bootloader's namespace ----
qemu_lan "$SRV" 10.98.6.1/24
ip netns add "$PI"
ip -n "$SRV" link add vpi type veth peer name eth0 netns "$PI"
ip -n "$SRV" link set vpi master br0 up
ip -n "$PI" link set lo up
ip -n "$PI" link set eth0 address "$MAC" up
mkdir -p "$WORK/tftp"
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  pi-workers: {rpi_ephemeral: {build: out/ephemeral/eph-test}}
nodes:
  - {name: w1, match: {serial: "$SERIAL"}, profile: pi-workers}
unknown_nodes: ignore
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.6.1}
tftp: {root: tftp}
http: {port: 8080}
inventory: nodes.yaml
state_dir: state
dhcp: {mode: full, interface: br0, pool: 10.98.6.100-10.98.6.150, router: 10.98.6.1, lease_file: leases}
YAML
mkdir -p "$WORK/state"
chmod 700 "$WORK/state"
start_serve() {
  ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 100); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
  grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
}
start_serve
pass "serve (full-mode DHCP, TFTP, HTTP) is up in $SRV"

# boot_node N: the bootloader's DHCP + TFTP as the Pi, then the kernel in QEMU; console in $WORK/bootN.log.
boot_node() {
  local n=$1 dir=$WORK/boot$1
  ip -n "$PI" link set eth0 up
  ip netns exec "$PI" timeout 90 python3 "$SRC/tests/tools/dhcp_pi5_client.py" "$MAC" "$SERIAL" 10 --tftp "$dir" \
    >"$WORK/pi$n.json" || { tail -n 30 "$WORK/serve.log" >&2; fail "boot $n: the Pi bootloader's DHCP or TFTP failed"; }
  # The bootloader hands over to the kernel: its address and link go, the VM takes the MAC.
  ip -n "$PI" addr flush dev eth0
  ip -n "$PI" link set eth0 down
  [ -s "$dir/initramfs8" ] || fail "boot $n: the bootloader got no initramfs8 ($(cat "$WORK/pi$n.json"))"
  local t0=$SECONDS
  ip netns exec "$SRV" timeout 300 qemu-system-aarch64 -M virt -cpu cortex-a72 -m 1024 -smp 1 -display none \
    -monitor none -no-reboot -kernel "$dir/kernel8.img" -initrd "$dir/initramfs8" \
    -append "$(tr -d '\n' <"$dir/cmdline.txt") console=ttyAMA0" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "virtio-net-pci,netdev=n0,mac=$MAC" \
    -serial "file:$WORK/boot$n.log" </dev/null >"$WORK/qemu$n.log" 2>&1 || true
  # A kernel message printed while a line of ours was on its way lands on the same console line
  # ("...@2.71s[    2.741971] IPv6: ..."): each goes back to a line of its own before lines are matched.
  sed -i -E 's/([^[:space:]])(\[ *[0-9]+\.[0-9]{6}\] )/\1\n\2/g; s/\r$//' "$WORK/boot$n.log"
  grep -q "ephemeral-check: marker" "$WORK/boot$n.log" || {
    grep -E "aggrik8s-init|ephemeral-check|Kernel panic" "$WORK/boot$n.log" >&2 || tail -n 40 "$WORK/boot$n.log" >&2
    tail -n 20 "$WORK/serve.log" >&2; fail "boot $n: the node did not reach its root's checks"; }
  pass "boot $n: Pi bootloader (DHCP, TFTP of config.txt, kernel, cmdline.txt, initramfs) then the node ran from RAM ($((SECONDS - t0)) s in QEMU)"
}
value() { grep -m1 "ephemeral-check: $2 " "$WORK/boot$1.log" | sed "s/^.*ephemeral-check: $2 //"; }
check() { grep -qF -- "$3" "$WORK/boot$1.log" || { grep -E "aggrik8s-init|ephemeral-check" "$WORK/boot$1.log" >&2; fail "boot $1: $2: no '$3'"; }; }

# ---- boot 1 ----
boot_node 1
grep -q "aggrik8s.root=http://10.98.6.1:8080/ephemeral/pi-workers/$BUILD1/root.squashfs" "$WORK/boot1/cmdline.txt" ||
  fail "cmdline.txt does not name build $BUILD1: $(cat "$WORK/boot1/cmdline.txt")"
grep -q "aggrik8s.identity=http://10.98.6.1:8080/ephemeral/pi-workers/$BUILD1/identity/w1" "$WORK/boot1/cmdline.txt" ||
  fail "cmdline.txt lacks the identity URL"
for step in "link: eth0 is up" "dhcp: 10.98.6.1" "root: downloaded" "verify: sha256 [0-9a-f]{64} ok" "mount: squashfs under a tmpfs overlay" \
  "identity: [0-9]+ entries" "switch_root: starting /sbin/init"; do
  grep -qE "aggrik8s-init: $step" "$WORK/boot1.log" || { grep aggrik8s-init "$WORK/boot1.log" >&2; fail "boot 1: no init line '$step'"; }
done
pass "boot 1: the initramfs printed each step (link, DHCP, root download, sha256, identity, switch_root)"
check 1 "host name" "ephemeral-check: hostname worker-1"
check 1 "marker" "ephemeral-check: marker absent"
check 1 "build" "ephemeral-check: build build one"
check 1 "root" "ephemeral-check: root overlay overlay"
check 1 "password mode" "mode 600 0:0"
check 1 "config" "ephemeral-check: rke2-config mode 600 0:0 token-lines 1"
check 1 "first boot" "ephemeral-check: first-boot-unit /etc/systemd/system/aggrik8s-first-boot.service script 700 0:0 userconfig /dev/null"
[ "$(value 1 fstab-active)" = "/proc " ] || fail "boot 1: fstab still mounts '$(value 1 fstab-active)'"
PASSWORD1=$(value 1 node-password | cut -d' ' -f1)
HOSTKEY1=$(value 1 ssh-host-key | cut -d' ' -f1)
MACHINE1=$(value 1 machine-id)
[ ${#PASSWORD1} = 64 ] && [ ${#HOSTKEY1} = 64 ] && [ ${#MACHINE1} = 32 ] || fail "boot 1: identity incomplete: $PASSWORD1 $HOSTKEY1 $MACHINE1"
pass "boot 1: worker-1 runs from an overlay over the RAM root with its node password (0600), SSH host key, machine-id and RKE2 config; no marker yet"
! grep -qF "${TOKEN%%::*}" "$WORK/boot1.log" || fail "boot 1: the token appears on the console"
[ "$(stat -c %a "$WORK/state/identity")" = 700 ] && [ "$(stat -c %a "$WORK/state/identity/w1.json")" = 600 ] ||
  fail "the identity store is not 0700/0600: $(ls -la "$WORK/state/identity")"
PW_RAW=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["node_password"])' "$WORK/state/identity/w1.json" 2>/dev/null || true)
[ -n "$PW_RAW" ] || fail "no node_password in the identity file"
! grep -qF "$PW_RAW" "$WORK/serve.log" || fail "serve logged the node password"
! grep -qF "${TOKEN%%::*}" "$WORK/serve.log" || fail "serve logged the token"
pass "the identity is kept in state/identity/w1.json (0600 in a 0700 directory); serve logged neither it nor the token"

# Someone else asking for w1's identity: refused.
code=$(ip netns exec "$SRV" curl -s -o /dev/null -w '%{http_code}' "http://10.98.6.1:8080/ephemeral/pi-workers/$BUILD1/identity/w1")
[ "$code" = 403 ] || fail "the identity went to another address (HTTP $code)"
pass "the identity is refused to another address (403)"

# ---- boot 2, after serve was killed and restarted ----
kill -9 "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
start_serve
boot_node 2
check 2 "marker" "ephemeral-check: marker absent"
[ "$(value 2 node-password | cut -d' ' -f1)" = "$PASSWORD1" ] && [ "$(value 2 ssh-host-key | cut -d' ' -f1)" = "$HOSTKEY1" ] &&
  [ "$(value 2 machine-id)" = "$MACHINE1" ] || fail "boot 2: the identity changed"
pass "boot 2 (serve killed -9 and restarted): the marker of boot 1 is gone, password, host key and machine-id are the same"

# ---- rebuild with a changed profile; boot 3 runs it ----
echo "build two" >"$OV/etc/acc/build.txt"
expect_status 0 "rebuild after the overlay changed" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out" "$WORK/eph.yaml"
BUILD2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["build"])' "$BUILDS/current.json")
[ "$BUILD2" != "$BUILD1" ] || fail "the rebuild has the same id"
boot_node 3
grep -q "/ephemeral/pi-workers/$BUILD2/root.squashfs" "$WORK/boot3/cmdline.txt" || fail "boot 3: cmdline.txt names $(cat "$WORK/boot3/cmdline.txt")"
check 3 "build" "ephemeral-check: build build two"
check 3 "marker" "ephemeral-check: marker absent"
[ "$(value 3 node-password | cut -d' ' -f1)" = "$PASSWORD1" ] && [ "$(value 3 ssh-host-key | cut -d' ' -f1)" = "$HOSTKEY1" ] ||
  fail "boot 3: the identity changed with the rebuild"
pass "boot 3: the node runs rebuild $BUILD2 with the same identity"
# Build 1 was retired by the rebuild a moment ago: a node that started booting it may still need it
# (removal after a lease time is tested in integration: ephemeral builds).
[ -f "$BUILDS/$BUILD1/root.squashfs" ] && [ -f "$BUILDS/$BUILD2/root.squashfs" ] || fail "builds after boot 3: $(ls "$BUILDS")"
! grep -q "ephemeral: removed build" "$WORK/serve.log" || fail "serve removed a build retired a moment ago"
pass "the retired build $BUILD1 is kept (a lease time after the rebuild), the current one serves"

# ---- an unknown serial gets nothing ----
ip -n "$PI" link set eth0 up
if ip netns exec "$PI" timeout 60 python3 "$SRC/tests/tools/dhcp_pi5_client.py" "$MAC" deadbeef 5 --tftp "$WORK/unknown" \
  >"$WORK/unknown.json" 2>&1; then
  fail "an unknown serial was answered: $(cat "$WORK/unknown.json")"
fi
ip -n "$PI" addr flush dev eth0
ls "$WORK/unknown" 2>/dev/null | grep -q . && fail "an unknown serial got files: $(ls "$WORK/unknown")"
pass "an unknown serial gets no DHCP boot answer and no files"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=

# ---- a cloud-init base (Trixie): the NoCloud seed in the layer, ds=nocloud on the command line ----
csha=$(sha256sum "$FIXTURES/cloudinit/raspios-lite-arm64.img.zst" | cut -d' ' -f1)
sed -e "s|firstrun/raspios-lite-arm64.img.xz\", sha256: $sha|cloudinit/raspios-lite-arm64.img.zst\", sha256: $csha|" \
  "$WORK/eph.yaml" >"$WORK/cloud.yaml"
expect_status 0 "build the ephemeral output from a cloud-init base" -- \
  "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out-cloud" "$WORK/cloud.yaml"
CB=$WORK/out-cloud/ephemeral/eph-test/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["build"])' \
  "$WORK/out-cloud/ephemeral/eph-test/current.json")
tar --numeric-owner -tvf "$CB/nodes/w1/layer.tar" >"$WORK/cloud-layer.txt"
grep -qE '^-rw------- 0/0 .* \./boot/firmware/user-data$' "$WORK/cloud-layer.txt" &&
  grep -qE '^-rw-r--r-- 0/0 .* \./boot/firmware/meta-data$' "$WORK/cloud-layer.txt" &&
  ! grep -q "first-boot" "$WORK/cloud-layer.txt" || { cat "$WORK/cloud-layer.txt" >&2; fail "cloud-init layer"; }
grep -qE '(^| )ds=nocloud;i=aggrik8s-w1-[0-9a-f]+ ' "$CB/nodes/w1/cmdline.txt" || fail "cloud-init cmdline: $(cat "$CB/nodes/w1/cmdline.txt")"
pass "cloud-init base: the NoCloud seed (user-data 0600, meta-data) is in the node's layer, ds=nocloud on its command line"

# ---- bad input ----
write_profile "$WORK/small.yaml" "{memory: 1GiB, runtime_reserve: 1020MiB}"
expect_status 1 "a root that cannot fit the node's memory is refused" -- \
  "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out-small" "$WORK/small.yaml"
expect_output "the nodes' root does not fit their memory: root .* \+ image archives unpacked 2 x .* \+ runtime reserve 1020 MiB = .* of 1.00 GiB" \
  "the refusal names the root, the archives, the reserve and the memory"
[ ! -e "$WORK/out-small/ephemeral/eph-test/current.json" ] || fail "a refused build left a current.json"
write_profile "$WORK/module.yaml" "{memory: 1GiB, runtime_reserve: 256MiB, modules: [no_such_module]}"
expect_status 1 "a kernel module the image does not have is refused" -- \
  "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out-module" "$WORK/module.yaml"
expect_output "no_such_module" "the refusal names the missing module"
[ -z "$(find "$WORK/out-module" -name '*.partial*' -o -name 'current.json' 2>/dev/null)" ] || fail "a refused build left files behind"
pass "refused builds leave no current.json and nothing half-written"

echo "$CHECKS checks passed in $(( $(date +%s) - START )) s"
