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

MISSING=$(qemu_netboot_missing)
[ -z "$MISSING" ] || { echo "SKIP: needs" $MISSING; exit 0; }
SRV=a8s-qpxe-$$
SERVE_PID=
trap 'qemu_lan_cleanup "$SRV"' EXIT
qemu_lan "$SRV" 10.98.4.1/24
pass "namespace $SRV: br0 10.98.4.1/24 with tap0"
mkdir -p "$WORK/tftp" "$WORK/http-files"
# What UEFI HTTP boot clients are offered: snponly.efi when http.root has it (docs/netboot.md).
[ -f /usr/lib/ipxe/ipxe.efi ] && cp /usr/lib/ipxe/ipxe.efi "$WORK/http-files/ipxe.efi"
[ -f /usr/lib/ipxe/snponly.efi ] && cp /usr/lib/ipxe/snponly.efi "$WORK/http-files/snponly.efi"
marker_boot_assets "$WORK/assets"
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
http: {port: 8080, root: http-files}
inventory: nodes.yaml
dhcp: {mode: full, interface: br0, pool: 10.98.4.100-10.98.4.150, router: 10.98.4.1, lease_file: leases}
YAML
ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 50); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
pass "serve (full-mode DHCP + HTTP) is up"

QEMU_NS=$SRV QEMU_MAC=$MAC QEMU_NODE=qemu-node-1
boot_marker_vm seabios
grep -qE "dhcp: DISCOVER from $MAC -> OFFER 10.98.4.1[0-9]{2} boot=ipxe file=http://10.98.4.1:8080/boot.ipxe" "$WORK/serve.log" ||
  fail "the iPXE ROM was not sent to the HTTP script: $(grep dhcp: "$WORK/serve.log")"
pass "seabios: iPXE was offered the HTTP boot script directly (no chainload loop)"

if [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] && [ -f /usr/lib/ipxe/ipxe.efi ]; then
  cp /usr/lib/ipxe/ipxe.efi "$WORK/tftp/ipxe.efi"
  boot_marker_vm_ovmf ovmf
  grep -qE "dhcp: DISCOVER from $MAC -> OFFER 10.98.4.1[0-9]{2} boot=uefi-x64 file=ipxe.efi" "$WORK/serve.log" ||
    fail "ovmf: EDK2 PXE was not offered ipxe.efi: $(grep dhcp: "$WORK/serve.log")"
  grep -qE "tftp: .*ipxe.efi" "$WORK/serve.log" || fail "ovmf: ipxe.efi was not fetched over TFTP"
  pass "ovmf: EDK2 PXE -> ipxe.efi over TFTP -> iPXE -> HTTP script"

  # UEFI HTTP boot: with OVMF's PXE switched off (fw_cfg), its HTTP boot client asks instead
  # (vendor class HTTPClient:Arch:00016) and must get an http:// URI with option 60 HTTPClient: the
  # URI of snponly.efi, which http.root holds beside ipxe.efi (netboot_debian_ipxe_root.sh boots the
  # fallback: an http.root with ipxe.efi only).
  HTTP_BOOT_FILE=ipxe.efi
  [ -f "$WORK/http-files/snponly.efi" ] && HTTP_BOOT_FILE=snponly.efi
  boot_marker_vm_ovmf ovmf-http \
    -fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=no -fw_cfg name=opt/org.tianocore/IPv6Support,string=no
  grep -qE "dhcp: DISCOVER from $MAC -> OFFER 10.98.4.1[0-9]{2} boot=uefi-http file=http://10.98.4.1:8080/files/$HTTP_BOOT_FILE" "$WORK/serve.log" ||
    fail "ovmf-http: the HTTP boot client was not offered the http:// URI of $HTTP_BOOT_FILE: $(grep dhcp: "$WORK/serve.log")"
  grep -qE "http: client=10.98.4.1[0-9]{2} GET /files/$HTTP_BOOT_FILE status=200" "$WORK/serve.log" ||
    fail "ovmf-http: $HTTP_BOOT_FILE was not fetched over HTTP: $(grep http: "$WORK/serve.log")"
  pass "ovmf-http: EDK2 HTTP boot -> http://.../files/$HTTP_BOOT_FILE -> iPXE -> HTTP script"
else
  echo "note: OVMF or /usr/lib/ipxe/ipxe.efi missing: UEFI boot not tested"
fi
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
