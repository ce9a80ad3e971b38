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
  lan_cleanup "$SRV" "$CLI_NS"
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

# Beside the network's DHCP server on the same machine and link (dnsmasq here), as the docs allow: a
# proxy bound to 0.0.0.0:67 after it was handed every unicast to port 67 (renewals, INFORMs, relayed
# requests) and ignored them. dnsmasq first, serve bound last: the order in which the proxy took them.
if command -v dnsmasq >/dev/null; then
  ip netns exec "$SRV" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=a8s-p$$ --bind-interfaces \
    --dhcp-range=10.98.1.50,10.98.1.60,2m --dhcp-leasefile="$WORK/dnsmasq.leases" --pid-file="$WORK/dnsmasq.pid" \
    --user=root --log-dhcp >"$WORK/dnsmasq.log" 2>&1 &
  DNSMASQ_PID=$!
  for _ in $(seq 50); do ip netns exec "$SRV" ss -uln | grep -q ':67 ' && break; sleep 0.1; done
  ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve2.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 50); do grep -q "dhcp: listening" "$WORK/serve2.log" && break; sleep 0.1; done
  grep -q "dhcp: listening" "$WORK/serve2.log" || { cat "$WORK/serve2.log" >&2; fail "proxy did not start"; }
  # A unicast INFORM from the client's address to 10.98.1.1:67: dnsmasq's to answer.
  ip netns exec "$CLI_NS" timeout 20 python3 - "$SRC/tests/tools" <<'PY' || { cat "$WORK/dnsmasq.log" "$WORK/serve2.log" >&2; fail "a unicast INFORM on port 67 did not reach dnsmasq"; }
import os, socket, struct, sys
sys.path.insert(0, sys.argv[1])
from dhcp_wire import wait_for_reply
xid = int.from_bytes(os.urandom(4), "big")
mac = bytes.fromhex("5254009801aa")
head = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0) + socket.inet_aton("10.98.1.2") + bytes(12) + mac + bytes(10) + bytes(192)
packet = head + b"\x63\x82\x53\x63" + bytes([53, 1, 8, 255])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("10.98.1.2", 68))
for _ in range(3):
    sock.sendto(packet, ("10.98.1.1", 67))
    if wait_for_reply(sock, xid, {5}, 3):
        sys.exit(0)
sys.exit(1)
PY
  grep -q "DHCPINFORM" "$WORK/dnsmasq.log" || fail "dnsmasq never saw the INFORM"
  pass "proxy mode beside dnsmasq on the same link: a unicast to port 67 reaches dnsmasq, not the proxy"
  kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
  SERVE_PID=
  kill "$DNSMASQ_PID"; wait "$DNSMASQ_PID" 2>/dev/null || true
fi
echo "$CHECKS checks passed"
