#!/usr/bin/env bash
# Full-mode DHCP from the real `aggrik8s-image serve`: a server namespace with a bridge (10.98.0.1/24)
# and three client namespaces on veth pairs: busybox udhcpc, ISC dhclient (a node with a pinned
# address: its reservation) and a scripted Raspberry Pi 5 bootloader (tests/tools/dhcp_pi5_client.py).
# Checks leases, renewals, option 43/siaddr for the Pi, record_lease() (status page), and that leases
# survive a kill -9 of the server without being handed out twice. Needs root; skipped otherwise. Every
# wait is bounded; the namespaces are removed on exit whatever happens.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v udhcpc >/dev/null || ! command -v dhclient >/dev/null; then
  echo "SKIP: needs root, ip, udhcpc and dhclient"; exit 0
fi
ID=$$
SRV=a8s-dhcp-srv-$ID
NS=(a8s-dhcp-c1-$ID a8s-dhcp-c2-$ID a8s-dhcp-c3-$ID)
SERVE_PID= UDHCPC_PID=
cleanup() {
  [ -n "$UDHCPC_PID" ] && kill "$UDHCPC_PID" 2>/dev/null || true
  [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2>/dev/null || true
  for ns in "$SRV" "${NS[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
  for ns in "$SRV" "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

ip netns add "$SRV"
ip -n "$SRV" link add br0 type bridge
ip -n "$SRV" addr add 10.98.0.1/24 dev br0
ip -n "$SRV" link set lo up
ip -n "$SRV" link set br0 up
MACS=(52:54:00:98:00:01 52:54:00:98:00:02 2c:cf:67:98:00:03)
for i in 0 1 2; do
  ip netns add "${NS[$i]}"
  ip link add "a8s-s$i-$ID" netns "$SRV" type veth peer name eth0 netns "${NS[$i]}"
  ip -n "$SRV" link set "a8s-s$i-$ID" master br0 up
  ip -n "${NS[$i]}" link set eth0 address "${MACS[$i]}"
  ip -n "${NS[$i]}" link set lo up
  ip -n "${NS[$i]}" link set eth0 up
done
pass "server namespace $SRV with br0 10.98.0.1/24 and 3 client namespaces"

mkdir -p "$WORK/tftp" "$WORK/assets"
echo kernel >"$WORK/assets/vmlinuz"
# A small partitioned image with a FAT boot partition, standing in for a built Pi image: the Pi 5
# fetches its files from it over TFTP after DHCP.
truncate -s 40M "$WORK/pi.img"
printf 'label: dos\nstart=2048, type=c\n' | sfdisk -q "$WORK/pi.img"
mkfs.vfat --offset 2048 -F 32 "$WORK/pi.img" $(( (40 * 1024 * 1024 - 2048 * 512) / 1024 )) >/dev/null
echo "kernel=kernel_2712.img" >"$WORK/config.txt"
echo "console=ttyAMA0 pi5-marker" >"$WORK/cmdline.txt"
mcopy -i "$WORK/pi.img@@1M" "$WORK/config.txt" "$WORK/cmdline.txt" ::/
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  deb: {kernel: {kernel: assets/vmlinuz}}
  pi: {rpi_image: {image: pi.img}}
nodes:
  - {name: busybox-node, match: {mac: "${MACS[0]}"}, profile: deb}
  - {name: pinned-node, match: {mac: "${MACS[1]}"}, profile: deb, address: 10.98.0.77}
  - {name: pi5, match: {serial: "9ffefdef"}, profile: pi}
unknown_nodes: {action: ignore}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.0.1}
tftp: {root: tftp}
http: {port: 8080}
inventory: nodes.yaml
dhcp:
  mode: full
  interface: br0
  pool: 10.98.0.100-10.98.0.110
  router: 10.98.0.1
  dns: [10.98.0.1]
  lease_time: 120
  lease_file: leases
YAML
start_serve() {
  ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 50); do grep -q "dhcp: listening" "$WORK/serve.log" && return 0; sleep 0.1; done
  cat "$WORK/serve.log" >&2; fail "serve did not start its DHCP server"
}
start_serve
pass "serve is listening for DHCP on br0"

# --- busybox udhcpc: lease, renew (unicast REQUEST with ciaddr) ---
cat >"$WORK/udhcpc.sh" <<'SH'
#!/bin/sh
echo "$1 ${ip:-} ${router:-} ${dns:-} ${lease:-}" >>"$EVENTS"
case "$1" in bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface" ;; esac
SH
chmod +x "$WORK/udhcpc.sh"
ip netns exec "${NS[0]}" env EVENTS="$WORK/udhcpc.events" \
  udhcpc -f -i eth0 -s "$WORK/udhcpc.sh" -t 5 -T 1 -A 1 >"$WORK/udhcpc.log" 2>&1 &
UDHCPC_PID=$!
wait_event() {  # wait_event FILE PATTERN COUNT
  local n
  for _ in $(seq 100); do
    n=$(grep -cE "$2" "$1" 2>/dev/null || true)
    [ "${n:-0}" -ge "$3" ] && return 0
    sleep 0.1
  done
  cat "$1" "$WORK/serve.log" >&2 || true; fail "timed out waiting for '$2' x$3 in $1"
}
wait_event "$WORK/udhcpc.events" '^bound ' 1
read -r _ BUSYBOX_IP ROUTER DNS LEASE < <(grep '^bound ' "$WORK/udhcpc.events" | head -1)
[ "$BUSYBOX_IP" = 10.98.0.100 ] && [ "$ROUTER" = 10.98.0.1 ] && [ "$DNS" = 10.98.0.1 ] && [ "$LEASE" = 120 ] ||
  fail "udhcpc bound with unexpected values: $(cat "$WORK/udhcpc.events")"
pass "udhcpc got 10.98.0.100 with router, DNS and lease time"
grep -q "^52:54:00:98:00:01 10.98.0.100 " "$WORK/leases" || fail "lease not in the lease file: $(cat "$WORK/leases")"
pass "the lease is in the lease file"
kill -USR1 "$UDHCPC_PID"
wait_event "$WORK/udhcpc.events" '^renew 10.98.0.100 ' 1
pass "udhcpc renewed 10.98.0.100"
ip netns exec "$SRV" curl -sf --max-time 5 http://10.98.0.1:8080/status >"$WORK/status.html" || fail "status page"
grep -q '10.98.0.100 (lease)' "$WORK/status.html" || fail "record_lease(): status page lacks the lease: $(cat "$WORK/status.html")"
pass "the DHCP lease reached the address book (record_lease)"

# --- ISC dhclient, for a node with a pinned address (a reservation outside the pool) ---
# dhclient runs its script with a clean environment: the events path is written into it.
cat >"$WORK/dhclient.sh" <<SH
#!/bin/sh
echo "\$reason \${new_ip_address:-}" >>"$WORK/dhclient.events"
case "\$reason" in BOUND|RENEW|REBOOT) ip addr flush dev "\$interface"; ip addr add "\$new_ip_address/24" dev "\$interface" ;; esac
SH
chmod +x "$WORK/dhclient.sh"
run_dhclient() {
  ip netns exec "${NS[1]}" timeout 30 dhclient -1 -v -lf "$WORK/dhclient.leases" \
    -pf "$WORK/dhclient.pid" -sf "$WORK/dhclient.sh" eth0 >>"$WORK/dhclient.log" 2>&1 || {
    cat "$WORK/dhclient.log" "$WORK/serve.log" >&2; fail "dhclient got no lease"; }
}
run_dhclient
grep -qE '^(BOUND|REBOOT) 10.98.0.77$' "$WORK/dhclient.events" || fail "dhclient: $(cat "$WORK/dhclient.events")"
pass "dhclient got its reserved address 10.98.0.77"
kill "$(cat "$WORK/dhclient.pid")" 2>/dev/null || true

# --- scripted Raspberry Pi 5 ---
ip -n "${NS[2]}" addr add 10.98.0.250/24 dev eth0
ip netns exec "${NS[2]}" timeout 20 python3 "$SRC/tests/tools/dhcp_pi5_client.py" "${MACS[2]}" 9ffefdef 5 >"$WORK/pi5.json" ||
  { cat "$WORK/serve.log" >&2; fail "the Pi 5 client got no OFFER/ACK"; }
python3 - "$WORK/pi5.json" <<'PY' || fail "Pi 5 offer: $(cat "$WORK/pi5.json")"
import json, sys
r = json.load(open(sys.argv[1]))
want43 = "0601030a0400505845091400001152617370626572727920506920426f6f74ff"
for step in ("offer", "ack"):
    p = r[step]
    assert p["opt43"] == want43, (step, p["opt43"])
    assert p["siaddr"] == "10.98.0.1" and p["opt66"] == "10.98.0.1", p
    assert p["opt60"] == "PXEClient", p
    assert p["opt97"].startswith("52506935"), p  # echoed RPi5 option 97
assert r["offer"]["yiaddr"] == r["ack"]["yiaddr"] and r["ack"]["yiaddr"].startswith("10.98.0.1"), r
PY
pass "Pi 5: option 43 is the exact 32 bytes, siaddr and option 66 are 10.98.0.1, option 97 echoed"
# Then, as the Pi bootloader does, TFTP from siaddr under its serial (tsize 0, blksize 1468).
for f in config.txt cmdline.txt; do
  ip netns exec "${NS[2]}" timeout 20 curl -sS --tftp-blksize 1468 -o "$WORK/pi-$f" "tftp://10.98.0.1/9ffefdef/$f" ||
    { cat "$WORK/serve.log" >&2; fail "Pi 5 TFTP of 9ffefdef/$f"; }
  cmp -s "$WORK/pi-$f" "$WORK/$f" || fail "Pi 5 TFTP: 9ffefdef/$f differs from the image's"
done
pass "Pi 5 fetched 9ffefdef/config.txt and cmdline.txt from its image's boot partition over TFTP"

# --- kill -9 and restart: leases survive, nothing is handed out twice ---
cp "$WORK/leases" "$WORK/leases.before"
kill -9 "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=
start_serve
for l in $(awk '!/^#/ {print $1 "=" $2}' "$WORK/leases.before"); do
  grep -q "^${l%%=*} ${l#*=} " "$WORK/leases" || fail "lease $l lost across kill -9"
done
pass "every lease survived kill -9 ($(grep -vc "^#" "$WORK/leases.before") journal lines)"
kill -USR1 "$UDHCPC_PID"
wait_event "$WORK/udhcpc.events" '^renew 10.98.0.100 ' 2
pass "udhcpc renewed 10.98.0.100 with the restarted server"
rm -f "$WORK/dhclient.events"
run_dhclient
grep -qE '^(BOUND|REBOOT|RENEW) 10.98.0.77$' "$WORK/dhclient.events" || fail "dhclient after restart: $(cat "$WORK/dhclient.events")"
pass "dhclient kept 10.98.0.77 across the restart"
# A new client must not get any address granted before the restart.
ip -n "${NS[2]}" addr flush dev eth0
ip -n "${NS[2]}" link set eth0 address 52:54:00:98:00:09  # a MAC the server has never seen
ip netns exec "${NS[2]}" timeout 20 udhcpc -i eth0 -n -q -t 5 -T 1 -s /bin/true -x hostname:fresh \
  -F fresh >"$WORK/fresh.log" 2>&1 || { cat "$WORK/fresh.log" "$WORK/serve.log" >&2; fail "fresh client got no lease"; }
FRESH=$(grep -oE 'lease of [0-9.]+' "$WORK/fresh.log" | awk '{print $3}' | tail -1)
[ -n "$FRESH" ] || fail "fresh client: $(cat "$WORK/fresh.log")"
if grep -q " $FRESH " "$WORK/leases.before"; then fail "address $FRESH handed out twice"; fi
pass "a new client got $FRESH, not an address already leased"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
