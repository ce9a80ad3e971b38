# e2e: `aggrik8s-image flash` on the stand-in Raspberry Pi OS images: a cloud-init image flashed from
# .img.zst with a hostname and an SSH key (read back with mtools, the instance id consistent between
# meta-data and cmdline.txt), a firstrun-flavoured base image from .img.xz onto a loop device (when
# losetup works), and `eeprom-config`. Nothing but files and loop devices made here is written.
source "$(dirname "$0")/lib.bash"
make_fixtures
C=$(cd "$FIXTURES/cloudinit" && pwd)
F=$(cd "$FIXTURES/firstrun" && pwd)

LOOP=
cleanup() { [ -z "$LOOP" ] || losetup -d "$LOOP" || true; }
trap cleanup EXIT

# --- cloud-init image, per-node touches, into a regular file -------------------------------------
# shellcheck disable=SC1091
source "$C/fixture.env"
printf 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e admin@desk\n' >"$WORK/id.pub"
expect_status 0 "flash cloud-init .img.zst with --hostname and --ssh-key" -- \
  "$CLI" flash --hostname pi-07 --ssh-key "$WORK/id.pub" "$C/raspios-lite-arm64.img.zst" "$WORK/card.img"
expect_output "verified .* read back" "the write was verified"
expect_output "boot partition: wrote .*user-data.*; read back and checked" "the boot files were read back"
mt() { MTOOLS_SKIP_CHECK=1 mtype -i "$WORK/card.img@@$FIXTURE_BOOT_OFFSET" "::/$1"; }
mt user-data | grep -q '^hostname: pi-07$' || fail "user-data lacks hostname: pi-07"
mt user-data | grep -q 'admin@desk' || fail "user-data lacks the SSH key"
mt user-data | head -1 | grep -q '^#cloud-config$' || fail "user-data does not start with #cloud-config"
id=$(mt meta-data | sed -n 's/^instance-id: //p')
[[ $id == aggrik8s-pi-07-* ]] || fail "meta-data instance-id is '$id'"
[ "$id" != "$FIXTURE_INSTANCE_ID" ] || fail "the instance id did not change"
mt cmdline.txt | grep -q "ds=nocloud;i=$id" || fail "cmdline.txt does not carry ds=nocloud;i=$id"
pass "hostname, key and a new instance id, consistent in user-data, meta-data and cmdline.txt"
# Everything outside the boot partition is the image's.
cmp -n "$FIXTURE_BOOT_OFFSET" "$WORK/card.img" "$C/raspios-lite-arm64.img" || fail "the first bytes differ"
cmp -i "$FIXTURE_ROOT_OFFSET" "$WORK/card.img" "$C/raspios-lite-arm64.img" || fail "the root partition differs"
pass "partition table and root filesystem are the image's"

# --- firstrun-flavoured base image: no first-boot files, so no hostname ---------------------------
expect_status 1 "a base image without firstrun.sh or user-data cannot take --hostname" -- \
  "$CLI" flash --hostname pi-08 "$F/raspios-lite-arm64.img.xz" "$WORK/card2.img"
expect_output "neither firstrun.sh nor cloud-init user-data" "the error says why"

# A --file DEST the FAT cannot hold is a usage error before the target is touched (it once failed with
# the image already on the card and its partition table gone).
printf 'kept' >"$WORK/kept.img"
echo note >"$WORK/note.txt"
for dest in '/notes?.txt' '/dir/name.' "/$(printf 'n%.0s' $(seq 256))"; do
  expect_status 2 "--file with DEST $dest" -- "$CLI" flash --yes --file "$WORK/note.txt:$dest" "$F/raspios-lite-arm64.img.xz" "$WORK/kept.img"
  [ "$(cat "$WORK/kept.img")" = kept ] || fail "--file $dest: the target was written before the refusal"
done
pass "bad --file destinations refused before the target is written"

# --- onto a loop device ------------------------------------------------------------------------
# A used card: 0xff everywhere (an erased card's bytes). Without a bmap every byte of the image must be
# written, its zeros too, or the card keeps 0xff in the FATs' free entries and in files' zero runs.
head -c "$(( $(stat -c %s "$F/raspios-lite-arm64.img") + 64 * 1048576 ))" /dev/zero | tr '\0' '\377' >"$WORK/disk"
if LOOP=$(losetup -f --show "$WORK/disk" 2>/dev/null); then
  expect_status 1 "no terminal and no --yes: refused" -- sh -c "\"$CLI\" flash \"$F/raspios-lite-arm64.img.xz\" $LOOP </dev/null"
  expect_output "not a terminal" "the refusal says why"
  expect_status 0 "flash .img.xz onto $LOOP" -- "$CLI" flash --yes "$F/raspios-lite-arm64.img.xz" "$LOOP"
  cmp -n "$(stat -c %s "$F/raspios-lite-arm64.img")" "$LOOP" "$F/raspios-lite-arm64.img" || fail "$LOOP differs from the image"
  pass "$LOOP (a used card) holds the image, zeros included"
  # A device name mistyped relative to /dev, or a link to a node that is not there, never becomes a file.
  expect_status 1 "a relative name in /dev that is no device" -- sh -c "cd /dev && \"$CLI\" flash --yes \"$F/raspios-lite-arm64.img.xz\" a8s-no-such-disk"
  ln -s /dev/a8s-no-such-disk "$WORK/stale-by-id-link"
  expect_status 1 "a link to a device node that is not there" -- "$CLI" flash --yes "$F/raspios-lite-arm64.img.xz" "$WORK/stale-by-id-link"
  expect_output "symbolic link to something that does not exist" "the refusal says why"
  [ ! -e /dev/a8s-no-such-disk ] || { rm -f /dev/a8s-no-such-disk; fail "a file was created in /dev"; }
  pass "nothing created in /dev"
  expect_status 0 "flash --list" -- "$CLI" flash --list
  expect_output "$LOOP .* loop " "--list shows the loop device"
else
  echo "skipping the loop device part: losetup failed (not root?)"
fi

# --- eeprom-config ------------------------------------------------------------------------------
expect_status 0 "eeprom-config" -- "$CLI" eeprom-config --boot-order nvme,sd,usb
expect_output "^BOOT_ORDER=0xf416$" "NVMe first is 0xf416"
expect_output "^PCIE_PROBE=1$" "PCIE_PROBE with NVMe"
expect_status 2 "eeprom-config rejects an unknown mode" -- "$CLI" eeprom-config --boot-order sd,floppy
echo "flash_fixture_image: $CHECKS checks passed"
