#!/usr/bin/env bash
# The TFTP root the docs name, /usr/lib/ipxe from Debian 12's ipxe package, served as it is: there
# ipxe.efi is a link to /boot/ipxe.efi (outside the root), which the confinement once refused, so UEFI
# clients never booted. Two parts:
#  1. `aggrik8s-image serve --tftp-root /usr/lib/ipxe --http-root /usr/lib/ipxe` on loopback:
#     tftp-hpa's tftp and atftp fetch ipxe.efi, snponly.efi and undionly.kpxe, curl fetches ipxe.efi
#     from /files/; all byte-compared with the package's files (ipxe.efi with /boot/ipxe.efi). Client
#     names with '..' are still refused over both (the link policy itself: tests/unit/netboot/confined_file_test).
#  2. With root and QEMU: OVMF's own PXE gets ipxe.efi over TFTP from /usr/lib/ipxe itself, and OVMF's
#     UEFI HTTP boot gets it from an http.root that only holds a link to /usr/lib/ipxe/ipxe.efi (as
#     docs/netboot.md tells operators to set it up); both reach the HTTP script and boot the marker
#     initramfs (lib.bash's harness, the same as dhcp_qemu_pxe_boot.sh).
source "$(dirname "$0")/lib.bash"

if [ ! -L /usr/lib/ipxe/ipxe.efi ] || [ ! -f /boot/ipxe.efi ] || [ ! -f /usr/lib/ipxe/undionly.kpxe ]; then
  echo "SKIP: needs Debian's ipxe package (/usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi)"; exit 0
fi
for tool in tftp atftp curl; do command -v "$tool" >/dev/null || { echo "SKIP: needs $tool"; exit 0; }; done

SERVE_PID=
SRV=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  [ -n "$SRV" ] && qemu_lan_cleanup "$SRV"
  true
}
trap cleanup EXIT

# ---- 1. loopback, the documented flags ----
mkdir -p "$WORK/got"
"$CLI" serve --address 127.0.0.1 --tftp-root /usr/lib/ipxe --tftp-port 0 --http-root /usr/lib/ipxe --http-port 0 \
  2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do grep -q "http: listening on" "$WORK/serve.log" && break; sleep 0.1; done
HTTP=$(sed -n 's/.*http: listening on \([0-9.:]*\).*/\1/p' "$WORK/serve.log")
TFTP_PORT=$(sed -n 's/.*tftp: listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
[ -n "$HTTP" ] && [ -n "$TFTP_PORT" ] || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
pass "serve --tftp-root /usr/lib/ipxe --http-root /usr/lib/ipxe started (http $HTTP, tftp $TFTP_PORT)"

same() {  # same GOT ORIGINAL WHAT
  cmp -s "$1" "$2" || { tail -n 20 "$WORK/serve.log" >&2; fail "$3: differs from $2"; }
  pass "$3"
}
for name in ipxe.efi snponly.efi undionly.kpxe; do
  original=$(readlink -f "/usr/lib/ipxe/$name")
  timeout 60 tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get "$name" "$WORK/got/hpa-$name" >"$WORK/last.out" 2>&1 || true
  same "$WORK/got/hpa-$name" "$original" "tftp-hpa: $name is byte-identical to $original"
  timeout 60 atftp --option "blksize 1468" --option "windowsize 8" -g -r "$name" -l "$WORK/got/atftp-$name" \
    127.0.0.1 "$TFTP_PORT" >"$WORK/last.out" 2>&1 || true
  same "$WORK/got/atftp-$name" "$original" "atftp: $name is byte-identical to $original"
done
expect_status 0 "HTTP GET /files/ipxe.efi" -- curl -sSf -o "$WORK/got/http-ipxe.efi" "http://$HTTP/files/ipxe.efi"
same "$WORK/got/http-ipxe.efi" /boot/ipxe.efi "HTTP: ipxe.efi is byte-identical to /boot/ipxe.efi"
# Client names still cannot climb out, over either protocol.
expect_status 0 "TFTP ../../../etc/passwd is refused" -- \
  bash -c "timeout 20 tftp -m binary 127.0.0.1 $TFTP_PORT -c get ../../../etc/passwd '$WORK/got/passwd' 2>&1 | grep -q 'Error code 2'"
expect_status 22 "HTTP /files/%2e%2e/%2e%2e/etc/passwd is refused" -- \
  curl -sSf -o /dev/null --path-as-is "http://$HTTP/files/%2e%2e/%2e%2e/etc/passwd"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=

# ---- 2. QEMU: UEFI PXE and UEFI HTTP boot with the Debian root ----
MISSING=$(qemu_netboot_missing)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || MISSING="$MISSING OVMF"
if [ -n "$MISSING" ]; then
  echo "note: QEMU UEFI boots skipped, needs:" $MISSING
  echo "$CHECKS checks passed"; exit 0
fi
SRV=a8s-qipxe-$$
qemu_lan "$SRV" 10.98.9.1/24
pass "namespace $SRV: br0 10.98.9.1/24 with tap0"
marker_boot_assets "$WORK/assets"
mkdir -p "$WORK/http-files"
ln -s /usr/lib/ipxe/ipxe.efi "$WORK/http-files/ipxe.efi"  # docs/netboot.md: UEFI HTTP boot
MAC=52:54:00:98:09:02
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  marker:
    kernel: {kernel: assets/vmlinuz, initrd: [assets/initrd.gz], args: "console=ttyS0 panic=-1 aggrik8s.node={node}"}
nodes:
  - {name: qemu-node-9, match: {mac: "$MAC"}, profile: marker}
unknown_nodes: {action: ignore}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.9.1}
tftp: {root: /usr/lib/ipxe}
http: {port: 8080, root: http-files}
inventory: nodes.yaml
dhcp: {mode: full, interface: br0, pool: 10.98.9.100-10.98.9.150, router: 10.98.9.1, lease_file: leases}
YAML
ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
pass "serve (full-mode DHCP, tftp.root /usr/lib/ipxe) is up"

QEMU_NS=$SRV QEMU_MAC=$MAC QEMU_NODE=qemu-node-9
boot_marker_vm_ovmf ovmf
grep -qE "tftp: sent /boot/ipxe.efi to 10.98.9.1[0-9]{2}" "$WORK/serve.log" ||
  fail "ovmf: ipxe.efi was not sent from /boot/ipxe.efi: $(grep tftp: "$WORK/serve.log")"
pass "ovmf: EDK2 PXE -> /usr/lib/ipxe/ipxe.efi (-> /boot/ipxe.efi) over TFTP -> iPXE -> HTTP script"

boot_marker_vm_ovmf ovmf-http \
  -fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=no -fw_cfg name=opt/org.tianocore/IPv6Support,string=no
grep -qE "http: client=10.98.9.1[0-9]{2} GET /files/ipxe.efi status=200" "$WORK/serve.log" ||
  fail "ovmf-http: ipxe.efi was not fetched over HTTP: $(grep http: "$WORK/serve.log")"
pass "ovmf-http: EDK2 HTTP boot -> /files/ipxe.efi (a link to /usr/lib/ipxe/ipxe.efi) -> iPXE -> HTTP script"
grep -q "has no snponly.efi: UEFI HTTP boot clients get ipxe.efi" "$WORK/serve.log" ||
  fail "serve did not say that HTTP-boot clients get ipxe.efi for want of snponly.efi"
pass "serve names the fallback: http.root has no snponly.efi, HTTP-boot clients get ipxe.efi"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
