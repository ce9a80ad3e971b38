#!/usr/bin/env bash
# The real `aggrik8s-image serve` process on loopback: SIGHUP reloads the nodes file while a long HTTP
# download and a TFTP transfer are in flight (both finish intact), the new node is served right after,
# a broken nodes file is refused on reload without taking the server down, SIGTERM exits cleanly.
source "$(dirname "$0")/lib.bash"

mkdir -p "$WORK/assets" "$WORK/tftp"
head -c 40000000 /dev/urandom >"$WORK/assets/vmlinuz"
head -c 1000000 /dev/urandom >"$WORK/assets/initrd.img"
head -c 8000000 /dev/urandom >"$WORK/tftp/undionly.kpxe"
cat >"$WORK/nodes.yaml" <<'YAML'
profiles:
  live:
    kernel: {kernel: assets/vmlinuz, initrd: [assets/initrd.img], args: "boot=live fetch={base_url}/files/root.squashfs"}
nodes:
  - {name: a1, match: {mac: "52:54:00:00:00:01"}, profile: live}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 127.0.0.1}
tftp: {port: 0, root: tftp}
http: {port: 0, root: assets}
inventory: nodes.yaml
boot_log: boot.jsonl
YAML

"$CLI" serve --config "$WORK/netboot.yaml" 2>"$WORK/serve.log" &
SERVE_PID=$!
trap 'kill "$SERVE_PID" 2>/dev/null || true; [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "http: listening on" "$WORK/serve.log" && break; sleep 0.1; done
HTTP=$(sed -n 's/.*http: listening on \([0-9.:]*\).*/\1/p' "$WORK/serve.log")
TFTP_PORT=$(sed -n 's/.*tftp: listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
[ -n "$HTTP" ] && [ -n "$TFTP_PORT" ] || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
pass "serve started (http $HTTP, tftp $TFTP_PORT)"

expect_status 0 "a1's boot script" -- curl -sSf "http://$HTTP/ipxe?mac=52-54-00-00-00-01&platform=pcbios"
expect_output "fetch=http://$HTTP/files/root.squashfs" "placeholders in args are filled in"
expect_status 22 "a2 is not known yet" -- curl -sSf "http://$HTTP/ipxe?mac=52-54-00-00-00-02&platform=efi"

# In flight: a 40 MB download at 8 MB/s (about 5 s) and a lockstep TFTP transfer.
curl -sS --limit-rate 8M -o "$WORK/vmlinuz.got" "http://$HTTP/files/vmlinuz" &
CURL_PID=$!
timeout 60 tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get undionly.kpxe "$WORK/undionly.got" &
TFTP_PID=$!
sleep 1

cat >>"$WORK/nodes.yaml" <<'YAML'
  - {name: a2, match: {mac: "52:54:00:00:00:02"}, profile: live}
YAML
kill -HUP "$SERVE_PID"
for _ in $(seq 50); do grep -q "reload: configuration and inventory reloaded (2 nodes)" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "reloaded (2 nodes)" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "no reload"; }
pass "SIGHUP reloaded the inventory"
expect_status 0 "a2 is served after the reload" -- curl -sSf "http://$HTTP/ipxe?mac=52-54-00-00-00-02&platform=efi"
expect_output "initrd=initrd.img" "a2's UEFI script names the initrd"
kill -0 "$CURL_PID" 2>/dev/null || fail "the download finished before the reload; make it slower"
pass "the download was still in flight during the reload"

wait "$CURL_PID" || fail "the download in flight failed"
cmp -s "$WORK/vmlinuz.got" "$WORK/assets/vmlinuz" || fail "the download in flight differs"
pass "the download in flight across the reload is intact"
wait "$TFTP_PID" || fail "the TFTP transfer failed"
cmp -s "$WORK/undionly.got" "$WORK/tftp/undionly.kpxe" || fail "the TFTP transfer differs"
pass "the TFTP transfer across the reload is intact"

echo "profiles: [" >"$WORK/nodes.yaml"
kill -HUP "$SERVE_PID"
for _ in $(seq 50); do grep -q "reload failed" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "reload failed, still serving the previous configuration" "$WORK/serve.log" || fail "a broken nodes file was not reported"
grep -q "nodes.yaml:" "$WORK/serve.log" || fail "the reload error does not name file:line"
expect_status 0 "a broken nodes file keeps the previous inventory" -- curl -sSf "http://$HTTP/ipxe?mac=52-54-00-00-00-02&platform=efi"

# The TFTP remap file is read again on reload: a rule added to netboot.yaml takes effect for the next
# request, and a broken remap file is refused with the previous rules kept.
reloads() { grep -c "reload: configuration and inventory reloaded" "$WORK/serve.log" || true; }
wait_reloads() { for _ in $(seq 50); do [ "$(reloads)" -ge "$1" ] && return; sleep 0.1; done; fail "no reload #$1"; }
cat >"$WORK/nodes.yaml" <<'YAML'
profiles:
  live:
    kernel: {kernel: assets/vmlinuz, initrd: [assets/initrd.img]}
nodes: []
YAML
printf 'r ^pxelinux\\.0$ undionly.kpxe\n' >"$WORK/tftpd.remap"
sed -i 's|^tftp: {port: 0, root: tftp}|tftp: {port: 0, root: tftp, remap: tftpd.remap}|' "$WORK/netboot.yaml"
before=$(reloads)
expect_status 0 "no remap rule yet: pxelinux.0 is not found" -- \
  bash -c "timeout 20 tftp -m binary 127.0.0.1 $TFTP_PORT -c get pxelinux.0 '$WORK/pxelinux.got' 2>&1 | grep -q 'File not found'"
kill -HUP "$SERVE_PID"
wait_reloads $((before + 1))
timeout 20 tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get pxelinux.0 "$WORK/pxelinux.got" >/dev/null 2>&1 || true
cmp -s "$WORK/pxelinux.got" "$WORK/tftp/undionly.kpxe" || { cat "$WORK/serve.log" >&2; fail "the reloaded remap rule was not applied"; }
pass "SIGHUP: the remap file added to netboot.yaml is applied to the next request"
printf 'q this is not a rule\n' >"$WORK/tftpd.remap"
failures=$(grep -c "reload failed" "$WORK/serve.log")
kill -HUP "$SERVE_PID"
for _ in $(seq 50); do [ "$(grep -c "reload failed" "$WORK/serve.log")" -gt "$failures" ] && break; sleep 0.1; done
grep "reload failed" "$WORK/serve.log" | tail -n 1 | grep -q "tftpd.remap" || { cat "$WORK/serve.log" >&2; fail "a broken remap file was not reported by name"; }
rm -f "$WORK/pxelinux.got"
timeout 20 tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get pxelinux.0 "$WORK/pxelinux.got" >/dev/null 2>&1 || true
cmp -s "$WORK/pxelinux.got" "$WORK/tftp/undionly.kpxe" || fail "a broken remap file replaced the working rules"
pass "a broken remap file is refused on reload and the previous rules stay"

grep -q '"step":"ipxe-script"' "$WORK/boot.jsonl" || fail "no boot events logged"
pass "boot events are logged as JSON lines"

# Flags given next to --config are applied again on reload: the nodes file and boot log named on the
# command line (not in netboot.yaml) are still used after a SIGHUP.
cat >"$WORK/flags.yaml" <<YAML
listen: {address: 127.0.0.1}
tftp: {port: 0, root: tftp}
http: {port: 0, root: assets}
YAML
cat >"$WORK/flag-nodes.yaml" <<'YAML'
profiles:
  live:
    kernel: {kernel: assets/vmlinuz, initrd: [assets/initrd.img]}
nodes:
  - {name: f1, match: {mac: "52:54:00:00:00:11"}, profile: live}
YAML
"$CLI" serve --config "$WORK/flags.yaml" --nodes "$WORK/flag-nodes.yaml" --boot-log "$WORK/flag-boot.jsonl" \
  2>"$WORK/flags-serve.log" &
FLAGS_PID=$!
trap 'kill "$SERVE_PID" "$FLAGS_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "http: listening on" "$WORK/flags-serve.log" && break; sleep 0.1; done
FLAGS_HTTP=$(sed -n 's/.*http: listening on \([0-9.:]*\).*/\1/p' "$WORK/flags-serve.log")
[ -n "$FLAGS_HTTP" ] || { cat "$WORK/flags-serve.log" >&2; fail "serve --config --nodes did not start"; }
kill -HUP "$FLAGS_PID"
for _ in $(seq 50); do grep -q "reload: configuration and inventory reloaded" "$WORK/flags-serve.log" && break; sleep 0.1; done
grep -q "reloaded (1 nodes)" "$WORK/flags-serve.log" || { cat "$WORK/flags-serve.log" >&2; fail "SIGHUP dropped --nodes"; }
expect_status 0 "f1 (from --nodes) is served after a SIGHUP" -- curl -sSf "http://$FLAGS_HTTP/ipxe?mac=52-54-00-00-00-11&platform=efi"
for _ in $(seq 50); do grep -q '"node":"f1"' "$WORK/flag-boot.jsonl" 2>/dev/null && break; sleep 0.1; done
grep -q '"node":"f1"' "$WORK/flag-boot.jsonl" || { cat "$WORK/flags-serve.log" >&2; fail "SIGHUP dropped --boot-log"; }
pass "SIGHUP keeps --nodes and --boot-log given next to --config"
kill -TERM "$FLAGS_PID"; wait "$FLAGS_PID" || true

kill -TERM "$SERVE_PID"
for _ in $(seq 50); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVE_PID" 2>/dev/null && fail "serve did not exit within 5 s of SIGTERM"
set +e; wait "$SERVE_PID"; status=$?; set -e
[ "$status" = 0 ] || fail "serve exited with $status after SIGTERM"
grep -q "serve: stopped" "$WORK/serve.log" || fail "no clean stop logged"
pass "SIGTERM: clean exit (status 0)"
echo "$CHECKS checks passed"
