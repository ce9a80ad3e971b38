#!/usr/bin/env bash
# The scripted Pi 5 bootloader's HTTP-boot mode (tests/tools/dhcp_pi5_client.py --http-boot), against
# real peers: `aggrik8s-image serve` in full DHCP mode gives the lease in a server namespace joined to
# the Pi's namespace by a veth pair, and python3 -m http.server, bound to the server address, serves a
# boot.img (a FAT image made with mkfs.fat and mtools) and a boot.sig made as rpi-eeprom-digest makes
# it (`openssl dgst -sha256 -sign`). The EEPROM settings are the ones `eeprom-config --http-boot`
# prints. Good signature -> ok, downloaded from the leased address, byte-identical; a tampered
# boot.img -> refused naming the sha256 mismatch; another key -> refused naming the signature; a
# malformed boot.sig and a missing directory -> refused naming them. Needs root; skipped otherwise.
# Every wait is bounded; the namespaces are removed on exit.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v mkfs.fat >/dev/null || ! command -v mcopy >/dev/null; then
  echo "SKIP: needs root, ip, mkfs.fat and mcopy"; exit 0
fi
python3 -c 'import cryptography' 2>/dev/null || fail "python3-cryptography is missing (scripts/setup installs it)"
ID=$$
SRV=a8s-hb-srv-$ID
PI=a8s-hb-pi-$ID
SERVE_PID= WEB_PID=
cleanup() {
  [ -n "$WEB_PID" ] && kill "$WEB_PID" 2>/dev/null || true
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  lan_cleanup "$SRV" "$PI"
}
trap cleanup EXIT

ip netns add "$SRV"
ip netns add "$PI"
ip link add "a8s-hb-$ID" netns "$SRV" type veth peer name eth0 netns "$PI"
ip -n "$SRV" addr add 10.98.151.1/24 dev "a8s-hb-$ID"
ip -n "$PI" link set eth0 address 2c:cf:67:15:00:01
for ns in "$SRV" "$PI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set "a8s-hb-$ID" up
ip -n "$PI" link set eth0 up
pass "server namespace (10.98.151.1/24) and the Pi's namespace on a veth pair"

# --- what the EEPROM would say: eeprom-config --http-boot ---
SERIAL=9ffefdef
"$CLI" eeprom-config --http-boot --http-host 10.98.151.1 --http-port 8151 --serial "$SERIAL" >"$WORK/boot.conf" ||
  fail "eeprom-config --http-boot"
HOST=$(sed -n 's/^HTTP_HOST=//p' "$WORK/boot.conf")
PORT=$(sed -n 's/^HTTP_PORT=//p' "$WORK/boot.conf")
HPATH=$(sed -n 's/^HTTP_PATH=//p' "$WORK/boot.conf")
[ "$HOST:$PORT/$HPATH" = "10.98.151.1:8151/net_install/$SERIAL" ] && grep -q '^BOOT_ORDER=0xf4617$' "$WORK/boot.conf" ||
  fail "eeprom-config: $(cat "$WORK/boot.conf")"
pass "eeprom-config --http-boot: HTTP_HOST, HTTP_PORT, HTTP_PATH=net_install/$SERIAL, mode 7 first"

# --- boot.img (a FAT boot partition) and boot.sig as rpi-eeprom-digest writes them ---
export SOURCE_DATE_EPOCH=1700000000
WEB=$WORK/www
mkdir -p "$WEB/$HPATH"
printf 'arm_64bit=1\nkernel=kernel_2712.img\nauto_initramfs=1\n' >"$WORK/config.txt"
echo "console=serial0,115200 root=/dev/ram0" >"$WORK/cmdline.txt"
head -c 3M /dev/urandom >"$WORK/kernel_2712.img"
IMG=$WEB/$HPATH/boot.img
mkfs.fat -C -n BOOT -i 15151515 --invariant "$IMG" 8192 >/dev/null 2>&1 || mkfs.fat -C -n BOOT -i 15151515 "$IMG" 8192 >/dev/null
for f in config.txt cmdline.txt kernel_2712.img; do mcopy -i "$IMG" "$WORK/$f" "::/$f"; done
fsck.fat -n "$IMG" >/dev/null || fail "fsck.fat -n on the test boot.img"
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
openssl rsa -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" 2>/dev/null
openssl genrsa -out "$WORK/other.pem" 2048 2>/dev/null
openssl rsa -in "$WORK/other.pem" -pubout -out "$WORK/other-pub.pem" 2>/dev/null
sign() {  # sign IMAGE PRIVATE_KEY > boot.sig
  openssl dgst -sha256 -sign "$2" -keyform PEM -out "$WORK/sig.bin" "$1"
  printf '%s\nts: %s\nrsa2048: %s\n' "$(sha256sum "$1" | cut -d' ' -f1)" "$SOURCE_DATE_EPOCH" "$(xxd -p "$WORK/sig.bin" | tr -d '\n')"
}
sign "$IMG" "$WORK/key.pem" >"$WEB/$HPATH/boot.sig"
pass "boot.img: an 8 MiB FAT image with config.txt, cmdline.txt and a kernel; boot.sig signed with openssl dgst -sha256 -sign"

# --- serve gives the lease (full mode); python3 -m http.server on the server address serves the files ---
mkdir -p "$WORK/tftp"
cat >"$WORK/nodes.yaml" <<YAML
profiles: {}
nodes: []
unknown_nodes: {action: ignore}
YAML
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.151.1}
tftp: {root: tftp}
http: {port: 8080}
inventory: nodes.yaml
dhcp: {mode: full, interface: a8s-hb-$ID, pool: 10.98.151.100-10.98.151.110, router: 10.98.151.1, lease_time: 300, lease_file: leases}
YAML
ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 300); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start its DHCP server"; }
ip netns exec "$SRV" python3 -m http.server "$PORT" --bind "$HOST" --directory "$WEB" >"$WORK/web.log" 2>&1 &
WEB_PID=$!
for _ in $(seq 300); do ip netns exec "$SRV" curl -sf -o /dev/null "http://$HOST:$PORT/" && break; sleep 0.1; done
ip netns exec "$SRV" curl -sf -o /dev/null "http://$HOST:$PORT/" || fail "http.server on $HOST:$PORT did not start"
pass "serve (full-mode DHCP) and http.server on $HOST:$PORT are up"

pi_http_boot() {  # pi_http_boot NAME PUBLIC_KEY [SPEC]: the client's JSON in $WORK/NAME.json, its stderr in $WORK/NAME.err
  ip -n "$PI" addr flush dev eth0
  ip netns exec "$PI" timeout 300 python3 "$SRC/tests/tools/dhcp_pi5_client.py" 2c:cf:67:15:00:01 "$SERIAL" 20 \
    --http-boot "${3:-$HOST:$PORT/$HPATH}" --public-key "$2" "$WORK/$1" >"$WORK/$1.json" 2>"$WORK/$1.err"
}

# --- good signature ---
pi_http_boot good "$WORK/pub.pem" || { cat "$WORK/good.err" "$WORK/good.json" "$WORK/serve.log" >&2; fail "HTTP boot with the right key failed"; }
python3 - "$WORK/good.json" "$IMG" <<'PY' || fail "HTTP boot result: $(cat "$WORK/good.json")"
import hashlib, json, os, sys
r = json.load(open(sys.argv[1]))
h = r["http"]
assert r["ack"]["yiaddr"].startswith("10.98.151.1") and h["source"] == r["ack"]["yiaddr"], r
assert h["verification"]["ok"] is True and h["verification"]["ts"] == 1700000000, h
assert h["verification"]["sha256"] == hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest(), h
assert h["files"]["boot.img"]["bytes"] == os.path.getsize(sys.argv[2]) and h["files"]["boot.img"]["mib_per_s"] > 0, h
assert h["files"]["boot.sig"]["bytes"] == 64 + 1 + len("ts: 1700000000") + 1 + len("rsa2048: ") + 512 + 1, h
PY
cmp -s "$IMG" "$WORK/good/boot.img" && cmp -s "$WEB/$HPATH/boot.sig" "$WORK/good/boot.sig" || fail "downloaded files differ from the served ones"
LEASED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ack"]["yiaddr"])' "$WORK/good.json")
grep -q "^$LEASED .*\"GET /$HPATH/boot.sig HTTP/1.1\" 200" "$WORK/web.log" &&
  grep -q "^$LEASED .*\"GET /$HPATH/boot.img HTTP/1.1\" 200" "$WORK/web.log" || { cat "$WORK/web.log" >&2; fail "requests not from the leased address $LEASED"; }
openssl dgst -sha256 -verify "$WORK/pub.pem" -signature <(sed -n 's/^rsa2048: //p' "$WORK/good/boot.sig" | xxd -r -p) \
  "$WORK/good/boot.img" >/dev/null || fail "openssl does not verify what the client accepted"
mcopy -n -i "$WORK/good/boot.img" ::/kernel_2712.img "$WORK/kernel.back" && cmp -s "$WORK/kernel.back" "$WORK/kernel_2712.img" ||
  fail "the kernel in the downloaded boot.img differs"
pass "right key: DHCP lease $LEASED, boot.sig then boot.img GET from it, verified (sha256 + RSA-2048), byte-identical, openssl agrees"

# --- tampered boot.img: one byte of the kernel changed, boot.sig kept ---
cp "$IMG" "$WORK/boot.img.orig"
printf 'X' | dd of="$IMG" bs=1 seek=$((4 * 1024 * 1024)) conv=notrunc status=none
if pi_http_boot tampered "$WORK/pub.pem"; then fail "a tampered boot.img was accepted: $(cat "$WORK/tampered.json")"; fi
grep -q "boot.img refused: sha256 mismatch: boot.sig says $(sha256sum "$WORK/boot.img.orig" | cut -d' ' -f1), boot.img has $(sha256sum "$IMG" | cut -d' ' -f1)" \
  "$WORK/tampered.err" || { cat "$WORK/tampered.err" >&2; fail "tampered: the refusal does not name the sha256 mismatch"; }
grep -q '"ok": false' "$WORK/tampered.json" || fail "tampered: JSON verdict $(cat "$WORK/tampered.json")"
pass "tampered boot.img: exit 1, 'sha256 mismatch' with both digests"
cp "$WORK/boot.img.orig" "$IMG"

# --- another key in the EEPROM ---
if pi_http_boot wrongkey "$WORK/other-pub.pem"; then fail "boot.sig accepted with another public key"; fi
grep -q "boot.img refused: bad signature" "$WORK/wrongkey.err" || { cat "$WORK/wrongkey.err" >&2; fail "wrong key: the refusal does not name the signature"; }
pass "another public key: exit 1, 'bad signature'"

# --- a boot.sig that is not rpi-eeprom-digest's format, and a path with no files ---
head -2 "$WORK/good/boot.sig" >"$WEB/$HPATH/boot.sig"
if pi_http_boot malformed "$WORK/pub.pem"; then fail "a two-line boot.sig was accepted"; fi
grep -q "boot.sig: 2 lines, expected 3" "$WORK/malformed.err" || { cat "$WORK/malformed.err" >&2; fail "malformed boot.sig: no reason"; }
pass "two-line boot.sig: exit 1, naming the line count"
if pi_http_boot missing "$WORK/pub.pem" "$HOST:$PORT/net_install/00000000"; then fail "a missing boot.sig was accepted"; fi
grep -q "HTTP GET http://$HOST:$PORT/net_install/00000000/boot.sig: 404" "$WORK/missing.err" || { cat "$WORK/missing.err" >&2; fail "404: no reason"; }
pass "another node's empty directory: exit 1, naming the URL and 404"
echo "$CHECKS checks passed"
