# e2e: images built from both base flavours (firstrun.sh / cloud-init NoCloud), a server and an agent
# node each, booted under qemu-system-aarch64 (TCG) with the kernel, initramfs and cmdline.txt from the
# image's own boot partition. The fixture's stand-in init (tests/fixtures/make-rpi-os-image, rcS)
# checks in the booted system that the preload and the first-boot settings are where the node looks
# for them, one `fixture-init: check ...` line per fact; this script greps those lines. An overlay
# brings its own check script (`fixture-overlay: ...` lines) for how overlay entries look on the node.
source "$(dirname "$0")/lib.bash"
command -v qemu-system-aarch64 >/dev/null || fail "qemu-system-aarch64 is not installed (scripts/setup)"
START=$(date +%s)
make_fixtures
start_http "$FIXTURES"

TOKEN=K10boot-e2e-secret-token::server:0123456789
printf '%s\n' "$TOKEN" >"$WORK/token"
chmod 600 "$WORK/token"
CORE=rke2-images-core.linux-arm64.tar.zst
CORE_BYTES=$(stat -c %s "$FIXTURES/rke2/$CORE")

# An overlay copied into every image, checked from inside the booted system: symlinks (absolute,
# relative, dangling) as written, a hard link as one inode, modes, an empty directory, a template. Its
# /etc/inittab is the fixture's (tests/fixtures/make-rpi-os-image) with one line added in front of rcS,
# so busybox init runs the overlay's own check script first (read-only: nothing is mounted yet, and
# stat/readlink/cat need nothing mounted); rcS then powers off as before.
OV=$WORK/overlay
make_tree_overlay "$OV"
mkdir -p "$OV/usr/local/sbin"
printf 'node={{node}} hostname={{hostname}} role={{role}} profile={{profile}}\n' >"$OV/etc/acc/node.txt.tmpl"
cat >"$OV/etc/inittab" <<'EOF'
::sysinit:/usr/local/sbin/acc-overlay-checks
::sysinit:/etc/init.d/rcS
::askfirst:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
EOF
cat >"$OV/usr/local/sbin/acc-overlay-checks" <<'EOF'
#!/bin/sh
# One "fixture-overlay:" line per overlay entry, as the booted node sees it (lstat, never followed).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
for p in /etc/hostname /etc/acc/hostname-link /usr/local/share/acc/hello-link /etc/acc/dangling \
  /etc/acc/hello.txt /usr/local/share/acc/hello-hard /usr/local/bin/acc-suid /srv/acc-drop /var/lib/acc-empty; do
  if [ -L "$p" ]; then
    echo "fixture-overlay: $p: $(stat -c '%F %a %h %u:%g' "$p") -> $(readlink "$p")"
  elif [ -e "$p" ]; then
    echo "fixture-overlay: $p: $(stat -c '%F %a %h %u:%g' "$p")"
  else
    echo "fixture-overlay: $p: MISSING"
  fi
done
[ "$(stat -c %i /etc/acc/hello.txt)" = "$(stat -c %i /usr/local/share/acc/hello-hard)" ] &&
  echo "fixture-overlay: hello.txt and hello-hard are one inode"
echo "fixture-overlay: /var/lib/acc-empty holds $(ls -A /var/lib/acc-empty | wc -l) entries"
echo "fixture-overlay: hello-link reads '$(cat /usr/local/share/acc/hello-link)'"
[ -s /etc/hostname ] && [ "$(cat /etc/acc/hostname-link)" = "$(cat /etc/hostname)" ] &&
  echo "fixture-overlay: hostname-link reads /etc/hostname ('$(cat /etc/hostname)')"
echo "fixture-overlay: node.txt '$(cat /etc/acc/node.txt)'"
EOF
chmod 0755 "$OV/usr/local/sbin/acc-overlay-checks"

declare -A BASE=([firstrun]=firstrun/raspios-lite-arm64.img.xz [cloudinit]=cloudinit/raspios-lite-arm64.img.zst)
for flavour in firstrun cloudinit; do
  sha=$(sha256sum "$FIXTURES/${BASE[$flavour]}" | cut -d' ' -f1)
  cat >"$WORK/$flavour.yaml" <<YAML
kind: rpi5-rke2
name: boot-$flavour
base: {url: "http://127.0.0.1:$HTTP_PORT/${BASE[$flavour]}", sha256: $sha}
rke2:
  version: v1.33.1+rke2r1
  release_url: http://127.0.0.1:$HTTP_PORT/rke2
  images: [rke2-images-core]
  role: server
output: {root_free_space: 16MiB, bmap: false}
overlays: [overlay]
nodes:
  - name: s1
  - name: a1
    system: {hostname: worker-a1}
    rke2: {role: agent, server: "https://10.0.0.1:9345", token: {file: token}}
    boot: {kernel_page_size_kib: 4}
YAML
  expect_status 0 "$flavour: build a server and an agent image" -- \
    "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out-$flavour" "$WORK/$flavour.yaml"
done

check() {  # check LOG DESCRIPTION FIXED-STRING
  grep -qF -- "$3" "$1" || { grep 'fixture-init\|fixture-overlay\|initramfs\|firstboot' "$1" >&2 || cat "$1" >&2; fail "$2: boot log lacks '$3' ($1)"; }
}
boot_and_check() {  # boot_and_check FLAVOUR NODE HOSTNAME ROLE KERNEL
  local flavour=$1 node=$2 host=$3 role=$4 want_kernel=$5 other img log
  other=$([ "$role" = server ] && echo agent || echo server)
  img=$WORK/boot-$flavour-$node.img
  log=$WORK/boot-$flavour-$node.log
  # Boot a sparse copy: the built image stays as the build wrote it.
  cp --sparse=always "$WORK/out-$flavour/$node.img" "$img"
  local t0=$SECONDS
  boot_pi_image "$img" "$log" 90
  [ "$BOOT_KERNEL" = "$want_kernel" ] || fail "$flavour/$node: config.txt selects $BOOT_KERNEL, expected $want_kernel"
  check "$log" "$flavour/$node" "fixture-init: boot complete"
  pass "$flavour/$node: booted ($BOOT_KERNEL, $((SECONDS - t0)) s) from the image's own kernel, initramfs and cmdline.txt"
  check "$log" "$flavour/$node" "fixture-init: check rke2 --version: ok: rke2 version v1.33.1+rke2r1"
  check "$log" "$flavour/$node" \
    "fixture-init: check unit rke2-$role.service: ok: enabled, resolves to /usr/local/lib/systemd/system/rke2-$role.service"
  ! grep -q "check unit rke2-$other.service" "$log" || fail "$flavour/$node: rke2-$other.service is enabled too"
  local token=no server=none
  if [ "$role" = agent ]; then token=yes server=https://10.0.0.1:9345; fi
  check "$log" "$flavour/$node" \
    "fixture-init: check rke2 config: mode 600 owner 0:0 node-name $host token $token server $server"
  ! grep -qF "${TOKEN%%::*}" "$log" || fail "$flavour/$node: the token appears on the console"
  check "$log" "$flavour/$node" "fixture-init: preloaded $CORE $CORE_BYTES bytes"
  check "$log" "$flavour/$node" "fixture-init: check module br_netfilter (modules-load.d/rke2.conf): ok: loaded"
  check "$log" "$flavour/$node" "fixture-init: check module overlay (modules-load.d/rke2.conf): ok: loaded"
  pass "$flavour/$node: rke2 runs, rke2-$role.service enabled, config.yaml 0600 0:0 node-name $host, archive preloaded, modules loaded"
  check "$log" "$flavour/$node" "fixture-init: fstab: /boot/firmware mounted from PARTUUID=5452574f-01 (/dev/vda1, vfat)"
  check "$log" "$flavour/$node" "fixture-init: check cmdline cgroup_enable=memory: ok"
  if [ "$flavour" = firstrun ]; then
    check "$log" "$flavour/$node" "firstboot (fixture): done"
    check "$log" "$flavour/$node" \
      "fixture-init: check cmdline systemd.run=/boot/firmware/firstrun.sh: ok:"
    grep -F "check cmdline systemd.run=/boot/firmware/firstrun.sh: ok:" "$log" | grep -qF "#!/bin/bash, hostname $host" ||
      fail "$flavour/$node: firstrun.sh is not a bash script setting hostname $host"
    pass "$flavour/$node: /boot/firmware (per fstab) holds firstrun.sh for hostname $host, started by systemd.run=; cgroup_enable=memory"
  else
    grep -E "fixture-init: check cmdline ds=nocloud;i=aggrik8s-$node-[0-9a-f]+: ok: seed /boot/firmware/, meta-data instance-id matches, user-data #cloud-config hostname $host\$" \
      "$log" >/dev/null || { grep fixture-init "$log" >&2; fail "$flavour/$node: NoCloud seed / instance id / hostname"; }
    pass "$flavour/$node: /boot/firmware (per fstab) holds the NoCloud seed for hostname $host; ds=nocloud;i= matches meta-data; cgroup_enable=memory"
  fi
  local o=fixture-overlay
  check "$log" "$flavour/$node" "$o: /etc/hostname: regular file 644 1 0:0"
  check "$log" "$flavour/$node" "$o: /etc/acc/hostname-link: symbolic link 777 1 0:0 -> /etc/hostname"
  check "$log" "$flavour/$node" "$o: /usr/local/share/acc/hello-link: symbolic link 777 1 0:0 -> ../../../../etc/acc/hello.txt"
  check "$log" "$flavour/$node" "$o: /etc/acc/dangling: symbolic link 777 1 0:0 -> /nonexistent/acc-target"
  check "$log" "$flavour/$node" "$o: /etc/acc/hello.txt: regular file 644 2 0:0"
  check "$log" "$flavour/$node" "$o: /usr/local/share/acc/hello-hard: regular file 644 2 0:0"
  check "$log" "$flavour/$node" "$o: hello.txt and hello-hard are one inode"
  check "$log" "$flavour/$node" "$o: /usr/local/bin/acc-suid: regular file 4755 1 0:0"
  check "$log" "$flavour/$node" "$o: /srv/acc-drop: directory 1777 2 0:0"
  check "$log" "$flavour/$node" "$o: /var/lib/acc-empty: directory 750 2 0:0"
  check "$log" "$flavour/$node" "$o: /var/lib/acc-empty holds 0 entries"
  check "$log" "$flavour/$node" "$o: hello-link reads 'hello from the overlay'"
  check "$log" "$flavour/$node" "$o: hostname-link reads /etc/hostname ('"
  check "$log" "$flavour/$node" "$o: node.txt 'node=$node hostname=$host role=$role profile=boot-$flavour'"
  pass "$flavour/$node: the overlay as the booted node sees it: symlinks as written, one inode for the hard link, modes, empty directory, template"
  ! grep -E 'fixture-init: .*(MISSING|WRONG|FAILED|NOT mounted)' "$log" || fail "$flavour/$node: the booted system reports a problem"
  local root_off
  root_off=$(( $(partition_field "$img" 1 start) * 512 ))
  e2fsck -fn "$img?offset=$root_off" >"$WORK/e2fsck.log" 2>&1 || { cat "$WORK/e2fsck.log" >&2; fail "$flavour/$node: e2fsck after boot"; }
  rm -f "$img"
}

boot_and_check firstrun s1 s1 server kernel_2712.img
boot_and_check firstrun a1 worker-a1 agent kernel8.img
boot_and_check cloudinit s1 s1 server kernel_2712.img
boot_and_check cloudinit a1 worker-a1 agent kernel8.img

# The checks must be able to fail: a server image whose unit file is gone reports the dangling link.
cp --sparse=always "$WORK/out-firstrun/s1.img" "$WORK/broken.img"
ROOT_OFF=$(( $(partition_field "$WORK/broken.img" 1 start) * 512 ))
debugfs -w -R 'rm /usr/local/lib/systemd/system/rke2-server.service' "$WORK/broken.img?offset=$ROOT_OFF" >/dev/null 2>&1 ||
  fail "debugfs cannot remove the unit file"
boot_pi_image "$WORK/broken.img" "$WORK/broken.log" 90
check "$WORK/broken.log" "broken image" \
  "fixture-init: check unit rke2-server.service: MISSING: link to /usr/local/lib/systemd/system/rke2-server.service does not resolve"
pass "a dangling rke2-server.service link is reported by the booted system"
rm -f "$WORK/broken.img"

echo "$CHECKS checks passed in $(( $(date +%s) - START )) s"
