#!/usr/bin/env bash
# proxyDHCP from the real `aggrik8s-image serve`: a server namespace and a client namespace on a veth
# pair (10.98.1.1 / 10.98.1.2; the client's address stands for one given by another DHCP server).
# A BIOS PXE ROM gets undionly.kpxe with option 43 sub-option 6 = 8, yiaddr 0, option 60 PXEClient
# and option 97 echoed; a UEFI x64 ROM gets ipxe.efi on its port-4011 REQUEST; an ordinary DHCP client
# (udhcpc) gets nothing. Needs root; skipped otherwise. Namespaces are removed on exit.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v udhcpc >/dev/null; then
  echo "SKIP: needs root, ip and udhcpc"; exit 0
fi
SRV=a8s-pxy-srv-$$
CLI_NS=a8s-pxy-cli-$$
SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2>/dev/null || true
  for ns in "$SRV" "$CLI_NS"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
  for ns in "$SRV" "$CLI_NS"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
ip netns add "$SRV"
ip netns add "$CLI_NS"
ip link add a8s-p$$ netns "$SRV" type veth peer name eth0 netns "$CLI_NS"
ip -n "$SRV" addr add 10.98.1.1/24 dev a8s-p$$
ip -n "$CLI_NS" addr add 10.98.1.2/24 dev eth0
for ns in "$SRV" "$CLI_NS"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set a8s-p$$ up
ip -n "$CLI_NS" link set eth0 up
pass "namespaces $SRV/$CLI_NS on a veth pair"

mkdir -p "$WORK/tftp"
echo kernel >"$WORK/vmlinuz"
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  deb: {kernel: {kernel: vmlinuz}}
nodes: []
unknown_nodes: {action: default, profile: deb}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.1.1}
tftp: {root: tftp}
inventory: nodes.yaml
dhcp: {mode: proxy, interface: a8s-p$$}
YAML
ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 50); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
pass "serve listens for proxyDHCP"

probe() {  # probe ARCH OUT
  ip netns exec "$CLI_NS" timeout 20 python3 "$SRC/tests/tools/dhcp_pxe_proxy_client.py" eth0 52:54:00:98:01:02 "$1" 5 >"$2" ||
    { cat "$WORK/serve.log" >&2; fail "arch $1: no proxy OFFER/ACK"; }
}
probe 0 "$WORK/bios.json"
python3 - "$WORK/bios.json" <<'PY' || fail "BIOS proxy replies: $(cat "$WORK/bios.json")"
import json, sys
r = json.load(open(sys.argv[1]))
for step in ("offer", "ack"):
    p = r[step]
    assert p["yiaddr"] == "0.0.0.0" and p["siaddr"] == "10.98.1.1", p
    assert p["file"] == "undionly.kpxe" and p["opt60"] == "PXEClient", p
    assert p["opt43"] == "060108ff", p
    assert p["opt97"] == "00" + bytes(range(16)).hex(), p
PY
pass "BIOS ROM: proxy OFFER and port-4011 ACK with undionly.kpxe, 43 = 06 01 08 ff, 97 echoed, yiaddr 0"
probe 7 "$WORK/uefi.json"
python3 - "$WORK/uefi.json" <<'PY' || fail "UEFI proxy replies: $(cat "$WORK/uefi.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ack"]["file"] == "ipxe.efi" and r["ack"]["yiaddr"] == "0.0.0.0" and r["ack"]["opt43"] == "", r
PY
pass "UEFI x64 ROM: port-4011 ACK with ipxe.efi"
if ip netns exec "$CLI_NS" timeout 10 udhcpc -i eth0 -n -q -t 2 -T 1 -s /bin/true >"$WORK/udhcpc.log" 2>&1; then
  fail "proxy mode answered an ordinary DHCP client: $(cat "$WORK/udhcpc.log")"
fi
grep -q "ignored (no boot offer: not a boot client)" "$WORK/serve.log" || fail "no log line for the ignored client"
pass "an ordinary DHCP client gets no answer from the proxy"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
