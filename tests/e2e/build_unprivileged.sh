#!/usr/bin/env bash
# `build` is rootless: an ordinary user (nobody here, with no capabilities, its own HOME and the default
# cache under it) builds a Raspberry Pi 5 disk image with its ephemeral output, and per-node Talos ISOs,
# from files that user owns, and gets the same bytes as root building the same profiles (owner and
# group in the image are always root, whoever owns the overlay on the build host). Every test but this
# one runs as root, where a step that quietly needs privileges (a chown, a mknod, a loop device, a file
# only root can read) would go unnoticed. Needs root to switch users; skipped otherwise.
source "$(dirname "$0")/lib.bash"

if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null || ! command -v debugfs >/dev/null; then
  echo "SKIP: needs root, setpriv and debugfs"; exit 0
fi
make_fixtures
make_talos_fixture
EPOCH=1767225600

# make_inputs DIR: the profiles and everything they read, in DIR.
make_inputs() {
  local dir=$1
  mkdir -p "$dir/overlay/etc/app" "$dir/overlay/usr/local/bin" "$dir/secrets"
  echo "app setting" >"$dir/overlay/etc/app/app.conf"
  ln "$dir/overlay/etc/app/app.conf" "$dir/overlay/etc/app/same.conf"
  ln -s app.conf "$dir/overlay/etc/app/link.conf"
  printf '#!/bin/sh\necho tool\n' >"$dir/overlay/usr/local/bin/tool"
  chmod 0750 "$dir/overlay/usr/local/bin/tool"
  chmod 0640 "$dir/overlay/etc/app/app.conf"
  printf 'K10unprivileged-e2e-token::server:0123456789\n' >"$dir/secrets/token"
  cp "$SRC/profiles/example-secrets/worker.yaml" "$dir/secrets/worker.yaml"
  chmod 0600 "$dir/secrets/token" "$dir/secrets/worker.yaml"
  cat >"$dir/pi.yaml" <<YAML
kind: rpi5-rke2
name: unpriv
base: {path: $FIXTURES/firstrun/raspios-lite-arm64.img.xz}
rke2: {version: v1.33.1+rke2r1, release_dir: $FIXTURES/rke2, images: [rke2-images-core], role: agent,
       server: "https://10.0.0.1:9345", token: {file: secrets/token}}
output: {root_free_space: 16MiB, compress: [zstd], ephemeral: {memory: 1GiB, runtime_reserve: 256MiB}}
overlays: [overlay]
boot: {kernel_page_size_kib: 4}
nodes: [{name: n1}, {name: n2}]
YAML
  cat >"$dir/talos.yaml" <<YAML
kind: talos-iso
name: unpriv-talos
talos:
  version: v1.12.0
  iso: {path: $TALOS_FIXTURE/metal-amd64.iso}
  config: {file: secrets/worker.yaml}
  outputs: [iso]
nodes:
  - {name: w1, mac: "bc:24:11:00:20:21", install_disk: /dev/sda}
  - {name: w2, mac: "bc:24:11:00:20:22", install_disk: /dev/sda}
YAML
}

# Root, as every other test builds.
make_inputs "$WORK/root"
for p in pi talos; do
  SOURCE_DATE_EPOCH=$EPOCH "$CLI" build -q --cache-dir "$WORK/root-cache" --out "$WORK/root/out-$p" "$WORK/root/$p.yaml" \
    >"$WORK/root-$p.log" 2>&1 || { cat "$WORK/root-$p.log" >&2; fail "root's build of $p.yaml"; }
done
pass "root built both profiles"

# nobody: inputs it owns, its own HOME (the cache defaults to ~/.cache/aggrik8s-image), a clean
# environment (no AGGRIK8S_CACHE_DIR from ctest), no capabilities at all.
U=$WORK/user
make_inputs "$U"
mkdir -p "$U/home"
chown -R 65534:65534 "$U"
chmod 0755 "$WORK"
AS_USER=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all
  env -i "HOME=$U/home" "PATH=/usr/sbin:/usr/bin:/sbin:/bin" "SOURCE_DATE_EPOCH=$EPOCH")
for p in pi talos; do
  (cd "$U" && "${AS_USER[@]}" "$CLI" build --out "$U/out-$p" "$p.yaml") >"$WORK/user-$p.log" 2>&1 ||
    { cat "$WORK/user-$p.log" >&2; fail "nobody's build of $p.yaml"; }
done
pass "nobody (no capabilities) built both profiles"
[ -d "$U/home/.cache/aggrik8s-image" ] || fail "nobody's build did not use ~/.cache/aggrik8s-image"
[ -z "$(find "$U" ! -user 65534)" ] || fail "files not owned by nobody: $(find "$U" ! -user 65534 | head -n 5)"
pass "everything nobody's builds wrote is its own (outputs and ~/.cache/aggrik8s-image)"

for p in pi talos; do
  diff "$WORK/root/out-$p/SHA256SUMS" "$U/out-$p/SHA256SUMS" >&2 || fail "$p: nobody's outputs differ from root's"
done
(cd "$WORK/root/out-pi/ephemeral" && find . -type f ! -name '*.json' | sort | xargs sha256sum) >"$WORK/root-eph.sums"
(cd "$U/out-pi/ephemeral" && find . -type f ! -name '*.json' | sort | xargs sha256sum) >"$WORK/user-eph.sums"
[ -s "$WORK/root-eph.sums" ] && grep -q root.squashfs "$WORK/root-eph.sums" || fail "no ephemeral output"
diff "$WORK/root-eph.sums" "$WORK/user-eph.sums" >&2 || fail "the ephemeral outputs differ"
pass "the images, ISOs and ephemeral files are byte for byte root's"

for f in n1.img n1.img.zst n2.img w1.iso; do
  d=out-pi; [ "$f" = w1.iso ] && d=out-talos
  [ "$(stat -c %a "$U/$d/$f")" = 600 ] || fail "$d/$f holds a secret but is mode $(stat -c %a "$U/$d/$f")"
done
pass "outputs that hold the join token or the machine config are 0600"

IMG=$U/out-pi/n1.img
ROOT_OFF=$(partition_field "$IMG" 1 start)
ROOT_SIZE=$(partition_field "$IMG" 1 size)
dd if="$IMG" of="$WORK/root.ext4" bs=512 skip="$ROOT_OFF" count="$ROOT_SIZE" status=none
e2fsck -fn "$WORK/root.ext4" >"$WORK/e2fsck.log" 2>&1 || { cat "$WORK/e2fsck.log" >&2; fail "e2fsck on nobody's image"; }
stat_of() { debugfs -R "stat $1" "$WORK/root.ext4" 2>/dev/null; }
for path in /etc/app/app.conf /usr/local/bin/tool /etc/app; do
  stat_of "$path" | grep -qE "User: +0 +Group: +0 " || fail "$path is not owned by root in the image: $(stat_of "$path" | grep User)"
done
stat_of /etc/app/app.conf | grep -q "Mode:  0640" || fail "app.conf mode: $(stat_of /etc/app/app.conf | grep Mode)"
stat_of /etc/app/app.conf | grep -q "Links: 2" || fail "app.conf and same.conf are not one inode"
stat_of /usr/local/bin/tool | grep -q "Mode:  0750" || fail "tool mode: $(stat_of /usr/local/bin/tool | grep Mode)"
stat_of /etc/app/link.conf | grep -q 'Fast link dest: "app.conf"' || fail "link.conf: $(stat_of /etc/app/link.conf | grep -i link)"
pass "overlay files owned by nobody on the host are root:root in the image, with their modes, hard link and symlink"
echo "$CHECKS checks passed"
