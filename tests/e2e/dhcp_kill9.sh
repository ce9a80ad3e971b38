#!/usr/bin/env bash
# Lease durability under kill -9: a scripted client runs DISCOVER/REQUEST for many MACs while the
# real `aggrik8s-image serve` (full mode) is killed with SIGKILL and restarted several times at
# arbitrary moments. Every acknowledged lease must be in the lease file afterwards, and no address may
# have been acknowledged to two MACs. Namespaces (10.98.3.1 / client) are removed on exit. Needs root.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then echo "SKIP: needs root and ip"; exit 0; fi
SRV=a8s-k9-srv-$$
CLI_NS=a8s-k9-cli-$$
SERVE_PID= LOOP_PID=
cleanup() {
  [ -n "$LOOP_PID" ] && kill "$LOOP_PID" 2>/dev/null || true
  [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2>/dev/null || true
  for ns in "$SRV" "$CLI_NS"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
  for ns in "$SRV" "$CLI_NS"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
ip netns add "$SRV"
ip netns add "$CLI_NS"
ip link add a8s-k$$ netns "$SRV" type veth peer name eth0 netns "$CLI_NS"
ip -n "$SRV" addr add 10.98.3.1/24 dev a8s-k$$
for ns in "$SRV" "$CLI_NS"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set a8s-k$$ up
ip -n "$CLI_NS" link set eth0 up
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.3.1}
tftp: {enabled: false}
http: {enabled: false}
dhcp: {mode: full, interface: a8s-k$$, pool: 10.98.3.10-10.98.3.250, lease_time: 600, lease_file: leases}
YAML
start_serve() {
  ip netns exec "$SRV" "$CLI" serve --quiet --config "$WORK/netboot.yaml" >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  sleep 0.3
}
start_serve
ip netns exec "$CLI_NS" timeout 60 python3 "$SRC/tests/tools/dhcp_dora_loop.py" eth0 200 50 0.03 >"$WORK/acks" 2>"$WORK/loop.err" &
LOOP_PID=$!
for delay in 0.7 0.45 1.1 0.3 0.8 0.55; do
  sleep "$delay"
  kill -9 "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  start_serve
done
# The kills must land while clients are being served, not after.
[ "$(wc -l <"$WORK/acks")" -lt 200 ] || fail "the clients finished before the last kill: the test proves nothing"
wait "$LOOP_PID" || { cat "$WORK/loop.err" >&2; fail "the client loop failed"; }
LOOP_PID=
ACKS=$(wc -l <"$WORK/acks")
[ "$ACKS" = 200 ] || { cat "$WORK/loop.err" >&2; fail "only $ACKS of 200 clients got a lease within the deadline"; }
pass "200 clients acknowledged across 6 kill -9 restarts made while they were being served"
dups=$(awk '{print $2}' "$WORK/acks" | sort | uniq -d)
[ -z "$dups" ] || fail "addresses acknowledged to two MACs: $dups"
pass "no address acknowledged to two MACs"
while read -r mac address; do
  grep -q "^$mac $address " "$WORK/leases" || fail "acknowledged lease $mac $address is not in the lease file"
done <"$WORK/acks"
pass "every acknowledged lease is in the lease file"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
