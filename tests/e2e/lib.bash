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

# Fixtures are deterministic: made once per build tree and reused by every e2e script.
FIXTURES=$(dirname "$WORK")/fixtures
make_fixtures() {
  mkdir -p "$FIXTURES"
  (
    flock 9
    [ -f "$FIXTURES/firstrun/raspios-lite-arm64.img.xz" ] ||
      "$SRC/tests/fixtures/make-rpi-os-image" "$FIXTURES/firstrun" --formats img,xz,zst --quiet
    [ -f "$FIXTURES/cloudinit/raspios-lite-arm64.img.zst" ] ||
      "$SRC/tests/fixtures/make-rpi-os-image" "$FIXTURES/cloudinit" --flavour cloudinit --formats img,zst --quiet
    [ -f "$FIXTURES/rke2/sha256sum-arm64.txt" ] ||
      "$SRC/tests/fixtures/make-rke2-release" "$FIXTURES/rke2" --quiet
  ) 9>"$FIXTURES.lock"
}

HTTP_PID=
start_http() {  # start_http DIR -> sets HTTP_PORT
  HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$1" >"$WORK/http.log" 2>&1 &
  HTTP_PID=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/" && return 0; sleep 0.1; done
  fail "HTTP server on 127.0.0.1:$HTTP_PORT did not start"
}
trap '[ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true' EXIT

partition_field() {  # partition_field IMAGE INDEX(0-based) start|size
  sfdisk -J "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2]['$3'])"
}

# Fixtures made by an older version of the generators are remade: the shared fixture directory is
# stamped with the generators' sha256. Call instead of make_fixtures where the fixture's content
# matters (e.g. the stand-in init's checks).
make_fresh_fixtures() {
  local stamp want
  want=$(cat "$SRC/tests/fixtures/make-rpi-os-image" "$SRC/tests/fixtures/make-rke2-release" \
    "$SRC/tests/fixtures/lib.sh" | sha256sum | cut -d' ' -f1)
  mkdir -p "$FIXTURES"
  (
    flock 9
    stamp=$(cat "$FIXTURES/.generators.sha256" 2>/dev/null || true)
    if [ "$stamp" != "$want" ]; then
      rm -rf "$FIXTURES/firstrun" "$FIXTURES/cloudinit" "$FIXTURES/rke2"
    fi
  ) 9>"$FIXTURES.lock"
  make_fixtures
  echo "$want" >"$FIXTURES/.generators.sha256"
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
