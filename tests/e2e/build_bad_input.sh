# e2e: `aggrik8s-image build` with bad inputs. Each case must fail with exit status 1 and one clear
# error line naming the input and what was expected, and leave no file in the output directory (no
# image, no .partial, no .work-* directory).
source "$(dirname "$0")/lib.bash"
make_fixtures
SRV=$WORK/srv
mkdir -p "$SRV"
cp -r "$FIXTURES/rke2" "$SRV/rke2"
start_http "$SRV"
F=$(cd "$FIXTURES/firstrun" && pwd)
# shellcheck disable=SC1091
source "$F/fixture.env"
BOOT_SECTORS=$((FIXTURE_BOOT_BYTES / 512))
BOOT_START=$((FIXTURE_BOOT_OFFSET / 512))
ROOT_START=$((FIXTURE_ROOT_OFFSET / 512))

MNT=
cleanup() {
  if [ -n "$MNT" ] && mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
  [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true
}
trap cleanup EXIT

printf 'K10bad-input-token::server:abc\n' >"$WORK/token"
chmod 600 "$WORK/token"

# profile NAME BASE-INPUT [EXTRA-YAML...]: a one-node server profile
profile() {
  local name=$1 base=$2; shift 2
  {
    echo "kind: rpi5-rke2"
    echo "name: bad"
    echo "base: $base"
    echo "rke2:"
    echo "  version: v1.33.1+rke2r1"
    echo "  release_url: http://127.0.0.1:$HTTP_PORT/rke2"
    echo "  images: [rke2-images-core]"
    echo "  role: server"
    printf '%s\n' "$@"
    echo "nodes: [{name: n1}]"
  } >"$WORK/$name.yaml"
}
url_input() { echo "{url: \"http://127.0.0.1:$HTTP_PORT/$1\", sha256: $(sha256sum "$SRV/$1" | cut -d' ' -f1)}"; }

# bad_build NAME PATTERN [OUTDIR]: build must exit 1 with exactly one error line matching PATTERN (ERE)
# and leave OUTDIR (default $WORK/out-NAME) without files.
bad_build() {
  local name=$1 pattern=$2 out=${3:-$WORK/out-$1}
  expect_status 1 "$name: build fails with exit 1" -- \
    "$CLI" build --cache-dir "$WORK/cache-$name" --out "$out" "$WORK/$name.yaml"  # own cache: nothing reused
  # Error lines: the build's "error: ..." or a profile diagnostic "FILE:LINE:COL: ...".
  local errors error_re='^(error: |[^ ]+:[0-9]+:[0-9]+: )'
  errors=$(grep -cE "$error_re" "$WORK/last.out" || true)
  [ "$errors" = 1 ] || { cat "$WORK/last.out" >&2; fail "$name: expected one error line, got $errors"; }
  expect_output "$pattern" "$name: the error says: $(grep -E "$error_re" "$WORK/last.out" | head -c 400)"
  grep -qF "K10bad-input-token" "$WORK/last.out" && fail "$name: the token appears in the output"
  local left
  left=$(find "$out" -mindepth 1 2>/dev/null | head -n 5 || true)
  [ -z "$left" ] || fail "$name: files left in the output directory: $left"
  pass "$name: nothing left in $out"
}

# ---- base images ---------------------------------------------------------------------------------
mkdir -p "$SRV/bad"
XZ=$F/raspios-lite-arm64.img.xz
head -c $(( $(stat -c %s "$XZ") / 2 )) "$XZ" >"$SRV/bad/truncated.img.xz"
profile truncated-xz "$(url_input bad/truncated.img.xz)"
bad_build truncated-xz 'truncated\.img\.xz.*(truncated|unexpected end|corrupt)'

cp "$FIXTURES/cloudinit/raspios-lite-arm64.img.zst" "$SRV/bad/corrupt.img.zst"
ZSIZE=$(stat -c %s "$SRV/bad/corrupt.img.zst")
dd if=/dev/zero of="$SRV/bad/corrupt.img.zst" bs=1 seek=$((ZSIZE / 2)) count=4096 conv=notrunc status=none
profile corrupt-zst "$(url_input bad/corrupt.img.zst)"
bad_build corrupt-zst 'corrupt\.img\.zst.*(corrupt|checksum|zstd)'

# No partition table at all: 64 MiB of zeros.
truncate -s 64M "$SRV/bad/no-table.img"
profile no-table "{path: srv/bad/no-table.img}"
bad_build no-table 'no-table\.img.*(partition table|MBR|GPT)'

# One FAT32 partition and nothing else.
truncate -s 80M "$SRV/bad/fat-only.img"
printf 'label: dos\nstart=%s, size=%s, type=c\n' "$BOOT_START" "$BOOT_SECTORS" | sfdisk -q "$SRV/bad/fat-only.img"
dd if="$F/raspios-lite-arm64.img" of="$SRV/bad/fat-only.img" bs=512 skip="$BOOT_START" seek="$BOOT_START" \
  count="$BOOT_SECTORS" conv=notrunc status=none
profile fat-only "{path: srv/bad/fat-only.img}"
bad_build fat-only 'fat-only\.img.*no ext4 root partition'

# Root partition is ext2 (no extents, no journal): the fixture's layout, p2 reformatted.
ROOT_BYTES=$FIXTURE_ROOT_BYTES
cp --sparse=always "$F/raspios-lite-arm64.img" "$SRV/bad/ext2-root.img"
truncate -s "$ROOT_BYTES" "$WORK/ext2.fs"
mke2fs -q -F -t ext2 -L rootfs "$WORK/ext2.fs"
dd if="$WORK/ext2.fs" of="$SRV/bad/ext2-root.img" bs=1M seek=$((FIXTURE_ROOT_OFFSET >> 20)) conv=notrunc,sparse status=none
rm -f "$WORK/ext2.fs"
profile ext2-root "{path: srv/bad/ext2-root.img}"
bad_build ext2-root 'ext2-root\.img.*partition 2.*ext2.*ext4'

# Root partition is a second FAT filesystem.
cp --sparse=always "$F/raspios-lite-arm64.img" "$SRV/bad/vfat-root.img"
dd if=/dev/zero of="$SRV/bad/vfat-root.img" bs=1M seek=$((FIXTURE_ROOT_OFFSET >> 20)) count=4 conv=notrunc status=none
mkfs.fat -F 32 --offset "$ROOT_START" "$SRV/bad/vfat-root.img" $((ROOT_BYTES / 1024)) >/dev/null
profile vfat-root "{path: srv/bad/vfat-root.img}"
bad_build vfat-root 'vfat-root\.img.*no ext4 root partition'

# ---- RKE2 release --------------------------------------------------------------------------------
GOOD_BASE="{path: $F/raspios-lite-arm64.img}"
cp -r "$SRV/rke2" "$SRV/rke2-nolist"
sed -i '/rke2-images-core.linux-arm64.tar.zst/d' "$SRV/rke2-nolist/sha256sum-arm64.txt"
profile sums-lack-archive "$GOOD_BASE"
sed -i "s|/rke2\$|/rke2-nolist|" "$WORK/sums-lack-archive.yaml"
bad_build sums-lack-archive 'sha256sum-arm64\.txt does not list rke2-images-core\.linux-arm64\.tar\.zst'

cp -r "$SRV/rke2" "$SRV/rke2-tampered"
printf 'x' >>"$SRV/rke2-tampered/rke2-images-core.linux-arm64.tar.zst"
profile archive-mismatch "$GOOD_BASE"
sed -i "s|/rke2\$|/rke2-tampered|" "$WORK/archive-mismatch.yaml"
bad_build archive-mismatch 'rke2-images-core\.linux-arm64\.tar\.zst.*sha256 mismatch'

# ---- secrets -------------------------------------------------------------------------------------
# (Tests run as root, who can read a chmod 000 file: use a missing path and a directory instead.)
profile token-missing "$GOOD_BASE" "  token: {file: no-such-token}"
sed -i 's/^  role: server$/  role: agent\n  server: "https:\/\/10.0.0.1:9345"/' "$WORK/token-missing.yaml"
bad_build token-missing 'no-such-token'
mkdir -p "$WORK/token-dir"
profile token-dir "$GOOD_BASE" "  token: {file: token-dir}"
bad_build token-dir 'token-dir.*(directory|not a regular file|cannot read)'

# ---- output settings -----------------------------------------------------------------------------
profile image-size-small "$GOOD_BASE" "output: {image_size: 64MiB}"
bad_build image-size-small 'image-size-small\.yaml: output\.image_size 64(\.0)? MiB is too small.*needs [0-9.]+ MiB'

profile no-grow "$GOOD_BASE" "output: {grow_root: false, root_free_space: 512MiB}"
bad_build no-grow 'too small for the preload with growing disabled.*needs [0-9]+ bytes.*has [0-9]+ bytes'

# grow_root: false is fine when the base has room: a base made with room to spare.
"$SRC/tests/fixtures/make-rpi-os-image" "$WORK/roomy" --size-mib 200 --formats img --quiet
profile no-grow-roomy "{path: roomy/raspios-lite-arm64.img}" "output: {grow_root: false, root_free_space: 8MiB, bmap: false}"
expect_status 0 "grow_root: false with a base that has room builds" -- \
  "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out-roomy" "$WORK/no-grow-roomy.yaml"
[ "$(stat -c %s "$WORK/out-roomy/n1.img")" = "$(stat -c %s "$WORK/roomy/raspios-lite-arm64.img")" ] ||
  fail "grow_root: false changed the image size"
[ "$(partition_field "$WORK/out-roomy/n1.img" 1 size)" = "$(partition_field "$WORK/roomy/raspios-lite-arm64.img" 1 size)" ] ||
  fail "grow_root: false changed the root partition"
pass "grow_root: false keeps the image and root partition size"
rm -rf "$WORK/out-roomy" "$WORK/roomy"

# An output directory inside an overlay: the overlay is copied into the image whole, so the previous
# build's node images (join tokens) went into the next image, which grew with every rebuild.
mkdir -p "$WORK/ov-with-out/etc"
echo x >"$WORK/ov-with-out/etc/x.conf"
profile out-in-overlay "$GOOD_BASE" "overlays: [ov-with-out]"
bad_build out-in-overlay 'output directory .*/ov-with-out/out lies inside overlay .*ov-with-out of node n1' "$WORK/ov-with-out/out"

# ---- a full disk ---------------------------------------------------------------------------------
MNT=$WORK/small-disk
mkdir -p "$MNT"
if mount -t tmpfs -o size=24m tmpfs "$MNT" 2>"$WORK/mount.err"; then
  profile disk-full "$GOOD_BASE"
  bad_build disk-full '(No space left on device|not enough space|disk full)' "$MNT"
  umount "$MNT"
  MNT=
else
  echo "skip: disk-full case: cannot mount a 24 MiB tmpfs ($(cat "$WORK/mount.err"))"
fi

echo "$CHECKS checks passed"
