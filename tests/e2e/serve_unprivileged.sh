#!/usr/bin/env bash
# `serve` as the systemd unit runs it: not root, with only the capabilities the unit grants
# (netboot/aggrik8s-image-serve.service: User=aggrik8s, AmbientCapabilities=CAP_NET_BIND_SERVICE). Here
# uid 65534 stands in for the unit's user and setpriv grants what the unit's AmbientCapabilities lists,
# so the test follows the unit if it changes (and systemd-analyze verifies the unit file). In a network namespace with a bridge (10.98.51.1/24) and one client: full-mode
# DHCP on 67 to ISC dhclient (no broadcast flag: the reply is unicast to an address the client does not
# have yet), TFTP on 69 to tftp-hpa's client, HTTP on 80 to curl, the lease file and boot log written as
# nobody (0600 leases), SIGHUP reloads, SIGTERM stops with 0. First, the same start without the
# capability: a clear error naming CAP_NET_BIND_SERVICE, not a bare "Permission denied". And a Pi image
# built by root (0600, as build writes it) is refused at start naming the user serve runs as and the
# image's owner; once chowned to the service user it is served.
# Needs root (to create the namespace and switch users); skipped otherwise.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null || ! command -v dhclient >/dev/null || ! command -v tftp >/dev/null; then
  echo "SKIP: needs root, setpriv, dhclient and tftp-hpa's tftp"; exit 0
fi
UNIT=$SRC/netboot/aggrik8s-image-serve.service
CAPS=$(sed -n 's/^AmbientCapabilities=//p' "$UNIT")
[ -n "$CAPS" ] || fail "$UNIT has no AmbientCapabilities line"
# CAP_NET_BIND_SERVICE CAP_X -> +net_bind_service,+x (setpriv's spelling)
SETPRIV_CAPS=$(tr ' ' '\n' <<<"$CAPS" | sed -n 's/^CAP_\(.*\)$/+\L\1/p' | paste -sd, -)
SERVICE_USER=$(sed -n 's/^User=//p' "$UNIT")
[ -n "$SERVICE_USER" ] && [ "$SERVICE_USER" != root ] || fail "$UNIT: expected User= naming a user other than root"
pass "the unit runs serve as $SERVICE_USER with $CAPS ($SETPRIV_CAPS)"
if command -v systemd-analyze >/dev/null; then
  sed "s#^ExecStart=/usr/local/bin/aggrik8s-image #ExecStart=$CLI #" "$UNIT" >"$WORK/aggrik8s-image-serve.service"
  systemd-analyze verify "$WORK/aggrik8s-image-serve.service" >"$WORK/verify.log" 2>&1 ||
    { cat "$WORK/verify.log" >&2; fail "systemd-analyze verify $UNIT"; }
  [ ! -s "$WORK/verify.log" ] || { cat "$WORK/verify.log" >&2; fail "systemd-analyze verify complains about $UNIT"; }
  pass "systemd-analyze verify accepts the unit"
fi

ID=$$
SRV=a8s-unpriv-srv-$ID
CL=a8s-unpriv-c1-$ID
MAC=52:54:00:98:51:01
SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2>/dev/null || true
  lan_cleanup "$SRV" "$CL"
}
trap cleanup EXIT
lan_server "$SRV" 10.98.51.1/24
lan_client "$SRV" "$CL" "a8s-u$ID" "$MAC"

# What the unit's directories hold: configuration readable by the service (root-owned, as in
# /etc/aggrik8s), state and logs owned by the service user (StateDirectory=, LogsDirectory=).
mkdir -p "$WORK/etc/tftp" "$WORK/etc/files" "$WORK/state" "$WORK/log"
head -c 300000 /dev/urandom >"$WORK/etc/tftp/undionly.kpxe"
echo "static file" >"$WORK/etc/files/hello.txt"
# A Pi 5 image as `build` run by root leaves it: 0600, root's.
build_fixture_pi_image "$WORK/pi-out" pi5 "{storage: sd, kernel_page_size_kib: 4}"
[ "$(stat -c '%u %a' "$WORK/pi-out/pi5.img")" = "0 600" ] || fail "the built image is $(stat -c '%U %a' "$WORK/pi-out/pi5.img")"
cat >"$WORK/etc/nodes.yaml" <<YAML
profiles:
  OWN: {mode: local}
  pi: {rpi_image: {image: $WORK/pi-out/pi5.img}}
nodes:
  - {name: n1, match: {mac: "$MAC"}, profile: OWN}
  - {name: pi5, match: {serial: "9ffefdef"}, profile: pi}
YAML
cat >"$WORK/etc/netboot.yaml" <<YAML
listen: {interface: br0}
tftp: {port: 69, root: tftp}
http: {port: 80, base_url: "http://10.98.51.1", root: files}
dhcp: {mode: full, interface: br0, pool: 10.98.51.100-10.98.51.110, router: 10.98.51.1, lease_time: 600, lease_file: $WORK/state/dhcp.leases}
inventory: nodes.yaml
boot_log: $WORK/log/boot-events.jsonl
YAML
chmod -R go+rX "$WORK/etc"
chown 65534:65534 "$WORK/state" "$WORK/log"
chmod 0755 "$WORK" "$WORK/state" "$WORK/log"
AS_SERVICE=(setpriv --reuid=65534 --regid=65534 --clear-groups)

# --- without the capability: refused, saying what is missing ---
expect_status 1 "serve as nobody without $CAPS exits 1" -- \
  timeout 30 ip netns exec "$SRV" "${AS_SERVICE[@]}" --inh-caps=-all --bounding-set=-all "$CLI" serve --config "$WORK/etc/netboot.yaml"
expect_output "cannot listen on 10.98.51.1:(69|80): Permission denied; ports below 1024 need root or the capability CAP_NET_BIND_SERVICE" \
  "the error names the capability (and the unit that grants it)"
[ ! -e "$WORK/state/dhcp.leases" ] || fail "the refused start wrote a lease file"

# --- a 0600 image of root's: refused at start, saying whose it is; served once it is the user's ---
WITH_CAPS=(--inh-caps="$SETPRIV_CAPS" --ambient-caps="$SETPRIV_CAPS" --bounding-set="-all,$SETPRIV_CAPS")
expect_status 1 "serve --check as the service user refuses root's 0600 image" -- \
  ip netns exec "$SRV" "${AS_SERVICE[@]}" "${WITH_CAPS[@]}" "$CLI" serve --config "$WORK/etc/netboot.yaml" --check
expect_output "'profiles.pi.rpi_image.image': $WORK/pi-out/pi5.img cannot be read: Permission denied \(this process runs as uid 65534 \([a-z]+\); $WORK/pi-out/pi5.img is owned by uid 0 \(root\), group 0 \(root\), mode 0600\)" \
  "the error names the user serve runs as and the image's owner and mode"
chown 65534 "$WORK/pi-out/pi5.img"
expect_status 0 "serve --check accepts the image once it is the service user's" -- \
  ip netns exec "$SRV" "${AS_SERVICE[@]}" "${WITH_CAPS[@]}" "$CLI" serve --config "$WORK/etc/netboot.yaml" --check

# --- as the unit runs it ---
ip netns exec "$SRV" "${AS_SERVICE[@]}" "${WITH_CAPS[@]}" "$CLI" serve --config "$WORK/etc/netboot.yaml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start as nobody with $CAPS"; }
[ "$(stat -c %u /proc/$SERVE_PID)" = 65534 ] || fail "serve does not run as uid 65534"
grep -q "^CapEff:.*0000000000000400$" /proc/$SERVE_PID/status || [ "$SETPRIV_CAPS" != "+net_bind_service" ] ||
  fail "serve's effective capabilities are not just CAP_NET_BIND_SERVICE: $(grep CapEff /proc/$SERVE_PID/status)"
pass "serve runs as nobody with only $CAPS, listening on 67, 69 and 80"

cat >"$WORK/dhclient.sh" <<SH
#!/bin/sh
echo "\$reason \${new_ip_address:-}" >>"$WORK/dhclient.events"
case "\$reason" in BOUND|RENEW|REBOOT) ip addr add "\$new_ip_address/24" dev "\$interface" ;; esac
SH
chmod +x "$WORK/dhclient.sh"
timeout 60 ip netns exec "$CL" dhclient -1 -sf "$WORK/dhclient.sh" -lf "$WORK/dhclient.leases" -pf "$WORK/dhclient.pid" eth0 \
  >"$WORK/dhclient.log" 2>&1 || { cat "$WORK/dhclient.log" "$WORK/serve.log" >&2; fail "dhclient got no lease"; }
kill "$(cat "$WORK/dhclient.pid")" 2>/dev/null || true
ADDR=$(awk '$1 == "BOUND" {print $2}' "$WORK/dhclient.events" | tail -n 1)
[ -n "$ADDR" ] || fail "dhclient reported no BOUND address: $(cat "$WORK/dhclient.events")"
pass "ISC dhclient got $ADDR from serve running unprivileged"
[ "$(stat -c '%u %a' "$WORK/state/dhcp.leases")" = "65534 600" ] || fail "lease file: $(stat -c '%U %a' "$WORK/state/dhcp.leases")"
grep -q "^$MAC $ADDR " "$WORK/state/dhcp.leases" || fail "the lease file lacks $MAC $ADDR"
pass "the lease is journaled in the service user's 0600 lease file"

ip netns exec "$CL" tftp 10.98.51.1 69 -m binary -c get undionly.kpxe "$WORK/got.kpxe" ||
  { cat "$WORK/serve.log" >&2; fail "tftp get on port 69"; }
cmp -s "$WORK/got.kpxe" "$WORK/etc/tftp/undionly.kpxe" || fail "the TFTP download differs"
pass "tftp-hpa's client downloaded a file on port 69"
ip netns exec "$CL" tftp 10.98.51.1 69 -m binary -c get 9ffefdef/config.txt "$WORK/config.txt" ||
  { cat "$WORK/serve.log" >&2; fail "tftp get 9ffefdef/config.txt"; }
grep -q '^kernel=kernel8.img' "$WORK/config.txt" || fail "config.txt from the image: $(cat "$WORK/config.txt")"
pass "the Pi's config.txt is read out of the image by serve running as the service user"
[ "$(ip netns exec "$CL" curl -sS --max-time 10 http://10.98.51.1/files/hello.txt)" = "static file" ] ||
  fail "curl on port 80"
pass "curl fetched a static file on port 80"
grep -q "\"step\":\"tftp\"" "$WORK/log/boot-events.jsonl" || fail "no boot event logged as nobody"
pass "boot events are appended to the log the service user owns"

# --- reload and stop, as systemctl reload/stop do ---
echo "  - {name: n2, match: {mac: \"52:54:00:98:51:02\"}, profile: OWN}" >>"$WORK/etc/nodes.yaml"
kill -HUP "$SERVE_PID"
for _ in $(seq 100); do grep -q "reloaded (3 nodes)" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "reloaded (3 nodes)" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "SIGHUP did not reload"; }
pass "SIGHUP reloads the nodes file"
kill -TERM "$SERVE_PID"
set +e; wait "$SERVE_PID"; status=$?; set -e
SERVE_PID=
[ "$status" = 0 ] || { cat "$WORK/serve.log" >&2; fail "serve exited $status on SIGTERM"; }
pass "SIGTERM stops it with status 0"
echo "$CHECKS checks passed"
