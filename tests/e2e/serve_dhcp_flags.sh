#!/usr/bin/env bash
# serve's DHCP from flags alone (no netboot.yaml), as pixiecore (proxy) or `dnsmasq --dhcp-range`
# (full) start: a server namespace with br0 on a /16 (10.97.0.1/16, not the /24 a default would
# assume) and a client namespace. Checks the flags' usage errors; a pool outside the interface's subnet
# is refused at start naming the subnet; `--site --dhcp full` takes the pool, router and DNS of the site
# network holding the interface's address, and udhcpc gets an address from it with the interface's
# netmask (255.255.0.0), the lease going to --state-dir/dhcp.leases; `--dhcp proxy` answers a PXE ROM
# with boot information and no address. Needs root; skipped otherwise. The namespaces are removed on exit.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v udhcpc >/dev/null; then
  echo "SKIP: needs root, ip and udhcpc"; exit 0
fi
ID=$$
SRV=a8s-dflag-srv-$ID
CLI_NS=a8s-dflag-c-$ID
SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2>/dev/null || true
  lan_cleanup "$SRV" "$CLI_NS"
}
trap cleanup EXIT

lan_server "$SRV" 10.97.0.1/16
lan_client "$SRV" "$CLI_NS" "a8s-df-$ID" 52:54:00:97:00:02
pass "server namespace with br0 10.97.0.1/16 and a client namespace"

mkdir -p "$WORK/files" "$WORK/state"
in_srv() { ip netns exec "$SRV" "$@"; }
expect_status 2 "--dhcp without --interface is a usage error" -- in_srv "$CLI" serve --http-root "$WORK/files" --dhcp proxy
expect_output "--dhcp proxy needs --interface" "... that names the missing flag"
expect_status 2 "--dhcp MODE is checked" -- in_srv "$CLI" serve -i br0 --http-root "$WORK/files" --dhcp on
expect_status 2 "--dhcp full without a pool is a usage error" -- in_srv "$CLI" serve -i br0 --http-root "$WORK/files" --dhcp full
expect_output "--dhcp-pool FIRST-LAST" "... that says how to give one"
expect_status 2 "--dhcp full without --state-dir is a usage error (leases must survive a restart)" -- \
  in_srv "$CLI" serve -i br0 --http-root "$WORK/files" --dhcp full --dhcp-pool 10.97.8.10-10.97.8.20
expect_status 2 "--dhcp-pool without --dhcp full is a usage error" -- \
  in_srv "$CLI" serve -i br0 --http-root "$WORK/files" --dhcp-pool 10.97.8.10-10.97.8.20
expect_status 1 "a pool outside the interface's subnet fails the start" -- \
  in_srv "$CLI" serve -i br0 --http-root "$WORK/files" --no-tftp --http-port 0 --dhcp full \
  --dhcp-pool 10.98.8.10-10.98.8.20 --state-dir "$WORK/state"
expect_output "not inside the subnet of br0 \(10.97.0.1 netmask 255.255.0.0\)" "... naming the interface's subnet"
[ ! -e "$WORK/state/dhcp.leases" ] || fail "a refused start wrote a lease file"

cat >"$WORK/site.yaml" <<YAML
kind: site
name: flags
networks:
  other: {subnet: 10.98.0.0/16, gateway: 10.98.0.1, dhcp_pool: 10.98.9.10-10.98.9.20}
  edge: {subnet: 10.97.0.0/16, gateway: 10.97.0.254, dns: [10.97.0.53], dhcp_pool: 10.97.8.10-10.97.8.20}
machines:
  - {name: pi1, platform: rpi5, serial: 10000000a1b2c311, address: 10.97.0.11/16, role: agent,
     profile: $SRC/profiles/rpi5-rke2-agent.yaml, boot: disk}
  # A machine of the other network, whose NIC is plugged into this link: its reservation (off this link)
  # was offered here with this link's router; it gets a pool address, and serve says why.
  - {name: pi3, platform: rpi5, serial: 10000000a1b2c313, mac: "52:54:00:97:00:02", address: 10.98.0.21/16,
     role: agent, profile: $SRC/profiles/rpi5-rke2-agent.yaml, boot: disk}
YAML
start_dhcp_serve() {
  ip netns exec "$SRV" "$CLI" serve -i br0 --tftp-port 0 --http-port 0 "$@" >"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 300); do grep -q "dhcp: listening on" "$WORK/serve.log" && return 0; sleep 0.1; done
  cat "$WORK/serve.log" >&2; fail "serve did not start"
}
# A mistyped interface is what is wrong, not a missing pool; a missing --state-dir is named as such.
expect_status 1 "--site --dhcp full on a missing interface" -- \
  in_srv "$CLI" serve -i nosuch0 --site "$WORK/site.yaml" --dhcp full --state-dir "$WORK/state" --check
expect_output "interface nosuch0 does not exist here or has no IPv4 address" "... names the interface"
expect_status 1 "--dhcp full with a --state-dir that does not exist" -- \
  in_srv "$CLI" serve -i br0 --site "$WORK/site.yaml" --dhcp full --state-dir "$WORK/no-such-dir" --check
expect_output "--state-dir $WORK/no-such-dir is not an existing directory" "... names the directory"
start_dhcp_serve --tftp-root "$WORK/files" --site "$WORK/site.yaml" --dhcp full --state-dir "$WORK/state"
grep -q "site network 'edge' (10.97.0.0/16)" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "the site network was not named"; }
grep -q "full mode, server address 10.97.0.1 netmask 255.255.0.0" "$WORK/serve.log" ||
  { cat "$WORK/serve.log" >&2; fail "full mode did not take the interface's netmask"; }
pass "--site --dhcp full: the pool of the site network holding br0's address, the interface's netmask"

cat >"$WORK/udhcpc.sh" <<'SH'
#!/bin/sh
[ "$1" = bound ] && echo "bound ${ip:-} ${subnet:-} ${router:-} ${dns:-}" >>"$EVENTS"
exit 0
SH
chmod +x "$WORK/udhcpc.sh"
ip netns exec "$CLI_NS" env EVENTS="$WORK/udhcpc.events" \
  timeout 30 udhcpc -f -q -n -i eth0 -s "$WORK/udhcpc.sh" -t 10 -T 1 -A 1 >"$WORK/udhcpc.log" 2>&1 ||
  { cat "$WORK/udhcpc.log" "$WORK/serve.log" >&2; fail "udhcpc got no lease"; }
read -r _ IP MASK ROUTER DNS <"$WORK/udhcpc.events"
[ "$IP" = 10.97.8.10 ] && [ "$MASK" = 255.255.0.0 ] && [ "$ROUTER" = 10.97.0.254 ] && [ "$DNS" = 10.97.0.53 ] ||
  fail "udhcpc bound with unexpected values: $(cat "$WORK/udhcpc.events")"
pass "udhcpc: 10.97.8.10, netmask 255.255.0.0, router and DNS from the site network"
grep -q "warning: dhcp: node pi3's address 10.98.0.21 (52:54:00:97:00:02) is on none of the subnets this server leases on (10.97.0.0/16)" \
  "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "no warning about pi3's off-link reservation"; }
pass "a machine of another site network gets no reservation off this link, and a warning says so"
grep -q "^52:54:00:97:00:02 10.97.8.10 " "$WORK/state/dhcp.leases" || fail "the lease is not in --state-dir/dhcp.leases"
pass "the lease is kept in --state-dir/dhcp.leases"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=

ip -n "$CLI_NS" addr add 10.97.0.2/16 dev eth0  # a proxy client has its address from the network's DHCP server
echo kernel >"$WORK/files/vmlinuz"
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  k: {kernel: {kernel: files/vmlinuz}}
nodes:
  - {name: n1, match: {mac: "52:54:00:97:00:02"}, profile: k}
YAML
start_dhcp_serve --tftp-root "$WORK/files" --nodes "$WORK/nodes.yaml" --dhcp proxy
grep -q "(proxy mode, server address 10.97.0.1)" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "not in proxy mode"; }
ip netns exec "$CLI_NS" timeout 20 python3 "$SRC/tests/tools/dhcp_pxe_proxy_client.py" eth0 52:54:00:97:00:02 0 5 \
  >"$WORK/pxe.json" || { cat "$WORK/pxe.json" "$WORK/serve.log" >&2; fail "no proxy answer to a PXE ROM"; }
python3 - "$WORK/pxe.json" <<'PY' || fail "unexpected proxy offer: $(cat "$WORK/pxe.json")"
import json, sys
offer = json.load(open(sys.argv[1]))["offer"]
assert offer["yiaddr"] == "0.0.0.0" and offer["opt60"] == "PXEClient" and offer["file"] == "undionly.kpxe", offer
PY
pass "--dhcp proxy: a BIOS PXE ROM is offered undionly.kpxe and no address"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=
echo "serve_dhcp_flags: $CHECKS checks passed"
