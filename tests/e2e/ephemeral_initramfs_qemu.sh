# e2e: the initramfs of an ephemeral Pi node (builder/rpi/ephemeral_initramfs.hpp, built here by
# tests/tools/initramfs_tool from the fixture image's root partition: its modules, its busybox) boots
# the fixture's own arm64 kernel under qemu-system-aarch64 (TCG, -M virt, virtio-net on QEMU's user
# network: its DHCP server answers udhcpc, 10.0.2.2 is the host's 127.0.0.1). It downloads a squashfs
# root from a loopback HTTP server, checks its sha256, mounts it under a tmpfs overlay, extracts the
# node's identity tar over it and switches to the root's /sbin/init, which reports what it sees and
# powers off. Then the failures: a wrong sha256 (retried with back-off, then "giving up ... rebooting")
# and an identity URL answering 404.
source "$(dirname "$0")/lib.bash"
command -v qemu-system-aarch64 >/dev/null || fail "qemu-system-aarch64 is not installed (scripts/setup)"
command -v mksquashfs >/dev/null || fail "mksquashfs is not installed (squashfs-tools)"
START=$(date +%s)
TOOL=$(cd "$(dirname "$CLI")/.." && pwd)/tests/tools/initramfs_tool
[ -x "$TOOL" ] || fail "$TOOL is not built (ninja -C build initramfs_tool)"
make_fixtures
# shellcheck source=/dev/null
source "$FIXTURES/firstrun/fixture.env"
IMG=$FIXTURES/firstrun/$FIXTURE_IMAGE

# The kernel the Pi firmware would boot (kernel8.img: a gzip'd arm64 Image) and its release.
mcopy -n -i "$IMG@@$FIXTURE_BOOT_OFFSET" ::/kernel8.img "$WORK/kernel8.img" || fail "mcopy kernel8.img from $IMG"
expect_status 0 "kernel release read from kernel8.img" -- "$TOOL" --kernel-release "$WORK/kernel8.img"
[ "$(cat "$WORK/last.out")" = "$FIXTURE_KERNEL_VERSION" ] || fail "kernel8.img says $(cat "$WORK/last.out"), fixture.env $FIXTURE_KERNEL_VERSION"

# The initramfs, twice: the same bytes.
for n in 1 2; do
  expect_status 0 "initramfs built from the fixture's root ($n)" -- \
    "$TOOL" "$IMG" "$FIXTURE_ROOT_OFFSET" "$FIXTURE_ROOT_BYTES" "@$WORK/kernel8.img" "$WORK/initramfs.$n" --fixed-time 1767225600
  cp "$WORK/last.out" "$WORK/tool.$n.out"
done
cmp -s "$WORK/initramfs.1" "$WORK/initramfs.2" || fail "two builds of the initramfs differ"
pass "the initramfs is reproducible ($(stat -c %s "$WORK/initramfs.1") bytes)"
grep -qx "module: af_packet built-in" "$WORK/tool.1.out" || fail "af_packet not reported built in: $(cat "$WORK/tool.1.out")"
grep -qx "module: bcm_phy_lib kernel/drivers/net/phy/bcm-phy-lib.ko (dependency)" "$WORK/tool.1.out" ||
  fail "broadcom's dependency bcm-phy-lib missing: $(cat "$WORK/tool.1.out")"
grep -qx "kernel_config_checked: yes" "$WORK/tool.1.out" || fail "/boot/config-$FIXTURE_KERNEL_VERSION was not checked"
pass "modules: macb/broadcom with their dependencies, af_packet built in; the kernel config was checked"
INITRD=$WORK/initramfs.1
# GNU cpio lists and extracts it (the kernel unpacks it below).
mkdir -p "$WORK/unpacked"
(cd "$WORK/unpacked" && gzip -dc "$INITRD" | cpio -idm --quiet --no-absolute-filenames) || fail "cpio cannot extract the initramfs"
[ -x "$WORK/unpacked/init" ] && [ -L "$WORK/unpacked/bin/udhcpc" ] && [ -f "$WORK/unpacked/lib/modules/$FIXTURE_KERNEL_VERSION/aggrik8s.modules" ] ||
  fail "extracted initramfs lacks /init, /bin/udhcpc or aggrik8s.modules"
gzip -dc "$INITRD" | cpio -itv --quiet >"$WORK/initramfs.list" 2>&1 || fail "cpio -itv cannot list the initramfs"
grep -q '^crw------- .* 5, *1 .* dev/console$' "$WORK/initramfs.list" || fail "no /dev/console 5:1 in the initramfs"
pass "GNU cpio extracts it: /init, busybox applets, modules, /dev/console 5:1"

# The root: a tiny busybox tree whose /sbin/init reports what the node sees and powers off.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,sbin,etc,proc,sys,dev,run,tmp,root}
debugfs -R "dump /usr/bin/busybox $ROOTFS/bin/busybox" "$IMG?offset=$FIXTURE_ROOT_OFFSET" >/dev/null 2>&1 ||
  fail "debugfs cannot read /usr/bin/busybox from $IMG"
chmod 0755 "$ROOTFS/bin/busybox"
for a in sh cat stat grep poweroff mount ls hostname; do ln -s busybox "$ROOTFS/bin/$a"; done
cat >"$ROOTFS/sbin/init" <<'SH'
#!/bin/busybox sh
export PATH=/bin
echo "EPHEMERAL-ROOT-MARKER pid $$"
echo "root-test: hostname file '$(cat /etc/hostname)'"
echo "root-test: password $(stat -c '%a %u:%g' /etc/rancher/node/password) '$(cat /etc/rancher/node/password)'"
echo "root-test: owned $(stat -c '%a %u:%g' /etc/owned-by-1000)"
echo "root-test: root fs $(grep ' / ' /proc/mounts | cut -d' ' -f3 | tail -n 1)"
echo "root-test: run $(grep ' /run/aggrik8s/lower ' /proc/mounts | cut -d' ' -f3)"
if echo x >/etc/written-at-boot; then echo "root-test: root is writable"; fi
while IFS= read -r line; do echo "root-test: env $line"; done </etc/aggrik8s/ephemeral-boot.env
poweroff -f
SH
chmod 0755 "$ROOTFS/sbin/init"
for a in cut tail; do ln -s busybox "$ROOTFS/bin/$a"; done
echo "squashfs-default" >"$ROOTFS/etc/hostname"
SERVE=$WORK/www
mkdir -p "$SERVE"
mksquashfs "$ROOTFS" "$SERVE/root.squashfs" -all-root -noappend -quiet -mkfs-time 1767225600 >/dev/null || fail "mksquashfs"
ROOT_SHA=$(sha256sum "$SERVE/root.squashfs" | cut -d' ' -f1)
# The identity: per-node files with their own modes and owners (python's tarfile sets them exactly).
python3 - "$SERVE/identity.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    def add(name, data, mode, uid=0, gid=0, kind=tarfile.REGTYPE):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 1767225600
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    add("etc/hostname", b"node-e2e\n", 0o644)
    for d in ("etc/rancher", "etc/rancher/node"):
        add(d, b"", 0o755, kind=tarfile.DIRTYPE)
    add("etc/rancher/node/password", b"p4ssw0rd-e2e\n", 0o600)
    add("etc/owned-by-1000", b"x\n", 0o640, 1000, 1000)
PY
start_http "$SERVE"

boot() {  # boot NAME TIMEOUT EXTRA-APPEND...: serial console to $WORK/NAME.log
  local name=$1 limit=$2
  shift 2
  timeout "$limit" qemu-system-aarch64 -M virt -cpu cortex-a72 -m 1024 -smp 1 -display none -monitor none -no-reboot \
    -serial "file:$WORK/$name.log" -kernel "$WORK/kernel8.img" -initrd "$INITRD" \
    -append "console=ttyAMA0 $*" -netdev user,id=n0 -device virtio-net-pci,netdev=n0 </dev/null >"$WORK/$name.qemu" 2>&1 ||
    { cat "$WORK/$name.qemu" >&2; tail -n 30 "$WORK/$name.log" >&2; fail "$name: QEMU did not exit by itself within $limit s"; }
  # A kernel message printed while a line of ours was on its way lands on the same console line
  # ("...@2.71s[    2.741971] IPv6: ..."): each goes back to a line of its own before lines are matched.
  sed -i -E 's/([^[:space:]])(\[ *[0-9]+\.[0-9]{6}\] )/\1\n\2/g; s/\r$//' "$WORK/$name.log"
}
check() {  # check LOG DESCRIPTION EXTENDED-REGEX
  grep -qE -- "$3" "$1" || { grep -E 'aggrik8s-init|root-test|Kernel panic' "$1" >&2 || tail -n 40 "$1" >&2; fail "$2: console lacks /$3/ ($1)"; }
}
URL=http://10.0.2.2:$HTTP_PORT

# ---- a good boot -------------------------------------------------------------------------------------
t0=$SECONDS
boot good 240 "aggrik8s.root=$URL/root.squashfs aggrik8s.root_sha256=$ROOT_SHA aggrik8s.identity=$URL/identity.tar"
L=$WORK/good.log
at='@[0-9]+\.[0-9]{2}s$'
check "$L" good "^aggrik8s-init: ephemeral boot, kernel $FIXTURE_KERNEL_VERSION $at"
check "$L" good "^aggrik8s-init: modules: loaded squashfs loop overlay libphy .*virtio_net .*virtio_pci virtio_mmio; built in: af_packet $at"
check "$L" good "^aggrik8s-init: link: eth0 is up \(52:54:00:12:34:56\) after [0-9.]+ s $at"
check "$L" good "^aggrik8s-init: dhcp: lease 10\.0\.2\.15/24 router 10\.0\.2\.2 dns 10\.0\.2\.3 from 10\.0\.2\.2 for [0-9]+ s on eth0 @"
check "$L" good "^aggrik8s-init: dhcp: 10\.0\.2\.15/24 on eth0 router 10\.0\.2\.2 in [0-9.]+ s $at"
check "$L" good "^aggrik8s-init: root: downloading $URL/root.squashfs \($(stat -c %s "$SERVE/root.squashfs") bytes\) $at"
check "$L" good "^aggrik8s-init: root: downloaded $(stat -c %s "$SERVE/root.squashfs") bytes in [0-9.]+ s \([0-9.]+ MiB/s\) $at"
check "$L" good "^aggrik8s-init: verify: sha256 $ROOT_SHA ok in [0-9.]+ s $at"
check "$L" good "^aggrik8s-init: mount: squashfs under a tmpfs overlay at /newroot in [0-9.]+ s $at"
check "$L" good "^aggrik8s-init: identity: 5 entries \([0-9]+ bytes\) from $URL/identity.tar in [0-9.]+ s $at"
check "$L" good "^aggrik8s-init: switch_root: starting /sbin/init $at"
pass "console: one line per step (modules, link, DHCP, download with MiB/s, verify, mount, identity, switch_root), timed"
check "$L" good "^EPHEMERAL-ROOT-MARKER pid 1$"
check "$L" good "^root-test: hostname file 'node-e2e'$"
check "$L" good "^root-test: password 600 0:0 'p4ssw0rd-e2e'$"
check "$L" good "^root-test: owned 640 1000:1000$"
check "$L" good "^root-test: root fs overlay$"
check "$L" good "^root-test: run squashfs$"
check "$L" good "^root-test: root is writable$"
check "$L" good "^root-test: env AGGRIK8S_ROOT_SHA256=$ROOT_SHA$"
check "$L" good "^root-test: env AGGRIK8S_ROOT_URL='$URL/root.squashfs'$"
check "$L" good "^root-test: env AGGRIK8S_ADDRESS=10.0.2.15/24$"
check "$L" good "^root-test: env AGGRIK8S_TIME_DOWNLOAD=[0-9]+\.[0-9]{2}$"
! grep -q 'FAILED' "$L" || fail "good boot: a step failed: $(grep FAILED "$L")"
pass "the root's /sbin/init ran as pid 1 on the overlay, with the identity's files (modes, owners) and ephemeral-boot.env ($((SECONDS - t0)) s)"

# A boot that must fail: boot_fails NAME APPEND WHY-REGEX. The last attempt's FAILED line and the
# giving-up line must carry WHY; the root's init must never run. Sets L to the log.
boot_fails() {
  local name=$1 append=$2 why=$3 attempts
  attempts=$(sed -n 's/.*aggrik8s.retries=\([0-9]*\).*/\1/p' <<<"$append")
  boot "$name" 240 "$append"
  L=$WORK/$name.log
  check "$L" "$name" "^aggrik8s-init: FAILED: [a-z_]+: $why \(attempt $attempts of $attempts\) $at"
  check "$L" "$name" "^aggrik8s-init: giving up: [a-z_]+: $why after $attempts attempts; rebooting in 10 s $at"
  ! grep -q 'EPHEMERAL-ROOT-MARKER\|switch_root:' "$L" || fail "$name: the node switched root all the same"
}
ZEROS=$(printf '0%.0s' $(seq 64))

# ---- a corrupt root (wrong sha256): retried with back-off, then a reboot -----------------------------
t0=$SECONDS
boot_fails badsha "aggrik8s.root=$URL/root.squashfs aggrik8s.root_sha256=$ZEROS aggrik8s.identity=$URL/identity.tar aggrik8s.retries=2" \
  "sha256 of $URL/root.squashfs is $ROOT_SHA, expected 0{64}"
check "$L" badsha "^aggrik8s-init: FAILED: download: sha256 of $URL/root.squashfs is $ROOT_SHA, expected 0{64} \(attempt 1 of 2\) $at"
check "$L" badsha "^aggrik8s-init: download: retrying in 1 s $at"
[ "$(grep -c 'root: downloading' "$L")" = 2 ] || fail "badsha: expected 2 downloads, got $(grep -c 'root: downloading' "$L")"
pass "a sha256 mismatch fails the download step, which is retried once (aggrik8s.retries=2), then the node reboots ($((SECONDS - t0)) s)"

# ---- an identity the server refuses (404) ------------------------------------------------------------
t0=$SECONDS
boot_fails noidentity "aggrik8s.root=$URL/root.squashfs aggrik8s.root_sha256=$ROOT_SHA aggrik8s.identity=$URL/nodes/unknown.tar aggrik8s.retries=1" \
  "wget $URL/nodes/unknown.tar: .*404.*"
check "$L" noidentity "^aggrik8s-init: mount: squashfs under a tmpfs overlay"
pass "a 404 identity stops the boot: no node without its identity ($((SECONDS - t0)) s)"

# ---- a root larger than the node's RAM (a sparse 2 GiB file: only its Content-Length is fetched) -------
truncate -s 2G "$SERVE/huge.squashfs"
t0=$SECONDS
boot_fails toobig "aggrik8s.root=$URL/huge.squashfs aggrik8s.root_sha256=$ROOT_SHA aggrik8s.identity=$URL/identity.tar aggrik8s.retries=1" \
  "the root is 2147483648 bytes, more than the [0-9]+ KiB of RAM available"
! grep -q 'root: downloading' "$L" || fail "toobig: the download started anyway"
pass "a root larger than the node's free RAM is refused before downloading ($((SECONDS - t0)) s)"

# ---- bad input to the builder ------------------------------------------------------------------------
expect_status 1 "a missing required module is refused" -- \
  "$TOOL" "$IMG" "$FIXTURE_ROOT_OFFSET" "$FIXTURE_ROOT_BYTES" "$FIXTURE_KERNEL_VERSION" "$WORK/bad.img" --extra-module no-such-mod
expect_output "missing module: no_such_mod is neither in modules.dep nor in modules.builtin of kernel $FIXTURE_KERNEL_VERSION" \
  "the message names the module and the kernel"
[ ! -e "$WORK/bad.img" ] && [ ! -e "$WORK/bad.img.partial" ] || fail "a refused build left a file behind"
expect_status 1 "an x86-64 busybox is refused" -- \
  "$TOOL" "$IMG" "$FIXTURE_ROOT_OFFSET" "$FIXTURE_ROOT_BYTES" "$FIXTURE_KERNEL_VERSION" "$WORK/bad.img" --busybox "$(command -v busybox || echo /bin/ls)"
expect_output "is an ELF for machine 62 \(x86-64\), not 183 \(AArch64\)" "the message says what the busybox is"
expect_status 0 "busybox-static's .deb as the busybox source" -- \
  "$TOOL" "$IMG" "$FIXTURE_ROOT_OFFSET" "$FIXTURE_ROOT_BYTES" "$FIXTURE_KERNEL_VERSION" "$WORK/deb.img" \
  --busybox "${AGGRIK8S_FIXTURE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aggrik8s-image/fixtures}/debs/$FIXTURE_BUSYBOX_DEB"
expect_output "^busybox: .*\.deb:\./bin/busybox$" "the .deb's ./bin/busybox is used"

echo "$CHECKS checks passed in $(( $(date +%s) - START )) s"
