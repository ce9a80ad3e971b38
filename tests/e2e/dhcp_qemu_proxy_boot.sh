#!/usr/bin/env bash
# A real machine boots through our proxyDHCP: another DHCP server on the LAN (dnsmasq, in its own
# namespace on a veth into the bridge) hands out addresses only, no boot options; `aggrik8s-image
# serve` runs in proxy mode on the bridge (10.98.5.1/24). QEMU with SeaBIOS + the iPXE ROM takes its
# address from dnsmasq and what to boot from our proxy offer (iPXE reads the boot file from the offer
# itself, without a port-4011 REQUEST), fetches the HTTP script and boots Debian's kernel + the marker
# initramfs (lib.bash marker_boot_assets). Then OVMF (its own PXE, QEMU's iPXE ROM dropped): address
# from dnsmasq, ipxe.efi from our proxy offer and our ACK to its port-4011 REQUEST, then iPXE as
# above. Checks the marker, the node's own arguments, the lease coming from dnsmasq, and that our
# server gave no address. ~60 s under TCG. Needs root, QEMU, dnsmasq; skipped otherwise (OVMF part
# skipped without OVMF or ipxe.efi). Bounded by `timeout`.
source "$(dirname "$0")/lib.bash"

MISSING=$(qemu_netboot_missing)
command -v dnsmasq >/dev/null || MISSING="$MISSING dnsmasq"
[ -z "$MISSING" ] || { echo "SKIP: needs" $MISSING; exit 0; }
SRV=a8s-qpxy-$$
PEER=a8s-qpxy-dns-$$
trap 'qemu_lan_cleanup "$SRV" "$PEER"' EXIT
qemu_lan "$SRV" 10.98.5.1/24
ip netns add "$PEER"
ip link add a8s-qd$$ netns "$SRV" type veth peer name eth0 netns "$PEER"
ip -n "$SRV" link set a8s-qd$$ master br0 up
ip -n "$PEER" addr add 10.98.5.2/24 dev eth0
ip -n "$PEER" link set lo up
ip -n "$PEER" link set eth0 up
pass "namespace $SRV: br0 10.98.5.1/24 with tap0; the other DHCP server's namespace $PEER at 10.98.5.2"

# The network's own DHCP server: addresses, a router, nothing about booting.
ip netns exec "$PEER" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=eth0 --bind-interfaces \
  --dhcp-range=10.98.5.100,10.98.5.150,255.255.255.0,10m --dhcp-option=option:router,10.98.5.2 --no-ping \
  --dhcp-leasefile="$WORK/dnsmasq.leases" --pid-file="$WORK/dnsmasq.pid" --user=root --log-dhcp \
  >"$WORK/dnsmasq.log" 2>&1 &
for _ in $(seq 50); do grep -q "DHCP, IP range" "$WORK/dnsmasq.log" && break; sleep 0.1; done
grep -q "DHCP, IP range" "$WORK/dnsmasq.log" || { cat "$WORK/dnsmasq.log" >&2; fail "dnsmasq did not start"; }
pass "dnsmasq hands out 10.98.5.100-150 with no boot options"

mkdir -p "$WORK/tftp"
marker_boot_assets "$WORK/assets"
MAC=52:54:00:98:05:02
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  marker:
    kernel: {kernel: assets/vmlinuz, initrd: [assets/initrd.gz], args: "console=ttyS0 panic=-1 aggrik8s.node={node}"}
nodes:
  - {name: qemu-proxy-node, match: {mac: "$MAC"}, profile: marker}
unknown_nodes: {action: ignore}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.5.1}
tftp: {root: tftp}
http: {port: 8080}
inventory: nodes.yaml
dhcp: {mode: proxy, interface: br0}
YAML
ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve.log" 2>&1 &
for _ in $(seq 50); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
pass "serve (proxyDHCP on 67 and 4011, TFTP, HTTP) is up"

QEMU_NS=$SRV QEMU_MAC=$MAC QEMU_NODE=qemu-proxy-node
boot_marker_vm seabios-proxy
grep -qE "dhcp: DISCOVER from $MAC -> proxy OFFER boot=ipxe file=http://10.98.5.1:8080/boot.ipxe" "$WORK/serve.log" ||
  fail "no proxy OFFER with the HTTP script for iPXE: $(grep dhcp: "$WORK/serve.log")"
pass "our proxy OFFER sent iPXE to the HTTP boot script"
grep -qE "DHCPACK\(eth0\) 10\.98\.5\.1[0-9]{2} $MAC" "$WORK/dnsmasq.log" ||
  fail "the VM's address did not come from dnsmasq: $(grep -E 'DHCP(OFFER|ACK)' "$WORK/dnsmasq.log")"
grep -qE "(OFFER|ACK) 10\.98\.5\." "$WORK/serve.log" && fail "our proxy handed out an address: $(grep dhcp: "$WORK/serve.log")"
pass "the address came from dnsmasq; our proxy gave none (yiaddr 0)"
grep -qE "http: client=10\.98\.5\.1[0-9]{2} GET /assets/marker/vmlinuz status=200" "$WORK/serve.log" ||
  fail "the kernel was not fetched over HTTP from the dnsmasq-leased address: $(grep http: "$WORK/serve.log")"
pass "the kernel went over HTTP to the address dnsmasq leased"

if [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] && [ -f /usr/lib/ipxe/ipxe.efi ]; then
  # OVMF's own PXE (QEMU's iPXE ROM dropped with romfile=): address from dnsmasq, ipxe.efi from our
  # proxy (offer on 67, then EDK2's REQUEST to port 4011), then iPXE as above.
  cp /usr/lib/ipxe/ipxe.efi "$WORK/tftp/ipxe.efi"
  boot_marker_vm_ovmf ovmf-proxy
  grep -qE "dhcp: DISCOVER from $MAC -> proxy OFFER boot=uefi-x64 file=ipxe.efi" "$WORK/serve.log" ||
    fail "ovmf-proxy: no proxy OFFER of ipxe.efi: $(grep dhcp: "$WORK/serve.log")"
  grep -qE "dhcp: REQUEST from $MAC -> proxy ACK boot=uefi-x64 file=ipxe.efi" "$WORK/serve.log" ||
    fail "ovmf-proxy: EDK2's port-4011 REQUEST got no proxy ACK: $(grep dhcp: "$WORK/serve.log")"
  grep -qE "tftp: .*ipxe.efi" "$WORK/serve.log" || fail "ovmf-proxy: ipxe.efi was not fetched over TFTP"
  pass "ovmf-proxy: EDK2 PXE took dnsmasq's address and our proxy's ipxe.efi -> iPXE -> HTTP script"
else
  echo "note: OVMF or /usr/lib/ipxe/ipxe.efi missing: UEFI proxy boot not tested"
fi
echo "$CHECKS checks passed"
