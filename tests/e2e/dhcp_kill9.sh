#!/usr/bin/env bash
# Lease durability under kill -9: a fleet of scripted clients (tests/tools/dhcp_dora_loop.py: 160 MACs,
# 4 at a time; leases, then renewals and RELEASE + new leases) runs while the real `aggrik8s-image
# serve` (full mode) is killed with SIGKILL 18 times at random moments and restarted, with the lease
# file compacted every 10 lines (AGGRIK8S_DHCP_COMPACT_EVERY) so kills also land in compactions. After
# each kill every ACK received so far must be in the file the killed server left
# (tests/tools/dhcp_kill9_check.py); at the end no address was ACKed to two MACs, no MAC got two
# addresses, no renewal was refused, every released client got its address back, and the pool's
# 10.98.3.0 and .255 were never leased. Namespaces (10.98.3.1 / client) are removed on exit. Needs root.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then echo "SKIP: needs root and ip"; exit 0; fi
SRV=a8s-k9-srv-$$
CLI_NS=a8s-k9-cli-$$
SERVE_PID= LOOP_PID=
cleanup() {
  [ -n "$LOOP_PID" ] && kill "$LOOP_PID" 2>/dev/null || true
  [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2>/dev/null || true
  lan_cleanup "$SRV" "$CLI_NS"
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
http: {port: 8080}
dhcp: {mode: full, interface: a8s-k$$, pool: 10.98.3.0-10.98.3.255, lease_time: 600, lease_file: leases}
YAML
# The replies to renewals are unicast to ciaddr: the subnet is local in the client namespace, so it
# answers ARP for every leased address and the fleet's one socket receives them; all but the server's
# 10.98.3.1 (a packet from a local source address would be dropped as martian).
for net in 10.98.3.0/32 10.98.3.2/31 10.98.3.4/30 10.98.3.8/29 10.98.3.16/28 10.98.3.32/27 10.98.3.64/26 10.98.3.128/25; do
  ip -n "$CLI_NS" route add local "$net" dev eth0
done
STARTS=0
start_serve() {
  STARTS=$((STARTS + 1))
  AGGRIK8S_DHCP_COMPACT_EVERY=10 ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >>"$WORK/serve.log" 2>&1 &
  SERVE_PID=$!
  # Also proves the restart read the file the kill left (a torn last line must not stop it).
  for _ in $(seq 100); do [ "$(grep -c "dhcp: listening" "$WORK/serve.log")" -ge "$STARTS" ] && return 0; sleep 0.1; done
  tail -20 "$WORK/serve.log" >&2; fail "serve start $STARTS did not come up (lease file: $(tail -c 300 "$WORK/leases"))"
}
compactions() {  # compactions by the running server since its start (its start-up rewrite not counted)
  local n
  n=$(ip netns exec "$SRV" curl -sf --max-time 5 http://10.98.3.1:8080/metrics |
    awk '$1 == "aggrik8s_dhcp_journal_writes_total{kind=\"compaction\"}" {print $2}')
  echo $(( ${n:-1} - 1 ))
}
start_serve
ip netns exec "$CLI_NS" timeout 150 python3 "$SRC/tests/tools/dhcp_dora_loop.py" eth0 1 160 "$WORK/stop" 120 4 \
  >"$WORK/events" 2>"$WORK/loop.err" &
LOOP_PID=$!
KILLS=18 COMPACTED=0 SNAPSHOTS=()
for k in $(seq $KILLS); do
  sleep "0.$(( RANDOM % 85 + 10 ))"  # 0.10 .. 0.94 s, a new moment each time
  COMPACTED=$(( COMPACTED + $(compactions) ))
  kill -9 "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  KILLED_AT=$(date +%s.%N)
  cp "$WORK/leases" "$WORK/leases.kill$k"
  SNAPSHOTS+=("$WORK/leases.kill$k" "$KILLED_AT")
  start_serve
done
LAST_KILL=$KILLED_AT
touch "$WORK/stop"
wait "$LOOP_PID" || { cat "$WORK/loop.err" >&2; fail "the client fleet failed"; }
LOOP_PID=
# The kills must land while clients are being served, not after.
awk -v t="$LAST_KILL" '$1 == "ACK" && $NF > t {n++} END {exit !(n > 0)}' "$WORK/events" ||
  fail "no ACK after the last kill: the clients were not being served when it landed"
[ "$COMPACTED" -ge 3 ] || fail "only $COMPACTED compactions under load: the kills cannot have met one"
pass "$KILLS kill -9 restarts at random moments while 160 clients were served, the lease file compacted $COMPACTED times meanwhile"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
python3 "$SRC/tests/tools/dhcp_kill9_check.py" "$WORK/events" "$WORK/leases" "${SNAPSHOTS[@]}" >"$WORK/check.out" ||
  { cat "$WORK/check.out" >&2; fail "acknowledged leases lost or handed out twice"; }
pass "$(tail -1 "$WORK/check.out"): none lost, none doubled, renewals kept, released addresses returned"
if grep -q "ignoring its last" "$WORK/serve.log"; then pass "a kill tore a lease line; the restart read the file without it"; fi
echo "$CHECKS checks passed"
