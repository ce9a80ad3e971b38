#!/usr/bin/env bash
# `serve --site` on loopback, no nodes file written: a site with a Pi that boots its own disk, a Pi that
# netboots its image and a Talos VM that netboots, the profiles the repository's examples, the build
# outputs stand-ins at the paths `build SITE` writes (<output>/<profile name>/...). Checks: the Talos VM
# is answered by its MAC (boot script naming its build's kernel, initramfs and arguments), from its own
# address only (the site's address is pinned), its kernel and machine config byte for byte; the
# netbooted Pi gets its image's config.txt by serial over TFTP; the disk Pi gets "File not found" and
# its request is still a boot event of its name; SIGHUP re-derives the nodes from the edited site; a
# broken site is refused naming its file:line and the previous nodes keep being served.
source "$(dirname "$0")/lib.bash"

OUT=$WORK/out/lab
mkdir -p "$OUT/lab-agents" "$OUT/pve-controlplane/netboot/tcp1" "$OUT/pve-controlplane/netboot/tcp2" "$WORK/pi2-boot"

# Stand-in build outputs. pi2.img: an MBR image whose FAT partition 1 is the Pi's boot partition.
printf 'arm_64bit=1\n# pi2 stand-in\n' >"$WORK/pi2-boot/config.txt"
head -c 300000 /dev/urandom >"$WORK/pi2-boot/kernel_2712.img"
mkfs.vfat -C "$WORK/boot.fat" 16384 >/dev/null
mcopy -i "$WORK/boot.fat" "$WORK/pi2-boot/config.txt" "$WORK/pi2-boot/kernel_2712.img" ::/
truncate -s 20M "$OUT/lab-agents/pi2.img"
echo 'start=2048, size=32768, type=c' | sfdisk -q "$OUT/lab-agents/pi2.img"
dd if="$WORK/boot.fat" of="$OUT/lab-agents/pi2.img" bs=1M seek=1 conv=notrunc status=none
for n in tcp1 tcp2; do
  d=$OUT/pve-controlplane/netboot/$n
  head -c 2000000 /dev/urandom >"$d/vmlinuz"
  head -c 500000 /dev/urandom >"$d/initramfs.xz"
  printf 'version: v1alpha1\nmachine: {type: controlplane}\n# %s\n' "$n" >"$d/config.yaml"
  chmod 600 "$d/config.yaml"
done

machine_tcp2='  - {name: tcp2, platform: proxmox-vm, mac: "bc:24:11:00:20:12", address: 127.0.0.22/8, role: controlplane,
     profile: '"$SRC"'/profiles/talos-proxmox-controlplane.yaml, boot: netboot, vm: {node: pve1}}'
write_site() {  # write_site [EXTRA MACHINE LINES]
  cat >"$WORK/site.yaml" <<YAML
kind: site
name: lab
output: out/lab
networks:
  loop: {subnet: 127.0.0.0/8, gateway: 127.0.0.1}
proxmox: {nodes: [pve1]}
machines:
  - name: pi1
    platform: rpi5
    serial: 10000000a1b2c311
    mac: "d8:3a:dd:10:00:11"
    address: 127.0.0.11/8
    role: agent
    profile: $SRC/profiles/rpi5-rke2-agent.yaml
    boot: disk
  - {name: pi2, platform: rpi5, serial: a1b2c312, address: 127.0.0.12/8, role: agent,
     profile: $SRC/profiles/rpi5-rke2-agent.yaml, boot: netboot}
  - name: tcp1
    platform: proxmox-vm
    mac: "bc:24:11:00:20:11"
    uuid: 7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51
    address: 127.0.0.21/8
    role: controlplane
    profile: $SRC/profiles/talos-proxmox-controlplane.yaml
    boot: netboot
    vm: {node: pve1}
${1:-}
YAML
}
write_site

cd "$WORK"  # the site's output (out/lab) is relative: serve and build resolve it alike
"$CLI" serve --site site.yaml --address 127.0.0.1 --tftp-port 0 --http-port 0 --boot-log boot.jsonl 2>"$WORK/serve.log" &
SERVE_PID=$!
trap 'kill "$SERVE_PID" 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q "http: listening on" "$WORK/serve.log" && break; kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
HTTP=$(sed -n 's/.*http: listening on \([0-9.:]*\).*/\1/p' "$WORK/serve.log")
TFTP_PORT=$(sed -n 's/.*tftp: listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.log")
[ -n "$HTTP" ] && [ -n "$TFTP_PORT" ] || { cat "$WORK/serve.log" >&2; fail "serve --site did not start"; }
pass "serve --site started (http $HTTP, tftp $TFTP_PORT)"

expect_status 0 "tcp1's boot script by its MAC, from its address" -- \
  curl -sSf --interface 127.0.0.21 "http://$HTTP/ipxe?mac=bc-24-11-00-20-11&uuid=7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51&platform=efi"
expect_output "kernel http://$HTTP/assets/pve-controlplane.tcp1/vmlinuz" "the script boots tcp1's build's kernel"
expect_output "initrd=initramfs.xz" "... and its initramfs"
expect_output "console=ttyS0" "... with the profile's kernel_args"
expect_output "talos.config=http://$HTTP/talos/bc-24-11-00-20-11/config.yaml" "... and serve's URL of its machine config"
expect_status 22 "tcp1's boot script is refused to another address (the site's address is pinned)" -- \
  curl -sSf --interface 127.0.0.1 "http://$HTTP/ipxe?mac=bc-24-11-00-20-11&uuid=7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51&platform=efi"
curl -sSf --interface 127.0.0.21 -o "$WORK/vmlinuz.got" "http://$HTTP/assets/pve-controlplane.tcp1/vmlinuz"
cmp -s "$WORK/vmlinuz.got" "$OUT/pve-controlplane/netboot/tcp1/vmlinuz" || fail "tcp1's kernel differs"
curl -sSf --interface 127.0.0.21 -o "$WORK/config.got" "http://$HTTP/talos/bc-24-11-00-20-11/config.yaml"
cmp -s "$WORK/config.got" "$OUT/pve-controlplane/netboot/tcp1/config.yaml" || fail "tcp1's machine config differs"
pass "tcp1's kernel and machine config (the build's netboot/tcp1/) byte for byte"

timeout 30 tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get a1b2c312/config.txt "$WORK/pi2-config.got"
cmp -s "$WORK/pi2-config.got" "$WORK/pi2-boot/config.txt" || fail "pi2's config.txt over TFTP differs"
pass "pi2 (boot: netboot) gets its image's config.txt by serial over TFTP"
timeout 30 tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get a1b2c311/config.txt "$WORK/pi1-config.got" >"$WORK/tftp-pi1.log" 2>&1 || true
grep -q "File not found" "$WORK/tftp-pi1.log" || { cat "$WORK/tftp-pi1.log" >&2; fail "pi1 (boot: disk) was not told File not found"; }
for _ in $(seq 50); do grep -q '"node":"pi1"' boot.jsonl 2>/dev/null && break; sleep 0.1; done
grep -q '"node":"pi1".*"step":"tftp"\|"step":"tftp".*"node":"pi1"' boot.jsonl || { cat boot.jsonl >&2; fail "no boot event of pi1"; }
pass "pi1 (boot: disk) gets File not found, and its request is a boot event of its name"

expect_status 22 "tcp2 is not in the site yet" -- curl -sSf --interface 127.0.0.22 "http://$HTTP/ipxe?mac=bc-24-11-00-20-12"
write_site "$machine_tcp2"
kill -HUP "$SERVE_PID"
for _ in $(seq 300); do grep -q "reloaded (4 nodes)" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "reloaded (4 nodes)" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "SIGHUP did not re-derive the nodes from the site"; }
expect_status 0 "after SIGHUP, tcp2 (added to the site) is served" -- \
  curl -sSf --interface 127.0.0.22 "http://$HTTP/ipxe?mac=bc-24-11-00-20-12&platform=pcbios"
expect_output "assets/pve-controlplane.tcp2/vmlinuz" "tcp2's script boots its own build files"

sed -i 's/platform: rpi5$/platform: rpi6/' "$WORK/site.yaml"
kill -HUP "$SERVE_PID"
for _ in $(seq 300); do grep -q "reload failed" "$WORK/serve.log" && break; sleep 0.1; done
grep -q "reload failed, still serving the previous configuration" "$WORK/serve.log" || fail "a broken site was not refused"
grep -q "site.yaml:9:" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; fail "the reload error does not name the site's line"; }
expect_status 0 "a broken site keeps the previous nodes" -- \
  curl -sSf --interface 127.0.0.22 "http://$HTTP/ipxe?mac=bc-24-11-00-20-12&platform=efi"

kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "serve did not exit cleanly on SIGTERM"
pass "SIGTERM stops serve"
echo "$CHECKS checks passed"
