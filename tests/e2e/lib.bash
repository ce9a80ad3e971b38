# Shared by the e2e scripts: assertions that print what failed, a loopback HTTP server, fixture caching.
# Each script is run by ctest as: bash SCRIPT CLI WORKDIR
set -euo pipefail
CLI=${1:?usage: $0 CLI WORKDIR}
WORK=${2:?usage: $0 CLI WORKDIR}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rm -rf "$WORK"
mkdir -p "$WORK"
CHECKS=0

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { CHECKS=$((CHECKS + 1)); echo "ok: $*"; }
# expect_status CODE DESCRIPTION -- COMMAND...
expect_status() {
  local want=$1 what=$2; shift 3
  set +e; "$@" >"$WORK/last.out" 2>&1; local got=$?; set -e
  [ "$got" = "$want" ] || { cat "$WORK/last.out" >&2; fail "$what: exit $got, expected $want"; }
  pass "$what"
}
expect_output() {  # expect_output PATTERN DESCRIPTION (greps the last command's output)
  grep -qE -- "$1" "$WORK/last.out" || { cat "$WORK/last.out" >&2; fail "$2: output lacks /$1/"; }
  pass "$2"
}

# Fixtures are deterministic: made once per build tree and reused by every e2e script; remade when
# their generators change (the directory is stamped with the generators' sha256). Checking the stamp,
# removing stale fixtures, building and stamping all happen under one lock: with the stamp written
# after the lock was released, a second script could find it missing and delete the fixtures a third
# was already using.
FIXTURES=$(dirname "$WORK")/fixtures
make_fixtures() {
  local want
  want=$(cat "$SRC/tests/fixtures/make-rpi-os-image" "$SRC/tests/fixtures/make-rke2-release" \
    "$SRC/tests/fixtures/lib.sh" | sha256sum | cut -d' ' -f1)
  mkdir -p "$FIXTURES"
  (
    flock 9
    if [ "$(cat "$FIXTURES/.generators.sha256" 2>/dev/null)" != "$want" ]; then
      rm -rf "$FIXTURES/firstrun" "$FIXTURES/cloudinit" "$FIXTURES/rke2" "$FIXTURES/.generators.sha256"
    fi
    [ -f "$FIXTURES/firstrun/raspios-lite-arm64.img.xz" ] ||
      "$SRC/tests/fixtures/make-rpi-os-image" "$FIXTURES/firstrun" --formats img,xz,zst --quiet
    [ -f "$FIXTURES/cloudinit/raspios-lite-arm64.img.zst" ] ||
      "$SRC/tests/fixtures/make-rpi-os-image" "$FIXTURES/cloudinit" --flavour cloudinit --formats img,zst --quiet
    [ -f "$FIXTURES/rke2/sha256sum-arm64.txt" ] ||
      "$SRC/tests/fixtures/make-rke2-release" "$FIXTURES/rke2" --quiet
    echo "$want" >"$FIXTURES/.generators.sha256"
  ) 9>"$FIXTURES.lock"
}

# The stand-in Talos ISO (~45 MB), made once per build tree and shared by the e2e scripts and the
# integration tests: same directory, lock and generator stamp (remade when its generator changes).
# Sets TALOS_FIXTURE.
make_talos_fixture() {
  TALOS_FIXTURE=$FIXTURES/talos
  mkdir -p "$FIXTURES"
  local want
  want=$(cat "$SRC/tests/fixtures/make-talos-iso" "$SRC/tests/fixtures/lib.sh" | sha256sum | cut -d' ' -f1)
  (
    flock 9
    if [ "$(cat "$TALOS_FIXTURE/.generator.sha256" 2>/dev/null)" != "$want" ]; then
      rm -rf "$TALOS_FIXTURE"
      "$SRC/tests/fixtures/make-talos-iso" "$TALOS_FIXTURE" --quiet
      echo "$want" >"$TALOS_FIXTURE/.generator.sha256"
    fi
  ) 9>"$FIXTURES/talos.lock"
}

HTTP_PID=
start_http() {  # start_http DIR -> sets HTTP_PORT
  HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # The server dies with this script however it ends: a script's own EXIT trap replaces the one below
  # (ephemeral_pi_qemu.sh and pi5_http_boot_serve.sh left a server behind on every run that way), and a
  # script killed outright runs no trap. PR_SET_PDEATHSIG (1) sends it SIGTERM when this shell exits.
  python3 -c 'import ctypes, os, runpy, signal, sys
parent = int(sys.argv[1])
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != parent:
    sys.exit(0)  # the script was already gone
sys.argv = ["http.server"] + sys.argv[2:]
runpy.run_module("http.server", run_name="__main__")' "$$" "$HTTP_PORT" --bind 127.0.0.1 --directory "$1" >"$WORK/http.log" 2>&1 &
  HTTP_PID=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/" && return 0; sleep 0.1; done
  fail "HTTP server on 127.0.0.1:$HTTP_PORT did not start"
}
trap '[ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true' EXIT

partition_field() {  # partition_field IMAGE INDEX(0-based) start|size
  sfdisk -J "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2]['$3'])"
}

# Boots a built Raspberry Pi image under qemu-system-aarch64 (TCG) as the Pi firmware would: the
# kernel named by config.txt (kernel_2712.img unless `kernel=`), its initramfs (auto_initramfs), the
# image's own cmdline.txt (serial console swapped for QEMU's), the image as a virtio disk.
# boot_pi_image IMAGE LOG [TIMEOUT_SECONDS]; writes the serial console to LOG.
boot_pi_image() {
  local img=$1 log=$2 limit=${3:-90} dir boot_off kernel initrd cmdline
  dir=$(mktemp -d "$WORK/boot.XXXXXX")
  boot_off=$(( $(partition_field "$img" 0 start) * 512 ))
  mcopy -n -i "$img@@$boot_off" ::/config.txt ::/cmdline.txt "$dir/" || fail "mcopy cannot read $img's boot partition"
  kernel=$(sed -n 's/^kernel=//p' "$dir/config.txt" | tail -n 1)
  kernel=${kernel:-kernel_2712.img}
  case "$kernel" in kernel8.img) initrd=initramfs8 ;; *) initrd=initramfs_2712 ;; esac
  mcopy -n -i "$img@@$boot_off" "::/$kernel" "::/$initrd" "$dir/" || fail "no $kernel/$initrd in $img"
  cmdline=$(tr -d '\n' <"$dir/cmdline.txt" | sed -e 's/console=serial0,115200/console=ttyAMA0/' -e 's/ *console=tty1//')
  grep -q 'root=PARTUUID=' <<<"$cmdline" || fail "$img: cmdline.txt has no root=PARTUUID: $cmdline"
  BOOT_KERNEL=$kernel
  timeout "$limit" qemu-system-aarch64 -M virt -cpu cortex-a72 -m 1024 -smp 1 -display none -monitor none \
    -serial "file:$log" -no-reboot -kernel "$dir/$kernel" -initrd "$dir/$initrd" -append "$cmdline fixture.poweroff" \
    -drive "file=$img,if=virtio,format=raw" </dev/null >"$log.qemu" 2>&1 || true
  sed -i 's/\r$//' "$log"  # the serial console ends lines with CR LF
  rm -rf "$dir"
}

# $WORK/pi-profile.yaml: a Pi 5 RKE2 server profile ("fixture-pi") on the cached fixtures (local paths,
# nothing downloaded): write_fixture_pi_profile NODE [BOOT_YAML_MAP].
write_fixture_pi_profile() {
  make_fixtures
  cat >"$WORK/pi-profile.yaml" <<YAML
kind: rpi5-rke2
name: fixture-pi
base: {path: $FIXTURES/firstrun/raspios-lite-arm64.img}
rke2: {version: v1.33.1+rke2r1, release_dir: $FIXTURES/rke2, images: [rke2-images-core], role: server}
boot: ${2:-"{storage: sd}"}
nodes: [{name: $1}]
YAML
}

# Builds one Raspberry Pi 5 image with `aggrik8s-image build` from that profile:
# build_fixture_pi_image OUTDIR NODE [BOOT_YAML_MAP]; the image is OUTDIR/NODE.img.
build_fixture_pi_image() {
  local out=$1 node=$2
  write_fixture_pi_profile "$node" "${3:-"{storage: sd}"}"
  SOURCE_DATE_EPOCH=1767225600 "$CLI" build -q --cache-dir "$WORK/cache" --out "$out" "$WORK/pi-profile.yaml" \
    >"$WORK/pi-build.log" 2>&1 || { cat "$WORK/pi-build.log" >&2; fail "aggrik8s-image build of the fixture Pi image"; }
  [ -f "$out/$node.img" ] || fail "aggrik8s-image build made no $out/$node.img"
}

# start_serve ARGS...: `aggrik8s-image serve ARGS...` in the background (stderr to $WORK/serve.log);
# returns once it listens, with SERVE_PID, HTTP (ADDRESS:PORT) and TFTP_PORT set. The caller's EXIT
# trap must kill $SERVE_PID.
start_serve() {
  "$CLI" serve "$@" 2>"$WORK/serve.log" &
  SERVE_PID=$!
  for _ in $(seq 300); do grep -q "http: listening on" "$WORK/serve.log" && break; sleep 0.1; done
  HTTP=$(sed -n 's/.*http: listening on \([0-9.:]*\).*/\1/p' "$WORK/serve.log")
  TFTP_PORT=$(sed -n 's/.*tftp: listening on [0-9.]*:\([0-9]*\).*/\1/p' "$WORK/serve.log")
  [ -n "$HTTP" ] && [ -n "$TFTP_PORT" ] || { cat "$WORK/serve.log" >&2; fail "serve did not start"; }
}

# ---- QEMU network boots (dhcp_qemu_*.sh), TCG only ----
qemu_netboot_missing() {  # prints what is missing for a QEMU x86 netboot, nothing when all is there
  [ "$(id -u)" = 0 ] || echo "root"
  command -v qemu-system-x86_64 >/dev/null || echo "qemu-system-x86_64"
  [ -c /dev/net/tun ] || echo "/dev/net/tun"
  command -v busybox >/dev/null || echo "busybox"
  command -v cpio >/dev/null || echo "cpio"
  ls /boot/vmlinuz-* >/dev/null 2>&1 || echo "a kernel in /boot"
}
# ---- a LAN in network namespaces: the server's namespace with bridge br0, clients on veths ----
# lan_server NAMESPACE ADDRESS/PREFIX: a namespace with bridge br0 holding the address.
# The caller's EXIT trap must remove every namespace it made (lan_cleanup NAMESPACE...).
lan_server() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip -n "$1" link add br0 type bridge
  ip -n "$1" addr add "$2" dev br0
  ip -n "$1" link set br0 up
}
# lan_client SERVER-NAMESPACE CLIENT-NAMESPACE PORT MAC: a namespace whose eth0 (with MAC, no address)
# is a veth to PORT, a port of the server namespace's br0. PORT is a host-unique interface name.
lan_client() {
  ip netns add "$2"
  ip link add "$3" netns "$1" type veth peer name eth0 netns "$2"
  ip -n "$1" link set "$3" master br0 up
  ip -n "$2" link set eth0 address "$4"
  ip -n "$2" link set lo up
  ip -n "$2" link set eth0 up
}
# lan_cleanup NAMESPACE...: kills what runs in them and removes them (missing ones are skipped).
lan_cleanup() {
  for ns in "$@"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
  for ns in "$@"; do ip netns del "$ns" 2>/dev/null || true; done
}
# qemu_lan NAMESPACE ADDRESS/PREFIX: lan_server's namespace with tap0 on br0 for a QEMU guest.
qemu_lan() {
  lan_server "$1" "$2"
  ip netns exec "$1" ip tuntap add dev tap0 mode tap
  ip -n "$1" link set tap0 master br0 up
}
qemu_lan_cleanup() { lan_cleanup "$@"; }
# marker_boot_assets DIR: DIR/vmlinuz (the newest /boot/vmlinuz-*) and DIR/initrd.gz, a busybox
# initramfs whose /init prints AGGRIK8S-DHCP-BOOT-MARKER and the kernel command line, then powers off.
marker_boot_assets() {
  local dir=$1 root
  root=$(mktemp -d "$WORK/initramfs.XXXXXX")
  mkdir -p "$dir" "$root/bin"
  cp /usr/bin/busybox "$root/bin/busybox"
  cat >"$root/init" <<'SH'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
echo "AGGRIK8S-DHCP-BOOT-MARKER"
echo "cmdline: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
SH
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$dir/initrd.gz")
  cp "$(ls /boot/vmlinuz-* | sort -V | tail -1)" "$dir/vmlinuz"
  rm -rf "$root"
}
# boot_marker_vm NAME QEMU_ARGS...: boots a VM on tap0 of $QEMU_NS with NIC MAC $QEMU_MAC (and
# ${NIC_EXTRA} appended to the -device), serial console to $WORK/NAME-serial.log, then checks the
# marker and that the command line carries aggrik8s.node=$QEMU_NODE. Shows $WORK/serve.log on failure.
boot_marker_vm() {
  local name=$1; shift
  ip netns exec "$QEMU_NS" timeout 150 qemu-system-x86_64 -m 512 -smp 1 -display none -monitor none -no-reboot "$@" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "virtio-net-pci,netdev=n0,mac=$QEMU_MAC${NIC_EXTRA:-}" -boot n \
    -serial "file:$WORK/$name-serial.log" </dev/null >"$WORK/$name-qemu.log" 2>&1 || true
  sed -i 's/\r$//' "$WORK/$name-serial.log" 2>/dev/null || true
  grep -q "AGGRIK8S-DHCP-BOOT-MARKER" "$WORK/$name-serial.log" || {
    tail -n 20 "$WORK/$name-serial.log" "$WORK/serve.log" >&2 || true; fail "$name: the VM did not reach the marker"; }
  pass "$name: the VM booted kernel + initramfs through our DHCP and HTTP"
  grep -q "^cmdline: .*aggrik8s.node=$QEMU_NODE" "$WORK/$name-serial.log" ||
    fail "$name: the node's own arguments are missing: $(grep cmdline: "$WORK/$name-serial.log")"
  pass "$name: the kernel command line carries the node's own arguments"
}

# ovmf_firmware NAME: sets OVMF_ARGS to the QEMU arguments of a q35 machine with OVMF, whose UEFI
# variable store is a fresh copy for VM NAME ($WORK/NAME-vars.fd).
ovmf_firmware() {
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$WORK/$1-vars.fd"
  OVMF_ARGS=(-machine q35 -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
             -drive "if=pflash,format=raw,file=$WORK/$1-vars.fd")
}

# boot_marker_vm_ovmf NAME [QEMU ARGS...]: boot_marker_vm under OVMF with QEMU's iPXE option ROM
# dropped (romfile=), so EDK2's own network boot client (PXE, or HTTP boot when PXE is switched off)
# makes the first DHCP request.
boot_marker_vm_ovmf() {
  local name=$1; shift
  ovmf_firmware "$name"
  NIC_EXTRA=,romfile= boot_marker_vm "$name" "${OVMF_ARGS[@]}" "$@"
}

# make_tree_overlay DIR: an overlay with what an overlay copy must keep exactly (docs/profiles.md,
# "Overlays"): symlinks absolute, relative, dangling, leading out of the overlay and long enough to need
# a block ($LONG_TARGET), a hard link, setuid/setgid/sticky modes and an empty directory. The image
# build test checks each entry with debugfs, the QEMU boot test from inside the booted node.
make_tree_overlay() {
  local ov=$1
  mkdir -p "$ov/etc/acc" "$ov/usr/local/share/acc" "$ov/usr/local/bin" "$ov/srv/acc-shared" "$ov/srv/acc-drop" \
    "$ov/var/lib/acc-empty"
  printf 'hello from the overlay\n' >"$ov/etc/acc/hello.txt"
  chmod 0644 "$ov/etc/acc/hello.txt"
  ln -s /etc/hostname "$ov/etc/acc/hostname-link"
  ln -s ../../../../etc/acc/hello.txt "$ov/usr/local/share/acc/hello-link"
  ln -s /nonexistent/acc-target "$ov/etc/acc/dangling"
  ln -s ../../../../../../outside-the-overlay "$ov/etc/acc/outside"
  LONG_TARGET=/usr/local/share/acc/$(printf 'l%.0s' $(seq 90))
  ln -s "$LONG_TARGET" "$ov/etc/acc/long-link"
  ln "$ov/etc/acc/hello.txt" "$ov/usr/local/share/acc/hello-hard"
  printf '#!/bin/sh\n' >"$ov/usr/local/bin/acc-suid"
  chmod 4755 "$ov/usr/local/bin/acc-suid"
  chmod 2775 "$ov/srv/acc-shared"
  chmod 1777 "$ov/srv/acc-drop"
  chmod 0750 "$ov/var/lib/acc-empty"
}
