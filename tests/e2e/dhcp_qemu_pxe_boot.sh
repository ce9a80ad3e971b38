#!/usr/bin/env bash
# A real machine boots through our DHCP in full mode: QEMU on a tap device in a bridge inside a
# namespace this script creates (10.98.4.1/24), twice:
#  - SeaBIOS + the iPXE ROM QEMU ships for virtio-net: iPXE's DHCP request is recognised as iPXE and
#    sent straight to the HTTP boot script (no chainload loop);
#  - OVMF (UEFI, arch 7): EDK2's own PXE gets ipxe.efi over TFTP (Debian's ipxe package), which then
#    asks again as iPXE and gets the HTTP script (skipped when OVMF or ipxe.efi is missing).
# The script boots Debian's kernel and a busybox initramfs whose /init prints a marker and the
# kernel command line to the serial console, then powers off. Checks the marker and that the node got
# its own arguments. Needs root, QEMU, /boot/vmlinuz-*; skipped otherwise. Bounded by `timeout`.
source "$(dirname "$0")/lib.bash"

KERNEL=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)
if [ "$(id -u)" != 0 ] || ! command -v qemu-system-x86_64 >/dev/null || [ -z "$KERNEL" ] || [ ! -c /dev/net/tun ] ||
   ! command -v busybox >/dev/null || ! command -v cpio >/dev/null; then
  echo "SKIP: needs root, qemu-system-x86_64, /dev/net/tun, busybox, cpio and a kernel in /boot"; exit 0
fi
SRV=a8s-qpxe-$$
SERVE_PID=
cleanup() {
  ip netns pids "$SRV" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$SRV"
ip -n "$SRV" link set lo up
ip -n "$SRV" link add br0 type bridge
ip -n "$SRV" addr add 10.98.4.1/24 dev br0
ip -n "$SRV" link set br0 up
ip netns exec "$SRV" ip tuntap add dev tap0 mode tap
ip -n "$SRV" link set tap0 master br0 up
pass "namespace $SRV: br0 10.98.4.1/24 with tap0"

# The initramfs: static busybox and an /init that reports and powers off.
mkdir -p "$WORK/initramfs/bin" "$WORK/assets" "$WORK/tftp"
cp /usr/bin/busybox "$WORK/initramfs/bin/busybox"
cat >"$WORK/initramfs/init" <<'SH'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
echo "AGGRIK8S-DHCP-BOOT-MARKER"
echo "cmdline: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
SH
chmod +x "$WORK/initramfs/init"
(cd "$WORK/initramfs" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/assets/initrd.gz")
cp "$KERNEL" "$WORK/assets/vmlinuz"
MAC=52:54:00:98:04:02
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  marker:
    kernel: {kernel: assets/vmlinuz, initrd: [assets/initrd.gz], args: "console=ttyS0 panic=-1 aggrik8s.node={node}"}
nodes:
  - {name: qemu-node-1, match: {mac: "$MAC"}, profile: marker}
unknown_nodes: {action: ignore}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.4.1}
tftp: {root: tftp}
http: {port: 8080}
inventory: nodes.yaml
dhcp: {mode: full, interface: br0, pool: 10.98.4.100-10.98.4.150, router: 10.98.4.1, lease_file: leases}
YAML
ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 50); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
pass "serve (full-mode DHCP + HTTP) is up"

boot_vm() {  # boot_vm NAME QEMU_ARGS...
  local name=$1; shift
  ip netns exec "$SRV" timeout 150 qemu-system-x86_64 -m 512 -smp 1 -display none -monitor none -no-reboot "$@" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "virtio-net-pci,netdev=n0,mac=$MAC${NIC_EXTRA:-}" -boot n \
    -serial "file:$WORK/$name-serial.log" </dev/null >"$WORK/$name-qemu.log" 2>&1 || true
  sed -i 's/\r$//' "$WORK/$name-serial.log" 2>/dev/null || true
  grep -q "AGGRIK8S-DHCP-BOOT-MARKER" "$WORK/$name-serial.log" || {
    tail -n 20 "$WORK/$name-serial.log" "$WORK/serve.log" >&2 || true; fail "$name: the VM did not reach the marker"; }
  pass "$name: the VM booted kernel + initramfs through our DHCP and HTTP"
  grep -q "^cmdline: .*aggrik8s.node=qemu-node-1" "$WORK/$name-serial.log" ||
    fail "$name: the node's own arguments are missing: $(grep cmdline: "$WORK/$name-serial.log")"
  pass "$name: the kernel command line carries the node's own arguments"
}
boot_vm seabios
grep -qE "dhcp: DISCOVER from $MAC -> OFFER 10.98.4.1[0-9]{2} boot=ipxe file=http://10.98.4.1:8080/boot.ipxe" "$WORK/serve.log" ||
  fail "the iPXE ROM was not sent to the HTTP script: $(grep dhcp: "$WORK/serve.log")"
pass "seabios: iPXE was offered the HTTP boot script directly (no chainload loop)"

if [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] && [ -f /usr/lib/ipxe/ipxe.efi ]; then
  cp /usr/lib/ipxe/ipxe.efi "$WORK/tftp/ipxe.efi"
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$WORK/ovmf-vars.fd"
  # romfile= drops QEMU's iPXE option ROM, so EDK2's own PXE client does the first DHCP.
  NIC_EXTRA=,romfile= boot_vm ovmf -machine q35 -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive "if=pflash,format=raw,file=$WORK/ovmf-vars.fd"
  grep -qE "dhcp: DISCOVER from $MAC -> OFFER 10.98.4.1[0-9]{2} boot=uefi-x64 file=ipxe.efi" "$WORK/serve.log" ||
    fail "ovmf: EDK2 PXE was not offered ipxe.efi: $(grep dhcp: "$WORK/serve.log")"
  grep -qE "tftp: .*ipxe.efi" "$WORK/serve.log" || fail "ovmf: ipxe.efi was not fetched over TFTP"
  pass "ovmf: EDK2 PXE -> ipxe.efi over TFTP -> iPXE -> HTTP script"
else
  echo "note: OVMF or /usr/lib/ipxe/ipxe.efi missing: UEFI boot not tested"
fi
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
