# e2e: `aggrik8s-image build` of a Raspberry Pi 5 + RKE2 profile with three nodes, from stand-in inputs
# downloaded over loopback HTTP; outputs checked with sfdisk, fsck.fat, mtools, e2fsck, debugfs,
# bmaptool and sha256sum; reproducibility; failures leave nothing that looks valid.
source "$(dirname "$0")/lib.bash"
make_fixtures
start_http "$FIXTURES"

BASE_SHA=$(sha256sum "$FIXTURES/firstrun/raspios-lite-arm64.img.xz" | cut -d' ' -f1)
printf 'K10e2e-test-token::server:abcdef\n' >"$WORK/token"
chmod 600 "$WORK/token"
mkdir -p "$WORK/overlay/etc/aggrik8s"
printf 'node={{node}} role={{role}} host={{ hostname }} profile={{profile}} other={{unknown}}\n' \
  >"$WORK/overlay/etc/aggrik8s/node.txt.tmpl"
# An overlay is copied as a tree: symlinks keep their text (absolute, relative, dangling, leading out of
# the overlay, long enough to need a block) and are never resolved on this host (/etc/hostname exists
# here too); hard links stay hard links; empty directories and setuid/setgid/sticky modes are kept.
OV=$WORK/overlay
make_tree_overlay "$OV"
cat >"$WORK/profile.yaml" <<YAML
kind: rpi5-rke2
name: e2e
base:
  url: http://127.0.0.1:$HTTP_PORT/firstrun/raspios-lite-arm64.img.xz
  sha256: $BASE_SHA
rke2:
  version: v1.33.1+rke2r1
  release_url: http://127.0.0.1:$HTTP_PORT/rke2
  images: [rke2-images-core, rke2-images-canal]
  role: server
  token: {file: token}
  config: {write-kubeconfig-mode: "0600"}
system:
  users: [{name: ops, ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaE2E e2e@test"]}]
boot: {storage: nvme, pcie_gen: 3, kernel_page_size_kib: 4}
overlays: [overlay]
output: {root_free_space: 32MiB, compress: [zstd]}
nodes:
  - name: n1
  - name: n2
    rke2: {role: agent, server: "https://10.0.0.1:9345"}
    network: {mode: static, address: 10.0.0.12/24, gateway: 10.0.0.1}
  - name: n3
    rke2: {role: agent, server: "https://10.0.0.1:9345"}
YAML

export SOURCE_DATE_EPOCH=1767225600
expect_status 0 "build three nodes" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out" "$WORK/profile.yaml"
expect_output 'node.txt.tmpl: \{\{unknown\}\} is not a known variable and is left as it is' \
  "an unknown template variable is reported, naming the file"
OUT=$WORK/out
for f in n1.img n1.img.bmap n1.img.zst n2.img n2.img.bmap n2.img.zst n3.img n3.img.bmap SHA256SUMS manifest.json; do
  [ -f "$OUT/$f" ] || fail "missing output $f"
done
pass "every output present"
[ -z "$(find "$OUT" -name '*.partial' -o -name '.work-*')" ] || fail "partial files left behind"
[ "$(stat -c %a "$OUT/n1.img")" = 600 ] && [ "$(stat -c %a "$OUT/n1.img.zst")" = 600 ] || fail "images holding the token are readable by others"
pass "images and compressed copies are 0600 (they hold the token)"
pass "no partial or work files left"
(cd "$OUT" && sha256sum -c --quiet SHA256SUMS) || fail "SHA256SUMS does not match"
pass "sha256sum -c SHA256SUMS"
grep -q "K10e2e-test-token" "$OUT/manifest.json" && fail "token leaked into the manifest"
python3 -c "import json; m=json.load(open('$OUT/manifest.json')); assert [n['name'] for n in m['nodes']]==['n1','n2','n3']; assert m['source_date_epoch']==1767225600" \
  || fail "manifest content"
pass "manifest names nodes and holds no secret"

# ext4_entry DEVICE PATH: "TYPE MODE LINKS UID:GID INODE" of PATH (not followed), from debugfs.
ext4_entry() {
  debugfs -R "stat $2" "$1" 2>/dev/null |
    awk '/^Inode:/ {i=$2; t=$4; m=$6} /^User:/ {u=$2":"$4} /^Links:/ {l=$2} END {print t, m, l, u, i}'
}
ext4_link_text() {  # ext4_link_text DEVICE PATH: a symlink's target text (fast: in the inode; else its block)
  local fast
  fast=$(debugfs -R "stat $2" "$1" 2>/dev/null | sed -n 's/^Fast link dest: "\(.*\)"$/\1/p')
  if [ -n "$fast" ]; then printf '%s' "$fast"; else debugfs -R "cat $2" "$1" 2>/dev/null; fi
}
expect_entry() {  # expect_entry NODE DEVICE PATH "TYPE MODE LINKS UID:GID" [LINK-TEXT]
  local got
  got=$(ext4_entry "$2" "$3")
  [ "${got% *}" = "$4" ] || fail "$1: $3 is '${got% *}' in the image, expected '$4'"
  if [ $# -ge 5 ]; then
    got=$(ext4_link_text "$2" "$3")
    [ "$got" = "$5" ] || fail "$1: $3 points to '$got', expected '$5'"
  fi
}

# n1's bmap is hashed in full; n2 (copied while n1 was hashed) and n3 (the prepared image itself)
# reuse the prepared image's range hashes outside what their edits wrote: bmaptool checks them all.
for node in n1 n2 n3; do
  IMG=$OUT/$node.img
  sfdisk -d "$IMG" >"$WORK/$node.sfdisk" || fail "sfdisk cannot read $node.img"
  grep -q "label-id: 0x5452574f" "$WORK/$node.sfdisk" || fail "disk identifier changed"
  BOOT_START=$(partition_field "$IMG" 0 start); BOOT_SECTORS=$(partition_field "$IMG" 0 size)
  ROOT_START=$(partition_field "$IMG" 1 start); ROOT_SECTORS=$(partition_field "$IMG" 1 size)
  [ $(( (ROOT_START + ROOT_SECTORS) * 512 )) -eq "$(stat -c %s "$IMG")" ] || fail "$node: root partition does not end the image"
  dd if="$IMG" of="$WORK/boot.part" bs=512 skip="$BOOT_START" count="$BOOT_SECTORS" status=none
  fsck.fat -n "$WORK/boot.part" >"$WORK/fsck.fat.log" 2>&1 || { cat "$WORK/fsck.fat.log"; fail "$node: fsck.fat"; }
  e2fsck -fn "$IMG?offset=$((ROOT_START * 512))" >"$WORK/e2fsck.log" 2>&1 || { cat "$WORK/e2fsck.log"; fail "$node: e2fsck"; }
  pass "$node: sfdisk, fsck.fat -n and e2fsck -fn accept the image"

  M="$IMG@@$((BOOT_START * 512))"
  CMDLINE=$(mtype -i "$M" ::/cmdline.txt)
  [ "$(printf '%s' "$CMDLINE" | wc -l)" -le 1 ] || fail "$node: cmdline.txt has several lines"
  [ "$(grep -o 'cgroup_enable=memory' <<<"$CMDLINE" | wc -l)" = 1 ] || fail "$node: cgroup_enable=memory not exactly once: $CMDLINE"
  grep -q 'root=PARTUUID=5452574f-02' <<<"$CMDLINE" || fail "$node: root PARTUUID changed"
  grep -q 'systemd.run=/boot/firmware/firstrun.sh' <<<"$CMDLINE" || fail "$node: firstrun.sh not started"
  mtype -i "$M" ::/firstrun.sh | grep -q "NEW_HOSTNAME='$node'" || fail "$node: firstrun.sh hostname"
  mtype -i "$M" ::/config.txt | grep -q '^dtparam=pciex1_gen=3' || fail "$node: config.txt pcie gen"
  mtype -i "$M" ::/config.txt | grep -q '^kernel=kernel8.img' || fail "$node: config.txt kernel8"
  pass "$node: cmdline.txt, config.txt and firstrun.sh as expected (mtools)"

  D="$IMG?offset=$((ROOT_START * 512))"
  debugfs -R 'stat /etc/rancher/rke2/config.yaml' "$D" 2>/dev/null | grep -q 'Mode:  0600' || fail "$node: config.yaml not 0600"
  debugfs -R 'stat /etc/rancher/rke2/config.yaml' "$D" 2>/dev/null | grep -q 'User:     0   Group:     0' || fail "$node: config.yaml not root-owned"
  debugfs -R 'cat /etc/rancher/rke2/config.yaml' "$D" 2>/dev/null | grep -q 'K10e2e-test-token' || fail "$node: token missing"
  debugfs -R 'stat /usr/local/bin/rke2' "$D" 2>/dev/null | grep -q 'Mode:  0755' || fail "$node: rke2 binary"
  for a in rke2-images-core rke2-images-canal; do
    debugfs -R "dump /var/lib/rancher/rke2/agent/images/$a.linux-arm64.tar.zst $WORK/$a" "$D" 2>/dev/null
    cmp -s "$WORK/$a" "$FIXTURES/rke2/$a.linux-arm64.tar.zst" || fail "$node: $a not preloaded intact"
  done
  role=server; [ "$node" = n1 ] || role=agent
  [ "$(debugfs -R 'cat /etc/aggrik8s/node.txt' "$D" 2>/dev/null)" = \
    "node=$node role=$role host=$node profile=e2e other={{unknown}}" ] || fail "$node: overlay template"
  pass "$node: RKE2 preload, config (0600 root), image archives and overlay template in the root fs (debugfs)"
  expect_entry "$node" "$D" /etc/hostname "regular 0644 1 0:0"
  expect_entry "$node" "$D" /etc/acc/hostname-link "symlink 0777 1 0:0" /etc/hostname
  expect_entry "$node" "$D" /usr/local/share/acc/hello-link "symlink 0777 1 0:0" ../../../../etc/acc/hello.txt
  expect_entry "$node" "$D" /etc/acc/dangling "symlink 0777 1 0:0" /nonexistent/acc-target
  expect_entry "$node" "$D" /etc/acc/outside "symlink 0777 1 0:0" ../../../../../../outside-the-overlay
  expect_entry "$node" "$D" /etc/acc/long-link "symlink 0777 1 0:0" "$LONG_TARGET"
  expect_entry "$node" "$D" /etc/acc/hello.txt "regular 0644 2 0:0"
  expect_entry "$node" "$D" /usr/local/share/acc/hello-hard "regular 0644 2 0:0"
  [ "$(ext4_entry "$D" /etc/acc/hello.txt | cut -d' ' -f5)" = "$(ext4_entry "$D" /usr/local/share/acc/hello-hard | cut -d' ' -f5)" ] ||
    fail "$node: the hard link is a copy, not the same inode"
  [ "$(debugfs -R 'cat /etc/acc/hello.txt' "$D" 2>/dev/null)" = "hello from the overlay" ] || fail "$node: hello.txt content"
  expect_entry "$node" "$D" /usr/local/bin/acc-suid "regular 04755 1 0:0"
  expect_entry "$node" "$D" /srv/acc-shared "directory 02775 2 0:0"
  expect_entry "$node" "$D" /srv/acc-drop "directory 01777 2 0:0"
  expect_entry "$node" "$D" /var/lib/acc-empty "directory 0750 2 0:0"
  [ "$(debugfs -R 'ls -p /var/lib/acc-empty' "$D" 2>/dev/null | awk -F/ 'NF > 5 && $6 != "." && $6 != ".."' | wc -l)" = 0 ] ||
    fail "$node: /var/lib/acc-empty is not empty"
  pass "$node: overlay copied as a tree: symlinks as written, one inode for the hard link, empty directory, modes (debugfs)"

  rm -f "$WORK/flashed.img"
  bmaptool copy --bmap "$IMG.bmap" "$IMG" "$WORK/flashed.img" >"$WORK/bmaptool.log" 2>&1 || { cat "$WORK/bmaptool.log"; fail "$node: bmaptool copy"; }
  cmp -s "$IMG" "$WORK/flashed.img" || fail "$node: bmaptool copy does not reproduce the image"
  zstd -dc "$IMG.zst" | cmp -s - "$IMG" || fail "$node: .zst does not decompress to the image"
  pass "$node: bmaptool copy and zstd -d reproduce the image"
done
# A used card keeps its old bytes wherever a flash does not write: every block the filesystems use must
# be in the bmap even where it is zeros (a FAT's free-cluster entries, an ext4 resize inode's zero
# block, a file's run of zeros), or the card's FATs differ and e2fsck finds illegal blocks.
for tool in bmaptool ours; do
  head -c "$(stat -c %s "$OUT/n1.img")" /dev/zero | tr '\0' '\377' >"$WORK/used-card.img"
  if [ "$tool" = bmaptool ]; then
    bmaptool copy --bmap "$OUT/n1.img.bmap" "$OUT/n1.img" "$WORK/used-card.img" >"$WORK/bmaptool.log" 2>&1 ||
      { cat "$WORK/bmaptool.log"; fail "bmaptool copy onto a used card"; }
  else
    "$CLI" flash --yes "$OUT/n1.img" "$WORK/used-card.img" >"$WORK/flash.log" 2>&1 || { cat "$WORK/flash.log"; fail "flash onto a used card"; }
  fi
  s1=$(partition_field "$WORK/used-card.img" 0 start); n1=$(partition_field "$WORK/used-card.img" 0 size)
  s2=$(partition_field "$WORK/used-card.img" 1 start); n2=$(partition_field "$WORK/used-card.img" 1 size)
  dd if="$WORK/used-card.img" of="$WORK/card-p1" bs=512 skip="$s1" count="$n1" status=none
  dd if="$WORK/used-card.img" of="$WORK/card-p2" bs=512 skip="$s2" count="$n2" status=none
  fsck.fat -n "$WORK/card-p1" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log"; fail "$tool onto a used card: the boot FAT is not clean"; }
  e2fsck -fn "$WORK/card-p2" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log"; fail "$tool onto a used card: the root ext4 is not clean"; }
  pass "n1 with its bmap onto a card full of 0xff ($tool): fsck.fat -n and e2fsck -fn clean"
done
rm -f "$WORK/used-card.img" "$WORK/card-p1" "$WORK/card-p2"
debugfs -R 'cat /etc/rancher/rke2/config.yaml' "$OUT/n2.img?offset=$(( $(partition_field "$OUT/n2.img" 1 start) * 512 ))" 2>/dev/null \
  | grep -q 'server: https://10.0.0.1:9345' || fail "n2 is not an agent of 10.0.0.1"
pass "per-node differences (n2 is an agent)"

# The second build also skips the fdatasync (--no-sync): that must change when the images reach the
# disk, never what they hold.
expect_status 0 "a second build (from the cache, offline, --no-sync)" -- \
  "$CLI" build --offline --no-sync --cache-dir "$WORK/cache" --out "$WORK/out2" "$WORK/profile.yaml"
for f in n1.img n2.img n3.img n1.img.bmap n3.img.bmap n1.img.zst; do cmp -s "$OUT/$f" "$WORK/out2/$f" || fail "$f differs between two builds"; done
(cd "$WORK/out2" && sha256sum -c --quiet SHA256SUMS) || fail "the --no-sync build's SHA256SUMS do not match its outputs"
pass "same inputs + SOURCE_DATE_EPOCH: byte-identical outputs, with and without --no-sync"
# The first build kept the grown base (partition table, e2fsck, resize2fs) in the cache; the second
# copied it instead of growing its own copy, and its images are the ones above.
expect_output "copying the grown raspios-lite-arm64.img.xz from the cache" "the second build starts from the grown base"
grep -q "growing the root filesystem" "$WORK/last.out" && fail "the second build grew the root filesystem again"
GROWN=$(find "$WORK/cache/rpi-bases" -name '*.img')
[ "$(echo "$GROWN" | wc -l)" = 1 ] && [ -f "${GROWN%.img}.json" ] && [ -f "$GROWN.checked" ] ||
  fail "expected one grown base with its record and stamp in rpi-bases/: $(ls "$WORK/cache/rpi-bases")"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['source_date_epoch']==1767225600 and r['grow_root'] and r['size']>0, r" \
  "${GROWN%.img}.json" || fail "the grown base's record"
e2fsck -fn "$GROWN?offset=$(( $(partition_field "$GROWN" 1 start) * 512 ))" >"$WORK/e2fsck.log" 2>&1 ||
  { cat "$WORK/e2fsck.log"; fail "the grown base's root filesystem"; }
pass "the grown base is kept (rpi-bases/<key>.img, its record and stamp; e2fsck -fn accepts it)"
BUNDLE_SHA=$(sha256sum "$FIXTURES/rke2/rke2.linux-arm64.tar.gz" | cut -d' ' -f1)
gzip -dc "$FIXTURES/rke2/rke2.linux-arm64.tar.gz" | cmp -s - "$WORK/cache/rke2-bundles/$BUNDLE_SHA.tar" &&
  [ -f "$WORK/cache/rke2-bundles/$BUNDLE_SHA.tar.checked" ] || fail "the RKE2 bundle is not kept decompressed in the cache"
pass "the RKE2 bundle is kept decompressed (rke2-bundles/<sha256>.tar, equal to gzip -dc, stamped)"
# Edited since it was kept (its stamp no longer matches): grown again, the same image.
printf 'x' | dd of="$GROWN" bs=1 seek=4096 conv=notrunc status=none
expect_status 0 "a build after the grown base was edited" -- \
  "$CLI" build --offline --no-sync --node n2 --cache-dir "$WORK/cache" --out "$WORK/out-regrown" "$WORK/profile.yaml"
expect_output "growing the root filesystem" "it grows the base again"
cmp -s "$OUT/n2.img" "$WORK/out-regrown/n2.img" || fail "the image differs after the grown base was made again"
pass "an edited grown base is made again, with the same image"
# A cache that cannot keep it (rpi-bases/ is a file): a warning, and the build grows its own copy.
cp -r "$WORK/cache" "$WORK/cache-nogrown"
rm -rf "$WORK/cache-nogrown/rpi-bases"
touch "$WORK/cache-nogrown/rpi-bases"
expect_status 0 "a build whose cache cannot keep the grown base" -- \
  "$CLI" build --offline --no-sync --node n2 --cache-dir "$WORK/cache-nogrown" --out "$WORK/out-nogrown" "$WORK/profile.yaml"
expect_output "cannot keep the grown base image in the cache" "it says so"
cmp -s "$OUT/n2.img" "$WORK/out-nogrown/n2.img" || fail "the image differs when the base was grown in the work image"
pass "without the grown base in the cache the image is the same"
# On a filesystem with reflinks (XFS, loop-mounted where we are root) the prepared image is a reflink
# of the cached base, whose unchanged blocks the build then reads from the base: the same images.
if [ "$(id -u)" = 0 ] && command -v mkfs.xfs >/dev/null; then
  mkdir -p "$WORK/xfs"
  truncate -s 1G "$WORK/xfs.raw"
  mkfs.xfs -q "$WORK/xfs.raw"
  if mount -o loop "$WORK/xfs.raw" "$WORK/xfs" 2>"$WORK/xfs-mount.log"; then
    trap '[ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null; umount "$WORK/xfs" 2>/dev/null || true' EXIT
    cp -r "$WORK/cache" "$WORK/xfs/cache"
    rm -rf "$WORK/xfs/cache/bmap-chunks"
    for round in 1 2; do
      expect_status 0 "a build on XFS (round $round)" -- \
        "$CLI" build --offline -v --cache-dir "$WORK/xfs/cache" --out "$WORK/xfs/out$round" "$WORK/profile.yaml"
      expect_output "MiB of the prepared image read from .*/xfs/cache/rpi-bases/" "round $round: the base's shared blocks are read from the grown base in the cache"
      expect_output "prepared.img: [0-9]* MiB shared with the files it holds a copy of \\(FICLONERANGE\\)" "round $round: the image archives' blocks are cloned from the cache, not written"
      for f in n1.img n2.img n3.img n1.img.bmap n2.img.bmap n3.img.bmap; do
        cmp -s "$OUT/$f" "$WORK/xfs/out$round/$f" || fail "round $round: $f differs from the ext4 build's"
      done
    done
    ls "$WORK/xfs/cache/bmap-chunks" | grep -q . || fail "no bmap ranges kept on XFS"
    pass "on XFS (reflinks, the archives cloned; bmap ranges cold, then from the cache): the same images and bmaps as on ext4"
    umount "$WORK/xfs"
  else
    echo "skipping the XFS build: $(cat "$WORK/xfs-mount.log")"
  fi
fi

# The first build kept the decompressed base in the cache (the second copied it from there); it is the
# base's raw image, sparse.
CACHED_BASE=$WORK/cache/images/$BASE_SHA.img
[ -f "$CACHED_BASE" ] || fail "the decompressed base is not in the cache"
xz -dc "$FIXTURES/firstrun/raspios-lite-arm64.img.xz" | cmp -s - "$CACHED_BASE" || fail "the cached base is not the decompressed base"
[ "$(du -k "$CACHED_BASE" | cut -f1)" -lt $(( $(stat -c %s "$CACHED_BASE") / 1024 )) ] || fail "the cached base is not sparse"
[ -z "$(find "$WORK/cache/images" -name '*.partial')" ] || fail "a partial decompression was left in the cache"
pass "the decompressed base is cached (images/<sha256>.img, sparse, equal to xz -dc)"
# A cache that cannot hold it (here: images/ is a file) costs only the decoding: same image.
cp -r "$WORK/cache" "$WORK/cache-noimages"
rm -rf "$WORK/cache-noimages/images"
touch "$WORK/cache-noimages/images"
expect_status 0 "a build whose cache cannot keep the decompressed base" -- \
  "$CLI" build --offline --node n3 --cache-dir "$WORK/cache-noimages" --out "$WORK/out-noimages" "$WORK/profile.yaml"
expect_output "cannot keep the decompressed base in the cache" "it says so"
cmp -s "$OUT/n3.img" "$WORK/out-noimages/n3.img" || fail "the image differs when the base was decoded again"
pass "without the cached base the image is the same"

expect_status 1 "offline build with an empty cache fails" -- \
  "$CLI" build --offline --cache-dir "$WORK/empty-cache" --out "$WORK/out3" "$WORK/profile.yaml"
expect_output "not in the cache" "it says the input is not cached"
expect_status 1 "--node with a name the profile lacks fails" -- \
  "$CLI" build --node n9 --cache-dir "$WORK/cache" --out "$WORK/out3" "$WORK/profile.yaml"
expect_output "no node named 'n9'" "it names the missing node"
sed "s/$BASE_SHA/$(printf '%064d' 0)/" "$WORK/profile.yaml" >"$WORK/wrong.yaml"
expect_status 1 "a wrong checksum fails" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out4" "$WORK/wrong.yaml"
expect_output "sha256 mismatch" "it names the mismatch"
[ -z "$(find "$WORK/out3" "$WORK/out4" -mindepth 1 2>/dev/null)" ] || fail "a failed build left files"
pass "failed builds leave nothing behind"

echo "$CHECKS checks passed"
