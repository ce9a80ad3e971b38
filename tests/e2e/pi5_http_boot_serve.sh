#!/usr/bin/env bash
# Pi 5 HTTP boot end to end with our own pieces: `keygen` makes the key pair; `build` (output.http_boot)
# writes each node's image, boot.img and boot.sig; `serve` (full-mode DHCP in a namespace this script
# creates) hands each node's files to it alone; the scripted Pi 5 bootloader (tests/tools/
# dhcp_pi5_client.py --http-boot, in its own namespace on the same bridge, with the node's MAC and
# serial) gets a lease, GETs boot.sig and boot.img from HTTP_PATH as the EEPROM says, and verifies them
# as the bootloader does (sha256, RSA-2048 PKCS#1 v1.5 with the public key). Checks: boot.img passes
# fsck.fat, holds every file of the node image's boot partition byte for byte, and its signature
# verifies with openssl too; node 2 gets node 2's boot.img, not node 1's; a per-node HTTP_PATH ending in
# the serial works; an address that is no node's gets nothing; the wrong public key is refused.
source "$(dirname "$0")/lib.bash"
if [ "$(id -u)" != 0 ] || [ ! -c /dev/net/tun ]; then echo "SKIP: needs root"; exit 0; fi
python3 -c 'import cryptography' 2>/dev/null || fail "python3-cryptography is missing (scripts/setup installs it)"
make_fixtures
start_http "$FIXTURES"

SRV=a8s-hbs-$$
PI=a8s-hbspi-$$
SERVE_PID=
cleanup() {
  [ -z "$SERVE_PID" ] || kill "$SERVE_PID" 2>/dev/null || true
  qemu_lan_cleanup "$SRV" "$PI"
}
trap cleanup EXIT

expect_status 0 "keygen makes the signing key pair" -- "$CLI" keygen --out "$WORK/keys" --name boot
[ "$(stat -c %a "$WORK/keys/boot.pem")" = 600 ] || fail "the private key is not 0600"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/other.pem" 2>/dev/null
openssl pkey -in "$WORK/other.pem" -pubout -out "$WORK/other.pub.pem"

sha=$(sha256sum "$FIXTURES/firstrun/raspios-lite-arm64.img.xz" | cut -d' ' -f1)
cat >"$WORK/pi.yaml" <<YAML
kind: rpi5-rke2
name: hb
base: {url: "http://127.0.0.1:$HTTP_PORT/firstrun/raspios-lite-arm64.img.xz", sha256: $sha}
rke2: {version: v1.33.1+rke2r1, release_url: "http://127.0.0.1:$HTTP_PORT/rke2", images: [rke2-images-core], role: server}
output: {root_free_space: 16MiB, bmap: false, http_boot: {key: {file: keys/boot.pem}}}
nodes:
  - name: n1
  - name: n2
    system: {hostname: node-two}
YAML
expect_status 0 "build two nodes with output.http_boot" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out" "$WORK/pi.yaml"
for n in n1 n2; do
  [ -f "$WORK/out/$n.boot.img" ] && [ -f "$WORK/out/$n.boot.sig" ] || fail "$n: no boot.img/boot.sig"
  fsck.fat -n "$WORK/out/$n.boot.img" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log" >&2; fail "$n: fsck.fat"; }
  off=$(( $(partition_field "$WORK/out/$n.img" 0 start) * 512 ))
  mkdir -p "$WORK/part-$n" "$WORK/ram-$n"
  mcopy -s -n -i "$WORK/out/$n.img@@$off" '::/*' "$WORK/part-$n/"
  mcopy -s -n -i "$WORK/out/$n.boot.img" '::/*' "$WORK/ram-$n/"
  diff -r "$WORK/part-$n" "$WORK/ram-$n" >"$WORK/diff.log" || { cat "$WORK/diff.log" >&2; fail "$n: boot.img differs from the image's boot partition"; }
  sed -n 's/^rsa2048: //p' "$WORK/out/$n.boot.sig" | xxd -r -p >"$WORK/$n.sig.bin"
  openssl dgst -sha256 -verify "$WORK/keys/boot.pub.pem" -signature "$WORK/$n.sig.bin" "$WORK/out/$n.boot.img" >/dev/null ||
    fail "$n: openssl does not verify boot.sig"
done
grep -q "node-two" "$WORK/ram-n2/firstrun.sh" && ! grep -q "node-two" "$WORK/ram-n1/firstrun.sh" || fail "the boot.imgs are not per node"
pass "boot.img of each node: fsck.fat clean, its image's boot partition file for file, signed (openssl verifies)"

# ---- serve in a namespace; the Pi in another on the same bridge ----
qemu_lan "$SRV" 10.98.9.1/24
ip netns add "$PI"
ip -n "$SRV" link add vpi type veth peer name eth0 netns "$PI"
ip -n "$SRV" link set vpi master br0 up
ip -n "$PI" link set lo up
MAC1=52:54:00:98:09:01 MAC2=52:54:00:98:09:02 S1=9ffefd91 S2=9ffefd92
cat >"$WORK/nodes.yaml" <<YAML
profiles:
  p1: {rpi_image: {image: out/n1.img, boot_img: out/n1.boot.img}}
  p2: {rpi_image: {image: out/n2.img, boot_img: out/n2.boot.img}}
nodes:
  - {name: n1, match: {serial: "$S1"}, profile: p1}
  - {name: n2, match: {serial: "$S2"}, profile: p2}
YAML
mkdir -p "$WORK/tftp"
cat >"$WORK/netboot.yaml" <<YAML
listen: {address: 10.98.9.1}
tftp: {root: tftp}
http: {port: 8080}
inventory: nodes.yaml
dhcp: {mode: full, interface: br0, pool: 10.98.9.100-10.98.9.150, router: 10.98.9.1, lease_file: leases}
YAML
# What the bootloader would refuse is refused by --check: another boot.img's signature, a disk image as boot_img.
cat >"$WORK/bad-nodes.yaml" <<YAML
profiles:
  p1: {rpi_image: {image: out/n1.img, boot_img: out/n1.boot.img, boot_sig: out/n2.boot.sig}}
  p2: {rpi_image: {image: out/n2.img, boot_img: out/n2.img, boot_sig: out/n2.boot.sig}}
nodes:
  - {name: n1, match: {serial: "$S1"}, profile: p1}
  - {name: n2, match: {serial: "$S2"}, profile: p2}
YAML
sed 's/^inventory: nodes.yaml/inventory: bad-nodes.yaml/' "$WORK/netboot.yaml" >"$WORK/bad-netboot.yaml"
expect_status 1 "serve --check with mismatched HTTP boot files" -- ip netns exec "$SRV" "$CLI" serve --config "$WORK/bad-netboot.yaml" --check
expect_output "out/n2.boot.sig names sha256 [0-9a-f]{64}, but .*out/n1.boot.img has [0-9a-f]{64}" "another boot.img's signature is named"
expect_output "out/n2.img is not a FAT filesystem image" "a disk image as boot_img is named"
ip netns exec "$SRV" "$CLI" serve --config "$WORK/netboot.yaml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do grep -q "dhcp: listening" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "dhcp: listening" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }

pi_http_boot() {  # pi_http_boot MAC SERIAL PATH PUBKEY OUT -> exit status of the bootloader imitation
  ip -n "$PI" addr flush dev eth0
  ip -n "$PI" link set eth0 address "$1" up
  ip netns exec "$PI" timeout 60 python3 "$SRC/tests/tools/dhcp_pi5_client.py" "$1" "$2" 10 \
    --http-boot "10.98.9.1:8080/$3" --public-key "$4" "$5" >"$5.json" 2>"$5.err"
}
pi_http_boot "$MAC1" "$S1" net_install "$WORK/keys/boot.pub.pem" "$WORK/got1" ||
  { cat "$WORK/got1.err" "$WORK/serve.log" >&2; fail "n1: HTTP boot refused"; }
cmp -s "$WORK/got1/boot.img" "$WORK/out/n1.boot.img" || fail "n1 did not get its boot.img"
pass "n1 (bootloader imitation: DHCP, GET boot.sig + boot.img from net_install, sha256 + RSA check) got its own signed boot.img"
pi_http_boot "$MAC2" "$S2" net_install "$WORK/keys/boot.pub.pem" "$WORK/got2" ||
  { cat "$WORK/got2.err" >&2; fail "n2: HTTP boot refused"; }
cmp -s "$WORK/got2/boot.img" "$WORK/out/n2.boot.img" || fail "n2 got another node's boot.img"
pass "n2, from its own address, gets n2's boot.img, not n1's"
pi_http_boot "$MAC2" "$S2" "pis/$S2" "$WORK/keys/boot.pub.pem" "$WORK/got3" ||
  { cat "$WORK/got3.err" >&2; fail "n2 by serial path refused"; }
cmp -s "$WORK/got3/boot.img" "$WORK/out/n2.boot.img" || fail "HTTP_PATH pis/<serial> did not give n2's boot.img"
pass "an HTTP_PATH ending in the serial (eeprom-config --serial) names the node"
if pi_http_boot "$MAC2" "$S2" net_install "$WORK/other.pub.pem" "$WORK/got4"; then fail "a boot.img passed with another key"; fi
grep -qi "signature" "$WORK/got4.err" || fail "the wrong key's refusal does not name the signature: $(cat "$WORK/got4.err")"
pass "with another public key in the EEPROM the bootloader refuses the boot.img (bad signature)"
code=$(ip netns exec "$SRV" curl -s -o /dev/null -w '%{http_code}' http://10.98.9.1:8080/net_install/boot.img)
[ "$code" = 404 ] || fail "an address that is no node's got HTTP $code"
code=$(ip netns exec "$SRV" curl -s -o /dev/null -w '%{http_code}' "http://10.98.9.1:8080/pis/$S1/boot.img")
[ "$code" = 403 ] || fail "n1's boot.img named by serial went to another address (HTTP $code)"
pass "no boot.img for an address that is no node's (404), nor for another address naming a serial (403)"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" || fail "serve did not exit cleanly"
SERVE_PID=
echo "$CHECKS checks passed"
