#!/usr/bin/env bash
# Seeds for the fat_filesystem fuzz target that are too large to commit: FAT16 and FAT32 need thousands
# of clusters (2 and 33 MiB), so they are made here with mkfs.vfat and mtools, files with long names
# added, and cut after their last non-zero byte (the fuzz target reads the rest of the disk as zeros).
# Usage: make_fat_seeds.sh OUTPUT_DIRECTORY
set -euo pipefail
out=$1
command -v mkfs.vfat >/dev/null && command -v mcopy >/dev/null || exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'console=serial0,115200 root=PARTUUID=a1b2c3d4-02 rootwait\n' >"$work/cmdline.txt"
printf '[all]\ndtoverlay=vc4-kms-v3d\n' >"$work/config.txt"
for spec in "16 2100" "32 34000"; do
  set -- $spec
  image=$work/fat$1.img
  mkfs.vfat -F "$1" -s 1 -n BOOTFS -C "$image" "$2" >/dev/null
  mcopy -i "$image" "$work/cmdline.txt" ::cmdline.txt
  mcopy -i "$image" "$work/config.txt" ::config.txt
  mmd -i "$image" ::overlays
  mcopy -i "$image" "$work/config.txt" "::overlays/a rather long overlay name.dtbo"
  # The last non-zero byte, rounded up to a sector.
  last=$(od -A d -t x1 -v "$image" | awk '{for (i = 2; i <= NF; i++) if ($i != "00") last = $1 + i - 2} END {print last + 0}')
  head -c $(((last / 512 + 1) * 512)) "$image" >"$out/fat$1_lfn.img"
done
