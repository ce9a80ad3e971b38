#!/usr/bin/env bash
# Full-mode DHCP from the real `aggrik8s-image serve`: a server namespace with a bridge (10.98.0.1/24)
# and three client namespaces on veth pairs: busybox udhcpc, ISC dhclient (a node with a pinned
# address: its reservation) and a scripted Raspberry Pi 5 bootloader (tests/tools/dhcp_pi5_client.py)
# that, after DHCP, fetches config.txt, probes the kernel (ERROR "Early terminate"), then cmdline.txt,
# the DTB and the kernel over TFTP from a Pi image built by `aggrik8s-image build`, served out of the
# image file and byte-compared with its boot partition (mtools). The third namespace is also a DHCP
# relay (tests/tools/dhcp_relay_client.py) for 10.98.6.0/24, which has its own pool, and for a subnet
# with none. Checks leases, renewals, option 43/siaddr for the Pi, record_lease() (status page), the
# DHCP counters in /metrics, and that leases survive a kill -9 of the server without being handed out
# twice, and that a DECLINE (udhcpc -a against a squatter) keeps the address out of use across a
# restart. Needs root; skipped otherwise. Every wait is bounded; the namespaces are removed on exit.
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
  lan_cleanup "$SRV" "${NS[@]}"
}
trap cleanup EXIT

lan_server "$SRV" 10.98.0.1/24
MACS=(52:54:00:98:00:01 52:54:00:98:00:02 2c:cf:67:98:00:03)
for i in 0 1 2; do lan_client "$SRV" "${NS[$i]}" "a8s-s$i-$ID" "${MACS[$i]}"; done
pass "server namespace $SRV with br0 10.98.0.1/24 and 3 client namespaces"

mkdir -p "$WORK/tftp" "$WORK/assets"
echo kernel >"$WORK/assets/vmlinuz"
# The Pi 5 boots a real image built from the fixtures (4K-page kernel: config.txt says kernel8.img).
build_fixture_pi_image "$WORK/pi-out" pi5 "{storage: sd, kernel_page_size_kib: 4}"
PI_IMG=$WORK/pi-out/pi5.img
pass "aggrik8s-image build made the Pi 5 image $PI_IMG"
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  deb: {kernel: {kernel: assets/vmlinuz}}
  pi: {rpi_image: {image: $PI_IMG}}
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
  ntp: [10.98.0.123]
  lease_time: 120
  lease_file: leases
  relayed_subnets:
    - {subnet: 10.98.6.0/24, pool: 10.98.6.100-10.98.6.110, router: 10.98.6.1, dns: [10.98.6.53], lease_time: 300}
YAML
start_serve() {
  ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 50); do grep -q "dhcp: listening" "$WORK/serve.log" && return 0; sleep 0.1; done
  cat "$WORK/serve.log" >&2; fail "serve did not start its DHCP server"
}
start_serve
pass "serve is listening for DHCP on br0"

# metric NAME{LABELS} -> its value in /metrics now (empty if absent)
metric() {
  ip netns exec "$SRV" curl -sf --max-time 5 http://10.98.0.1:8080/metrics >"$WORK/metrics.txt" || fail "GET /metrics"
  awk -v name="$1" '$1 == name {print $2}' "$WORK/metrics.txt"
}
expect_metric() {  # expect_metric NAME{LABELS} OP VALUE  (OP: -eq -ge ...)
  local value
  value=$(metric "$1")
  [ -n "$value" ] && [ "$value" "$2" "$3" ] || { grep dhcp "$WORK/metrics.txt" >&2; fail "/metrics: $1 is '${value}', expected $2 $3"; }
}
for series in 'aggrik8s_dhcp_received_total{type="discover"}' 'aggrik8s_dhcp_received_total{type="request"}' \
    'aggrik8s_dhcp_sent_total{type="offer"}' 'aggrik8s_dhcp_sent_total{type="ack"}' 'aggrik8s_dhcp_sent_total{type="nak"}' \
    'aggrik8s_dhcp_dropped_total{reason="malformed"}' 'aggrik8s_dhcp_dropped_total{reason="flood"}' \
    'aggrik8s_dhcp_dropped_total{reason="not_for_us"}' 'aggrik8s_dhcp_dropped_total{reason="no_subnet"}' \
    'aggrik8s_dhcp_journal_writes_total{kind="append"}' aggrik8s_dhcp_leases_active; do
  expect_metric "$series" -eq 0
done
expect_metric 'aggrik8s_dhcp_journal_writes_total{kind="compaction"}' -eq 1  # the lease file, rewritten at start
grep -q '^# TYPE aggrik8s_dhcp_received_total counter$' "$WORK/metrics.txt" &&
  grep -q '^# TYPE aggrik8s_dhcp_leases_active gauge$' "$WORK/metrics.txt" || fail "/metrics: DHCP TYPE lines"
pass "/metrics lists every DHCP counter at zero before any request (Prometheus text format)"

# --- a second serve with the same lease file (another configuration's ports): refused ---
# It used to run beside the first: it rewrote the lease file, the first appended the leases it
# acknowledged to the deleted file, and each handed out addresses the other had leased.
sed -e 's/^tftp: {root: tftp}$/tftp: {root: tftp, port: 6969}/' -e 's/^http: {port: 8080}$/http: {port: 8081}/' \
  "$WORK/netboot.yaml" >"$WORK/netboot2.yaml"
grep -q "port: 6969" "$WORK/netboot2.yaml" && grep -q "port: 8081" "$WORK/netboot2.yaml" || fail "netboot2.yaml"
cp "$WORK/leases" "$WORK/leases.first"
if timeout 60 ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot2.yaml" >"$WORK/serve2.log" 2>&1; then
  fail "a second serve with the same lease file ran"
fi
grep -q "leases is the lease file of another DHCP server running on this machine (its lock .*leases.lock is held)" \
  "$WORK/serve2.log" || { cat "$WORK/serve2.log" >&2; fail "the second serve's refusal"; }
cmp -s "$WORK/leases" "$WORK/leases.first" || fail "the second serve changed the lease file"
kill -0 "$SERVE_PID" 2>/dev/null || fail "the first serve died"
pass "a second serve with the same lease file is refused and leaves the first one's file alone"
# With a lease file of its own it is still a second DHCP server on br0, handing out the same pool: full
# mode does not share port 67, so it is refused too, naming the port's holder, before writing its file.
sed -e "s#^  lease_file: leases\$#  lease_file: leases-other#" "$WORK/netboot2.yaml" >"$WORK/netboot3.yaml"
grep -q "lease_file: leases-other" "$WORK/netboot3.yaml" || fail "netboot3.yaml"
if timeout 60 ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot3.yaml" >"$WORK/serve3.log" 2>&1; then
  fail "a second full-mode serve with another lease file ran beside the first"
fi
grep -q "DHCP server cannot listen on 0.0.0.0:67 (interface br0): Address already in use; another program holds port 67 .*another DHCP server on this link" \
  "$WORK/serve3.log" || { cat "$WORK/serve3.log" >&2; fail "the third serve's refusal"; }
[ ! -e "$WORK/leases-other" ] || fail "the refused serve wrote its lease file"
kill -0 "$SERVE_PID" 2>/dev/null || fail "the first serve died"
pass "a second full-mode serve with a lease file of its own is refused too (port 67 is not shared in full mode)"

# --- busybox udhcpc: lease, renew (unicast REQUEST with ciaddr) ---
cat >"$WORK/udhcpc.sh" <<'SH'
#!/bin/sh
echo "$1 ${ip:-} ${router:-} ${dns:-} ${lease:-} ${ntpsrv:-}" >>"$EVENTS"
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
read -r _ BUSYBOX_IP ROUTER DNS LEASE NTP < <(grep '^bound ' "$WORK/udhcpc.events" | head -1)
[ "$BUSYBOX_IP" = 10.98.0.100 ] && [ "$ROUTER" = 10.98.0.1 ] && [ "$DNS" = 10.98.0.1 ] && [ "$LEASE" = 120 ] &&
  [ "$NTP" = 10.98.0.123 ] || fail "udhcpc bound with unexpected values: $(cat "$WORK/udhcpc.events")"
pass "udhcpc got 10.98.0.100 with router, DNS, NTP and lease time"
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

# --- scripted Raspberry Pi 5: DHCP, then TFTP from its built image ---
ip -n "${NS[2]}" addr add 10.98.0.250/24 dev eth0
ip netns exec "${NS[2]}" timeout 60 python3 "$SRC/tests/tools/dhcp_pi5_client.py" "${MACS[2]}" 9ffefdef 5 \
  --tftp "$WORK/pi-tftp" >"$WORK/pi5.json" || { cat "$WORK/serve.log" >&2; fail "the Pi 5 client: DHCP or TFTP failed"; }
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
python3 - "$WORK/pi5.json" <<'PY' || fail "Pi 5 TFTP: $(cat "$WORK/pi5.json")"
import json, sys
t = json.load(open(sys.argv[1]))["tftp"]
assert t["kernel"] == "kernel8.img", t  # what config.txt says
for name in ("config.txt", "cmdline.txt", "bcm2712-rpi-5-b.dtb", "kernel8.img"):
    f = t["files"][name]
    assert f["blksize"] == "1468" and int(f["tsize"]) == f["bytes"] > 0, (name, f)
probe = t["files"]["probe:kernel8.img"]
assert probe["bytes"] == 1468 and int(probe["tsize"]) == t["files"]["kernel8.img"]["bytes"], probe
assert probe["packets_after_error"] == 0, probe  # the server ended the probed transfer at once
PY
pass "Pi 5 TFTP: tsize and blksize 1468 acknowledged for every file; the kernel probe got one block and nothing after its ERROR"
BOOT_OFF=$(( $(partition_field "$PI_IMG" 0 start) * 512 ))
for f in config.txt cmdline.txt bcm2712-rpi-5-b.dtb kernel8.img; do
  mcopy -n -i "$PI_IMG@@$BOOT_OFF" "::/$f" "$WORK/pi-boot-$f" || fail "mcopy cannot read $f from the image"
  cmp -s "$WORK/pi-tftp/$f" "$WORK/pi-boot-$f" || fail "Pi 5 TFTP: 9ffefdef/$f differs from the image's boot partition"
done
pass "Pi 5 fetched 9ffefdef/config.txt, cmdline.txt, bcm2712-rpi-5-b.dtb, kernel8.img byte-identical to the image's boot partition"
ip netns exec "$SRV" curl -sf --max-time 5 http://10.98.0.1:8080/metrics >"$WORK/metrics.txt"
grep -q '^aggrik8s_tftp_transfers_total{result="probe"} 1$' "$WORK/metrics.txt" &&
  ! grep -q '^aggrik8s_tftp_transfers_total{result="failed"}' "$WORK/metrics.txt" ||
  { grep tftp "$WORK/metrics.txt" >&2; fail "the early-terminate probe was not counted as a probe (or something failed)"; }
pass "the server counted the early-terminate probe as a probe, no TFTP transfer failed"

# --- a DHCP relay: its subnet has a pool, another subnet does not; a malformed datagram ---
ip -n "${NS[2]}" addr add 10.98.6.1/24 dev eth0
ip -n "$SRV" route add 10.98.6.0/24 via 10.98.0.250
ip netns exec "${NS[2]}" timeout 20 python3 "$SRC/tests/tools/dhcp_relay_client.py" 10.98.6.1 10.98.0.1 52:54:00:98:06:07 5 \
  >"$WORK/relay.json" || { cat "$WORK/serve.log" >&2; fail "relayed DISCOVER/REQUEST got no OFFER/ACK"; }
python3 - "$WORK/relay.json" <<'PY' || fail "relayed replies: $(cat "$WORK/relay.json")"
import json, sys
r = json.load(open(sys.argv[1]))
for step in ("offer", "ack"):
    p = r[step]
    assert p["yiaddr"] == "10.98.6.100" and p["giaddr"] == "10.98.6.1", p
    assert p["router"] == "10.98.6.1" and p["netmask"] == "255.255.255.0" and p["dns"] == "10.98.6.53", p
    assert p["lease"] == 300 and p["server"] == "10.98.0.1", p
PY
grep -q "^52:54:00:98:06:07 10.98.6.100 " "$WORK/leases" || fail "relayed lease not on file: $(cat "$WORK/leases")"
pass "relayed via 10.98.6.1: 10.98.6.100 from that subnet's pool with its router, DNS and lease time, on file"
ip netns exec "${NS[2]}" timeout 20 python3 "$SRC/tests/tools/dhcp_relay_client.py" 10.98.6.1 10.98.0.1 52:54:00:98:07:07 2 \
  --giaddr 10.98.7.1 --expect-silence >"$WORK/relay-none.json" || fail "a relay for a subnet with no pool was answered: $(cat "$WORK/relay-none.json")"
grep -q "warning: dhcp: DISCOVER from 52:54:00:98:07:07 via relay 10.98.7.1 ignored: no pool for that subnet (no_subnet: 1 dropped so far)" \
  "$WORK/serve.log" || { grep dhcp: "$WORK/serve.log" >&2; fail "no counted log line for the relay without a pool"; }
pass "relayed from 10.98.7.1 (no pool): no answer, and a counted log line"
ip netns exec "${NS[2]}" python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"\1" * 12, ("10.98.0.1", 67))'

# --- the counters moved as they should ---
for _ in $(seq 30); do [ "$(metric aggrik8s_dhcp_leases_active)" = 4 ] && break; sleep 0.2; done
expect_metric aggrik8s_dhcp_leases_active -eq 4  # udhcpc, dhclient, the Pi, the relayed client
expect_metric 'aggrik8s_dhcp_dropped_total{reason="malformed"}' -eq 1
expect_metric 'aggrik8s_dhcp_dropped_total{reason="no_subnet"}' -eq 1
expect_metric 'aggrik8s_dhcp_received_total{type="discover"}' -ge 4
expect_metric 'aggrik8s_dhcp_received_total{type="request"}' -ge 5  # 4 leases + 1 renewal
expect_metric 'aggrik8s_dhcp_received_total{type="other"}' -ge 1    # the malformed datagram
expect_metric 'aggrik8s_dhcp_sent_total{type="offer"}' -ge 4
expect_metric 'aggrik8s_dhcp_sent_total{type="ack"}' -ge 5
expect_metric 'aggrik8s_dhcp_journal_writes_total{kind="append"}' -ge 4  # one fdatasync'ed append per ACK batch
ACKS=$(metric 'aggrik8s_dhcp_sent_total{type="ack"}'); APPENDS=$(metric 'aggrik8s_dhcp_journal_writes_total{kind="append"}')
[ "$APPENDS" -le "$ACKS" ] || fail "more journal appends ($APPENDS) than ACKs ($ACKS)"
pass "/metrics: received by type, offers/ACKs sent, drops by reason (malformed 1, no_subnet 1), 4 active leases, journal appends <= ACKs"

# --- kill -9 and restart: leases survive, nothing is handed out twice ---
cp "$WORK/leases" "$WORK/leases.before"
kill -9 "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=
start_serve
for l in $(awk '!/^#/ {print $1 "=" $2}' "$WORK/leases.before"); do
  grep -q "^${l%%=*} ${l#*=} " "$WORK/leases" || fail "lease $l lost across kill -9"
done
pass "every lease survived kill -9 ($(grep -vc "^#" "$WORK/leases.before") journal lines)"
# Which lease is which node survived too: before any renewal the restarted server ties the Pi (known
# by the serial its bootloader sent, which an ephemeral Pi's initramfs renewal does not send) and the
# udhcpc node to their leased addresses again, so their secrets are not refused meanwhile.
PI_IP=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ack"]["yiaddr"])' "$WORK/pi5.json")
grep -q '"2c:cf:67:98:00:03": "pi5"' "$WORK/dhcp-nodes.json" || fail "dhcp-nodes.json: $(cat "$WORK/dhcp-nodes.json" 2>&1)"
grep -q "dhcp: 3 nodes tied to their leased addresses again" "$WORK/serve.log" || fail "no restore line in serve.log"
ip netns exec "$SRV" curl -sf --max-time 5 http://10.98.0.1:8080/status >"$WORK/status.html" || fail "status page"
grep -q "$PI_IP (lease)" "$WORK/status.html" && grep -q '10.98.0.100 (lease)' "$WORK/status.html" ||
  fail "after the restart the status page lacks the nodes' leases: $(cat "$WORK/status.html")"
pass "the restarted server tied pi5 ($PI_IP) and busybox-node (10.98.0.100) to their leases again (dhcp-nodes.json)"
kill -USR1 "$UDHCPC_PID"
wait_event "$WORK/udhcpc.events" '^renew 10.98.0.100 ' 2
pass "udhcpc renewed 10.98.0.100 with the restarted server"
rm -f "$WORK/dhclient.events"
run_dhclient
grep -qE '^(BOUND|REBOOT|RENEW) 10.98.0.77$' "$WORK/dhclient.events" || fail "dhclient after restart: $(cat "$WORK/dhclient.events")"
pass "dhclient kept 10.98.0.77 across the restart"
ip netns exec "${NS[2]}" timeout 20 python3 "$SRC/tests/tools/dhcp_relay_client.py" 10.98.6.1 10.98.0.1 52:54:00:98:06:07 5 \
  >"$WORK/relay-again.json" || { cat "$WORK/serve.log" >&2; fail "relayed client after the restart got no lease"; }
grep -q '"yiaddr": "10.98.6.100"' "$WORK/relay-again.json" || fail "relayed client after restart: $(cat "$WORK/relay-again.json")"
pass "the relayed client got 10.98.6.100 back from the restarted server (its lease read back into its subnet's pool)"
# A new client must not get any address granted before the restart.
ip -n "${NS[2]}" addr flush dev eth0
ip -n "${NS[2]}" link set eth0 address 52:54:00:98:00:09  # a MAC the server has never seen
ip netns exec "${NS[2]}" timeout 20 udhcpc -i eth0 -n -q -t 5 -T 1 -s /bin/true -x hostname:fresh \
  -F fresh >"$WORK/fresh.log" 2>&1 || { cat "$WORK/fresh.log" "$WORK/serve.log" >&2; fail "fresh client got no lease"; }
FRESH=$(grep -oE 'lease of [0-9.]+' "$WORK/fresh.log" | awk '{print $3}' | tail -1)
[ -n "$FRESH" ] || fail "fresh client: $(cat "$WORK/fresh.log")"
if grep -q " $FRESH " "$WORK/leases.before"; then fail "address $FRESH handed out twice"; fi
pass "a new client got $FRESH, not an address already leased"

# --- DECLINE: udhcpc -a finds the acknowledged address answering ARP (a host squatting on it) ---
ip -n "${NS[2]}" addr flush dev eth0
ip -n "${NS[2]}" addr add 10.98.0.105/24 dev eth0
DEC=a8s-dhcp-c4-$ID
NS+=("$DEC")  # removed by cleanup like the others
ip netns add "$DEC"
ip link add "a8s-s3-$ID" netns "$SRV" type veth peer name eth0 netns "$DEC"
ip -n "$SRV" link set "a8s-s3-$ID" master br0 up
ip -n "$DEC" link set eth0 address 52:54:00:98:00:0d
ip -n "$DEC" link set lo up
ip -n "$DEC" link set eth0 up
ip netns exec "$DEC" timeout 40 udhcpc -i eth0 -n -q -t 8 -T 1 -A 1 -a -r 10.98.0.105 -s /bin/true \
  >"$WORK/decline.log" 2>&1 || { cat "$WORK/decline.log" "$WORK/serve.log" >&2; fail "the declining client got no lease"; }
grep -q 'declining' "$WORK/decline.log" || fail "udhcpc did not decline 10.98.0.105: $(cat "$WORK/decline.log")"
DECLINER=$(grep -oE 'lease of [0-9.]+' "$WORK/decline.log" | awk '{print $3}' | tail -1)
[ -n "$DECLINER" ] && [ "$DECLINER" != 10.98.0.105 ] || fail "after its DECLINE udhcpc bound '$DECLINER': $(cat "$WORK/decline.log")"
grep -q "DECLINE from 52:54:00:98:00:0d declined 10.98.0.105 (quarantined for 120 s)" "$WORK/serve.log" ||
  { grep dhcp: "$WORK/serve.log" >&2; fail "the server did not log the quarantine"; }
grep -q "^declined:10.98.0.105 10.98.0.105 " "$WORK/leases" || fail "quarantine not in the lease file: $(cat "$WORK/leases")"
pass "udhcpc -a declined 10.98.0.105 (a squatter answered ARP), the server quarantined it on disk and gave $DECLINER"
# The quarantine outlives a restart (the start-up compaction rewrites the file): with the squatter gone,
# a new client asking for 10.98.0.105 still gets another address (RFC 2131 4.3.3).
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
ip -n "${NS[2]}" addr flush dev eth0
start_serve
grep -q "^declined:10.98.0.105 10.98.0.105 " "$WORK/leases" || fail "the quarantine was lost at restart: $(cat "$WORK/leases")"
ip -n "$DEC" link set eth0 address 52:54:00:98:00:0e
ip netns exec "$DEC" timeout 20 udhcpc -i eth0 -n -q -t 5 -T 1 -r 10.98.0.105 -s /bin/true >"$WORK/after-decline.log" 2>&1 ||
  { cat "$WORK/after-decline.log" "$WORK/serve.log" >&2; fail "a client after the restart got no lease"; }
AFTER=$(grep -oE 'lease of [0-9.]+' "$WORK/after-decline.log" | awk '{print $3}' | tail -1)
[ -n "$AFTER" ] && [ "$AFTER" != 10.98.0.105 ] || fail "the quarantined address was handed out after a restart: '$AFTER'"
pass "after a restart 10.98.0.105 is still quarantined: a client asking for it got $AFTER"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
# A relayed subnet overlapping the interface's own is refused at start, naming both.
sed 's|subnet: 10.98.6.0/24, pool: 10.98.6.100-10.98.6.110, router: 10.98.6.1|subnet: 10.98.0.0/16, pool: 10.98.6.100-10.98.6.110, router: 10.98.6.1|' \
  "$WORK/netboot.yaml" >"$WORK/overlap.yaml"
expect_status 1 "serve refuses a relayed subnet overlapping the interface's" -- \
  ip netns exec "$SRV" timeout 10 "$CLI" serve --config "$WORK/overlap.yaml"
expect_output "dhcp.relayed_subnets: 10.98.0.0/16 overlaps the subnet of interface br0 \(10.98.0.1 netmask 255.255.255.0\)" \
  "the refusal names the relayed subnet and the interface's subnet"
echo "$CHECKS checks passed"
