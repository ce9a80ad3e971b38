#!/usr/bin/env bash
# `aggrik8s-image status SITE` against the real thing: a site whose Pi is built by `build SITE` (from the
# cached fixtures), served by `serve --site` writing its real boot event log, fetched from by tftp-hpa
# and curl; status then shows the build's sha256 and time, the boot step, the address and when it was
# last seen, matches an event serve could not name by the MAC it asked with, and copes with a damaged
# log. About 15 s.
source "$(dirname "$0")/lib.bash"
write_fixture_pi_profile unused  # $WORK/pi-profile.yaml; the site replaces its nodes
# pi1 netboots and is built; pi2 is never built nor seen; pi3 boots from disk and is seen once by MAC.
cat >"$WORK/site.yaml" <<'YAML'
kind: site
name: status-e2e
output: out
networks:
  lan: {subnet: 10.0.10.0/24, gateway: 10.0.10.1}
serve:
  boot_log: boot.jsonl
machines:
  - {name: pi1, platform: rpi5, serial: 10000000a1b2c3d4, address: 10.0.10.11/24, role: server, profile: pi-profile.yaml, boot: netboot}
  - {name: pi2, platform: rpi5, serial: 10000000a1b2c3d5, address: 10.0.10.12/24, role: server, profile: pi-profile.yaml, boot: disk}
  - {name: pi3, platform: rpi5, serial: 10000000a1b2c3d6, mac: "d8:3a:dd:10:00:13", address: 10.0.10.13/24, role: server, profile: pi-profile.yaml, boot: disk}
YAML
mkdir -p "$WORK/elsewhere"
status() { (cd "$WORK/elsewhere" && "$CLI" status "$@"); }  # paths in the site are the site file's

expect_status 1 "status before serve ever ran: the site's boot log cannot be opened" -- status ../site.yaml
expect_output "^\.\./boot\.jsonl: cannot open the boot event log: No such file or directory" "the error names the log (relative to the site file)"
expect_output "^pi1 +rpi5 +netboot +not built +no boot log" "the table is still printed, pi1 not built"

SOURCE_DATE_EPOCH=1767225600 "$CLI" build -q --node pi1 "$WORK/site.yaml" >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; fail "build --node pi1 of the site"; }
IMAGE_SHA=$(awk '$2 == "pi1.img" {print $1}' "$WORK/out/fixture-pi/SHA256SUMS")
[ ${#IMAGE_SHA} = 64 ] || fail "no pi1.img in the build's SHA256SUMS"
pass "build SITE --node pi1 wrote out/fixture-pi/pi1.img ($IMAGE_SHA)"

SERVE_PID=
trap '[ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true' EXIT
start_serve --site "$WORK/site.yaml" --address 127.0.0.1 --tftp-port 0 --http-port 0 --boot-log "$WORK/boot.jsonl" \
  --state-dir "$WORK/state"
pass "serve --site started (http $HTTP, tftp $TFTP_PORT)"

BEFORE=$(date +%s)
# What a Pi 5 asks first: its config.txt under its serial's low 8 hex digits, read from pi1.img.
timeout 30 tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get a1b2c3d4/config.txt "$WORK/config.txt" ||
  fail "tftp of pi1's config.txt"
[ -s "$WORK/config.txt" ] || fail "pi1's config.txt is empty"
pass "pi1 fetched its config.txt over TFTP"
# pi3 asks for an iPXE script by its MAC; an unknown machine asks too.
curl -s -o /dev/null "http://$HTTP/ipxe?mac=d8-3a-dd-10-00-13&platform=efi" || fail "curl /ipxe for pi3"
curl -s -o /dev/null "http://$HTTP/ipxe?mac=52-54-00-00-00-99&platform=efi" || fail "curl /ipxe for a stranger"
for _ in $(seq 100); do [ "$(grep -c . "$WORK/boot.jsonl" 2>/dev/null)" -ge 3 ] && break; sleep 0.1; done
AFTER=$(date +%s)
[ "$(grep -c . "$WORK/boot.jsonl")" -ge 3 ] || { cat "$WORK/boot.jsonl" >&2; fail "serve logged fewer than 3 boot events"; }
pass "serve wrote its boot events"

# While serve runs, as an operator would.
expect_status 0 "status SITE (from another directory)" -- status ../site.yaml
TODAY=$(date -u +%Y-%m-%d)
expect_output "^pi1 +rpi5 +netboot +${IMAGE_SHA:0:12} ${TODAY}T[0-9:]{8}Z +${TODAY}T[0-9:]{8}Z tftp a1b2c3d4/config.txt +127\.0\.0\.1 \(site: 10\.0\.10\.11\) +${TODAY}T[0-9:]{8}Z \([0-9]+s ago\)" \
  "pi1: built (sha256, time), booted over TFTP from 127.0.0.1, just seen"
expect_output "^pi2 +rpi5 +disk +not built +never seen +- +never seen" "pi2: not built, never seen"
expect_output "^pi3 +rpi5 +disk +not built +no step succeeded \(1 events\) +127\.0\.0\.1 \(site: 10\.0\.10\.13\) +.* ipxe-script not-found" \
  "pi3: matched by the MAC of its request"
expect_output "^1 of [0-9]+ boot events are from machines not in the site" "the stranger is counted apart"

expect_status 0 "status --json" -- status --json ../site.yaml
python3 - "$WORK/last.out" "$IMAGE_SHA" "$BEFORE" "$AFTER" <<'PY' || fail "status --json is not what the log and the build say"
import calendar, json, sys, time
report = json.load(open(sys.argv[1]))
image_sha, before, after = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = {m["name"]: m for m in report["machines"]}
pi1 = rows["pi1"]
assert pi1["built"]["sha256"] == image_sha, pi1["built"]
assert pi1["built"]["source_date_epoch"] == 1767225600
assert [f["file"] for f in pi1["built"]["files"]][:2] == ["pi1.img", "pi1.img.bmap"], pi1["built"]["files"]
assert pi1["booted"] is True
boot = pi1["last_boot"]
assert (boot["step"], boot["file"], boot["client"], boot["result"], boot["node"]) == \
    ("tftp", "a1b2c3d4/config.txt", "127.0.0.1", "ok", "pi1"), boot
seconds = calendar.timegm(time.strptime(boot["time"][:19], "%Y-%m-%dT%H:%M:%S"))
assert before - 1 <= seconds <= after + 1, (before, boot["time"], after)
assert rows["pi2"]["built"] is None and rows["pi2"]["last_seen"] is None and rows["pi2"]["booted"] is False
assert rows["pi3"]["last_seen"]["result"] == "not-found" and rows["pi3"]["booted"] is False
assert report["unmatched_events"] == 1, report["unmatched_events"]
PY
pass "status --json: pi1's image sha256, its TFTP boot at the time it happened, from 127.0.0.1"

# A damaged copy of the log: a line of garbage is a warning with file:line; serve's half-written last
# line is skipped silently.
{ echo "not json"; cat "$WORK/boot.jsonl"; head -n 1 "$WORK/boot.jsonl" | head -c 40; } >"$WORK/damaged.jsonl"
expect_status 0 "status --boot-log with a damaged log" -- status --boot-log "$WORK/damaged.jsonl" ../site.yaml
expect_output "^$WORK/damaged.jsonl:1: warning: not a boot event \(not JSON\); line skipped" "garbage is reported with file:line"
[ "$(grep -c "warning: not a boot event" "$WORK/last.out")" = 1 ] || fail "the torn last line was reported"
pass "the torn last line is skipped silently"
expect_output "^pi1 .* tftp a1b2c3d4/config.txt" "events around the damage are read"
expect_status 1 "status --boot-log of a missing file" -- status --boot-log "$WORK/nope.jsonl" ../site.yaml
expect_output "$WORK/nope.jsonl: cannot open the boot event log" "the missing log is named"

kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || true

# A site built with `build SITE --out DIR` (here: its output moved there): status and serve --site read
# the build there with --out; without it, status says "not built" and serve --site cannot find the image.
mv "$WORK/out" "$WORK/built-elsewhere"
expect_status 0 "status of a site built elsewhere, without --out" -- status --boot-log /dev/null ../site.yaml
expect_output "^pi1 .* not built" "... is not built where the site's output: says"
expect_status 0 "status --out DIR" -- status --out "$WORK/built-elsewhere" --boot-log /dev/null ../site.yaml
expect_output "^pi1 .* ${IMAGE_SHA:0:12} " "status --out shows pi1's build"
expect_status 0 "serve --site --out DIR --check" -- \
  "$CLI" serve --site "$WORK/site.yaml" --out "$WORK/built-elsewhere" --address 127.0.0.1 --check
expect_status 2 "serve --out without --site is a usage error" -- "$CLI" serve --nodes "$WORK/site.yaml" --out "$WORK" --check
echo "$CHECKS checks passed"
