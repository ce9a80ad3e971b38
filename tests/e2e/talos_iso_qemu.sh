# e2e: `aggrik8s-image build` of a talos-iso profile (config-iso, iso, netboot) from the stand-in Talos
# ISO (tests/fixtures/make-talos-iso) downloaded over loopback HTTP; outputs checked with sha256sum,
# xorriso and blkid; reproducibility; then booted under QEMU (TCG). The stand-in is a dual-boot ISO as
# Talos >= 1.10 makes them: GRUB for BIOS, systemd-boot + a UKI for UEFI.
#   - cp1.iso (remastered, config embedded) under SeaBIOS (GRUB) and under OVMF (systemd-boot, the
#     edited UKI from the rewritten EFI partition),
#   - talos-metal-iso.iso + cp2-config.iso as a second CD-ROM under OVMF (q35; the shared ISO's UKI),
# and the stand-in init's serial output checked for the node's kernel arguments and config.
source "$(dirname "$0")/lib.bash"

# The stand-in ISO is shared with the integration tests: same directory, lock and generator stamp.
make_talos_fixture
start_http "$TALOS_FIXTURE"
ISO_SHA=$(sha256sum "$TALOS_FIXTURE/metal-amd64.iso" | cut -d' ' -f1)

cat >"$WORK/controlplane.yaml" <<'YAML'
version: v1alpha1
debug: false
machine:
  type: controlplane
  token: e2e-SECRET-machine-token
  install:
    disk: /dev/sda
    image: ghcr.io/siderolabs/installer:v1.12.0
cluster:
  controlPlane:
    endpoint: https://10.0.20.10:6443
  clusterName: e2e
  secret: e2e-SECRET-cluster-secret
---
apiVersion: v1alpha1
kind: HostnameConfig
auto: stable
YAML
chmod 600 "$WORK/controlplane.yaml"
cat >"$WORK/profile.yaml" <<YAML
kind: talos-iso
name: e2e-talos
talos:
  iso:
    url: http://127.0.0.1:$HTTP_PORT/metal-amd64.iso
    sha256: $ISO_SHA
  config: {file: controlplane.yaml}
  outputs: [config-iso, iso, netboot]
  netboot_url: http://10.0.20.2:8080/talos
  kernel_args: [console=ttyS0]
  patches:
    - merge: {cluster: {apiServer: {certSANs: [10.0.20.10]}}}
nodes:
  - name: cp1
    mac: "bc:24:11:00:20:11"
    addresses: [10.0.20.11/24]
    gateway: 10.0.20.1
    install_disk: /dev/vda
    kernel_args: [e2e.node=cp1]
  - name: cp2
    patches:
      - json6902: [{op: add, path: /machine/nodeLabels, value: {rack: b}}]
YAML

export SOURCE_DATE_EPOCH=1767225600
expect_status 0 "build config-iso, iso and netboot for two nodes" -- \
  "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out" "$WORK/profile.yaml"
OUT=$WORK/out
for f in talos-metal-iso.iso cp1-config.iso cp1.iso cp2-config.iso cp2.iso SHA256SUMS manifest.json \
  netboot/cp1/vmlinuz netboot/cp1/initramfs.xz netboot/cp1/config.yaml netboot/cp1/boot.ipxe \
  netboot/cp2/vmlinuz netboot/cp2/initramfs.xz netboot/cp2/config.yaml netboot/cp2/boot.ipxe; do
  [ -f "$OUT/$f" ] || fail "missing output $f"
done
pass "every output present"
[ -z "$(find "$OUT" -name '*.partial' -o -name '.work-*')" ] || fail "partial files left behind"
(cd "$OUT" && sha256sum -c --quiet SHA256SUMS) || fail "SHA256SUMS does not match"
pass "sha256sum -c SHA256SUMS, no partial files"
grep -q SECRET "$OUT/manifest.json" "$OUT/SHA256SUMS" "$WORK/last.out" && fail "a secret leaked into the manifest or the log"
python3 - "$OUT/manifest.json" <<'PY' || fail "manifest content"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["talos_version"] == {"version": "v1.12.0", "from": "ISO volume id TALOS_V1_12_0"}, m["talos_version"]
assert [n["name"] for n in m["nodes"]] == ["cp1", "cp2"]
cp1 = m["nodes"][0]
assert cp1["outputs"]["iso"]["config_method"] == "embedded+metal-iso"
assert cp1["outputs"]["iso"]["embedded_config"] == {"extension": "embedded-config", "version": cp1["config_sha256"], "image": "0.sqsh"}
assert "e2e.node=cp1" in cp1["outputs"]["iso"]["kernel_args"]
assert "talos.config=http://10.0.20.2:8080/talos/cp1/config.yaml" in cp1["outputs"]["netboot"]["kernel_args"]
assert m["shared_boot_iso"]["kernel_args_added"] == "console=ttyS0 talos.config=metal-iso"
assert m["source_date_epoch"] == 1767225600
uefi = cp1["outputs"]["iso"]["uefi"]
assert uefi["bootloader"] == "systemd-boot" and uefi["secure_boot_signature"] == "none", uefi
assert uefi["kernel_args"].endswith(" console=ttyS0 e2e.node=cp1 talos.config=metal-iso"), uefi
assert "EFI partition 2:/EFI/Linux/Talos-v1.12.0.efi" in uefi["ukis"], uefi
PY
pass "manifest: version detected, methods and arguments recorded, no secret"
for f in cp1-config.iso cp1.iso netboot/cp1/config.yaml; do
  [ "$(stat -c %a "$OUT/$f")" = 600 ] || fail "$f holds a machine config but is mode $(stat -c %a "$OUT/$f")"
done
pass "files holding a machine config are 0600"
[ "$(stat -c %i "$OUT/netboot/cp1/initramfs.xz")" = "$(stat -c %i "$OUT/netboot/cp2/initramfs.xz")" ] ||
  fail "netboot initramfs is copied per node instead of linked"
cmp -s "$OUT/netboot/cp1/vmlinuz" "$TALOS_FIXTURE/vmlinuz-amd64" || fail "netboot kernel differs from the ISO's"
grep -qx 'kernel vmlinuz talos.platform=metal .* console=ttyS0 e2e.node=cp1 talos.config=http://10.0.20.2:8080/talos/cp1/config.yaml initrd=initramfs.xz' \
  "$OUT/netboot/cp1/boot.ipxe" || { cat "$OUT/netboot/cp1/boot.ipxe" >&2; fail "boot.ipxe kernel line"; }
grep -q 'hostname: "\?cp2' "$OUT/netboot/cp2/config.yaml" || fail "cp2's config lacks its hostname"
# Talos 1.12's HostnameConfig (what talosctl gen config writes) holds the node's hostname; a
# machine.network.hostname beside it would make Talos refuse the config.
python3 - "$OUT/netboot/cp2/config.yaml" <<'PY' || fail "cp2's hostname is not in its HostnameConfig document alone"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
v1, named = docs[0], [d for d in docs[1:] if d.get("kind") == "HostnameConfig"]
assert "hostname" not in (v1["machine"].get("network") or {}), "machine.network.hostname is set"
assert len(named) == 1 and named[0]["hostname"] == "cp2" and named[0]["auto"] == "off", named
PY
pass "netboot layout: linked kernel/initramfs, per-node config and iPXE script"

# The config ISO, read back.
xorriso -indev "$OUT/cp1-config.iso" -toc 2>&1 | grep -q "Volume id    : 'metal-iso'" || fail "config ISO label"
xorriso -indev "$OUT/cp1-config.iso" -toc 2>&1 | grep -q "ISO offers   : Rock_Ridge Joliet" || fail "config ISO lacks Joliet/RR"
xorriso -indev "$OUT/cp1-config.iso" -find / -exec lsdl 2>/dev/null | grep -q "^-r-------- .* '/config.yaml'$" || fail "config.yaml mode"
[ "$(blkid -o value -s LABEL "$OUT/cp1-config.iso")" = metal-iso ] || fail "blkid label"
xorriso -osirrox on -indev "$OUT/cp1-config.iso" -extract /config.yaml "$WORK/cp1-config.yaml" 2>/dev/null
cmp -s "$WORK/cp1-config.yaml" "$OUT/netboot/cp1/config.yaml" || fail "config ISO content differs from the node's config"
pass "config ISO: label metal-iso, Joliet + Rock Ridge, config.yaml 0400 with the node's config"

# The remaster keeps the boot set-up.
report() { xorriso -indev "$1" -report_el_torito plain -report_system_area plain 2>/dev/null; }
report "$TALOS_FIXTURE/metal-amd64.iso" >"$WORK/before.report"
report "$OUT/cp1.iso" >"$WORK/after.report"
eltorito() { grep '^El Torito boot img' "$1" | awk '{print $5, $6, $7, $8, $9, $10}'; }
[ "$(eltorito "$WORK/before.report")" = "$(eltorito "$WORK/after.report")" ] || fail "El Torito entries changed"
[ "$(eltorito "$WORK/after.report" | wc -l)" = 2 ] || fail "expected a BIOS and a UEFI El Torito entry"
grep -q '^System area summary: MBR protective-msdos-label grub2-mbr cyl-align-off GPT$' "$WORK/after.report" || fail "system area"
efi_size() { awk '/GPT type GUID      : .*28732ac11ff8d211ba4b00a0c93ec93b/ {i=$5} /GPT start and size :/ {if ($6==i) print $8}' "$1"; }
[ -n "$(efi_size "$WORK/after.report")" ] && [ "$(efi_size "$WORK/before.report")" = "$(efi_size "$WORK/after.report")" ] ||
  fail "EFI partition changed"
pass "remaster: El Torito BIOS+UEFI, protective MBR + GRUB MBR, GPT with the same EFI partition"

# Reproducible: same inputs and SOURCE_DATE_EPOCH, same bytes.
expect_status 0 "build again" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out2" "$WORK/profile.yaml"
cmp -s "$OUT/SHA256SUMS" "$WORK/out2/SHA256SUMS" || { diff "$OUT/SHA256SUMS" "$WORK/out2/SHA256SUMS" >&2; fail "not reproducible"; }
pass "a second build is byte-identical"

# Before 1.12 the per-node ISO carries the config on its own metal-iso volume only.
sed -e 's/^talos:$/talos:\n  version: v1.11.0/' -e 's/outputs: \[config-iso, iso, netboot\]/outputs: [iso]/' \
  "$WORK/profile.yaml" >"$WORK/profile-111.yaml"
expect_status 0 "build for Talos v1.11" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out111" --node cp1 "$WORK/profile-111.yaml"
xorriso -indev "$WORK/out111/cp1.iso" -find /boot -name 'embedded-config*' 2>/dev/null | grep -q . && fail "v1.11 ISO has an embedded config"
grep -q '"config_method": "metal-iso"' "$WORK/out111/manifest.json" || fail "v1.11 config method"
pass "v1.11: metal-iso method only"

# The kernel command line limit: the stand-in's kernel (Debian's, like Talos') states cmdline_size 2047 in
# its setup header, and GRUB's "BOOT_IMAGE=/boot/vmlinuz " counts. Node lim carries
# talos.experimental.wipe=system itself so that both GRUB entries ("Talos ISO" and "Reset", which adds
# that argument) have the same length: the default entry, the one that boots, is then exactly at the limit.
# The stand-in, like Talos, wipes on that argument and reboots before it loads a config: lim's boot
# shows its command line and the wipe, not a config.
# validate reads the local ISO and names the byte count; the pad is sized from it.
limit_profile() {  # limit_profile PAD_LENGTH FILE
  cat >"$2" <<YAML
kind: talos-iso
name: e2e-limit
talos:
  iso: {path: $TALOS_FIXTURE/metal-amd64.iso}
  config: {file: $WORK/controlplane.yaml}
  outputs: [iso]
nodes:
  - name: lim
    install_disk: /dev/vda
    kernel_args: [console=ttyS0, talos.experimental.wipe=system, x.pad=$(head -c "$1" /dev/zero | tr '\0' a)]
YAML
}
limit_profile 3000 "$WORK/limit-probe.yaml"
expect_status 1 "validate refuses a 3000-byte pad against the ISO's kernel" -- "$CLI" validate "$WORK/limit-probe.yaml"
expect_output "lim/kernel_args: iso: kernel command line for node lim \(GRUB menu entry 1\) is [0-9,]+ bytes with GRUB's prefix 'BOOT_IMAGE=/boot/vmlinuz '; the kernel in .*/metal-amd64.iso:/boot/vmlinuz keeps at most 2,047 \(setup header cmdline_size at 0x238" \
  "validate names the line's bytes, GRUB's prefix and the kernel's cmdline_size"
PROBE_BYTES=$(grep -o 'node lim (GRUB menu entry 1) is [0-9,]* bytes' "$WORK/last.out" | head -n 1 | grep -o '[0-9,]* bytes' | tr -d ', bytes')
AT_LIMIT_PAD=$((3000 - (PROBE_BYTES - 2047)))
limit_profile "$AT_LIMIT_PAD" "$WORK/limit.yaml"
expect_status 0 "build a node ISO whose GRUB command line is exactly 2047 bytes" -- \
  "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out-limit" "$WORK/limit.yaml"
limit_profile $((AT_LIMIT_PAD + 1)) "$WORK/limit-over.yaml"
expect_status 1 "build refuses one byte over" -- "$CLI" build --cache-dir "$WORK/cache" --out "$WORK/out-over" "$WORK/limit-over.yaml"
expect_output "node lim \(GRUB menu entry 1\) is 2,048 bytes with GRUB's prefix 'BOOT_IMAGE=/boot/vmlinuz '; the kernel in .* keeps at most 2,047 .*: 1 bytes too many, 'talos.config=metal-iso' would be lost" \
  "the refusal names 2,048 bytes, the limit and the argument that would be lost"
[ -z "$(ls -A "$WORK/out-over" 2>/dev/null)" ] || fail "the refused build wrote $(ls "$WORK/out-over")"

# ---- boots (TCG: ~15 s each) ----
grep_log() { grep -a -q -- "$1" "$2" || { grep -a talos-standin "$2" >&2; fail "$3: serial log lacks /$1/"; }; }

timeout 120 qemu-system-x86_64 -m 512 -smp 1 -display none -monitor none -serial "file:$WORK/bios.log" -no-reboot \
  -cdrom "$OUT/cp1.iso" -boot d </dev/null >"$WORK/bios.qemu" 2>&1 || true
grep_log 'talos-standin: cmdline: BOOT_IMAGE=/boot/vmlinuz .* console=ttyS0 e2e.node=cp1 talos.config=metal-iso' "$WORK/bios.log" "SeaBIOS cp1.iso (GRUB)"
CP1_SHA=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][0]["config_sha256"])' "$OUT/manifest.json")
grep_log "talos-standin: config-source: embedded-config extension $CP1_SHA /usr/local/etc/talos/config.yaml mode 400" "$WORK/bios.log" "SeaBIOS cp1.iso"
grep_log 'talos-standin: config: *hostname: "\?cp1' "$WORK/bios.log" "SeaBIOS cp1.iso"
grep_log 'talos-standin: config: *- "\?10.0.20.11/24' "$WORK/bios.log" "SeaBIOS cp1.iso"
grep_log 'talos-standin: config: *disk: "\?/dev/vda' "$WORK/bios.log" "SeaBIOS cp1.iso"
grep_log 'talos-standin: done' "$WORK/bios.log" "SeaBIOS cp1.iso"
pass "SeaBIOS: cp1.iso boots through GRUB with cp1's arguments and its embedded-config extension"

ovmf_firmware ovmf-cp1
timeout 120 qemu-system-x86_64 "${OVMF_ARGS[@]}" -m 512 -smp 1 -display none -monitor none -serial "file:$WORK/ovmf-cp1.log" -no-reboot \
  -drive "if=none,id=cd0,media=cdrom,readonly=on,file=$OUT/cp1.iso" -device ide-cd,drive=cd0,bus=ide.0,bootindex=1 \
  </dev/null >"$WORK/ovmf-cp1.qemu" 2>&1 || true
grep_log 'Talos (v1.12.0)' "$WORK/ovmf-cp1.log" "OVMF cp1.iso (systemd-boot menu)"
grep_log 'talos-standin: cmdline: talos.platform=metal .* console=ttyS0 e2e.node=cp1 talos.config=metal-iso' "$WORK/ovmf-cp1.log" "OVMF cp1.iso"
grep -a 'talos-standin: cmdline:' "$WORK/ovmf-cp1.log" | grep -q BOOT_IMAGE && fail "OVMF cp1.iso booted through GRUB, not the UKI"
grep_log "talos-standin: config-source: embedded-config extension $CP1_SHA /usr/local/etc/talos/config.yaml mode 400" "$WORK/ovmf-cp1.log" "OVMF cp1.iso"
grep_log 'talos-standin: config: *hostname: "\?cp1' "$WORK/ovmf-cp1.log" "OVMF cp1.iso"
grep_log 'talos-standin: done' "$WORK/ovmf-cp1.log" "OVMF cp1.iso"
pass "OVMF: cp1.iso boots through systemd-boot and its edited UKI with cp1's arguments and embedded-config extension"

# A node written as the first node's ISO with its own files and UKI archive slots patched in (the
# variant path with no UKI rebuilt): boots under both firmwares with its own config, found in its
# zero-padded embedded-config archive (GRUB's initrd file and the UKI's .initrd alike).
cat >"$WORK/variants.yaml" <<YAML
kind: talos-iso
name: e2e-variants
talos:
  iso: {path: $TALOS_FIXTURE/metal-amd64.iso}
  config: {file: controlplane.yaml}
  outputs: [iso]
  kernel_args: [console=ttyS0, e2e.variant=1]
nodes:
  - name: v1
    addresses: [10.0.20.31/24]
  - name: v2
    hostname: v2-variant-host
    addresses: [10.0.20.32/24]
YAML
expect_status 0 "build two node ISOs that share their arguments" -- \
  "$CLI" build -v --cache-dir "$WORK/cache" --out "$WORK/out-variants" "$WORK/variants.yaml"
expect_output "v2.iso: a copy of v1.iso with this node's files and UKI archives" "v2.iso is v1.iso with v2's files and UKI archive slots"
(cd "$WORK/out-variants" && sha256sum -c --quiet SHA256SUMS) || fail "the variants' SHA256SUMS"
V2_SHA=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][1]["config_sha256"])' "$WORK/out-variants/manifest.json")
timeout 120 qemu-system-x86_64 -m 512 -smp 1 -display none -monitor none -serial "file:$WORK/bios-v2.log" -no-reboot \
  -cdrom "$WORK/out-variants/v2.iso" -boot d </dev/null >"$WORK/bios-v2.qemu" 2>&1 || true
grep_log 'talos-standin: cmdline: BOOT_IMAGE=/boot/vmlinuz .* console=ttyS0 e2e.variant=1 talos.config=metal-iso' "$WORK/bios-v2.log" "SeaBIOS v2.iso (GRUB)"
grep_log "talos-standin: config-source: embedded-config extension $V2_SHA /usr/local/etc/talos/config.yaml mode 400" "$WORK/bios-v2.log" "SeaBIOS v2.iso"
grep_log 'talos-standin: config: *hostname: "\?v2-variant-host' "$WORK/bios-v2.log" "SeaBIOS v2.iso"
grep_log 'talos-standin: done' "$WORK/bios-v2.log" "SeaBIOS v2.iso"
pass "SeaBIOS: v2.iso (a variant of v1.iso) boots through GRUB with its own embedded config"
ovmf_firmware ovmf-v2
timeout 120 qemu-system-x86_64 "${OVMF_ARGS[@]}" -m 512 -smp 1 -display none -monitor none -serial "file:$WORK/ovmf-v2.log" -no-reboot \
  -drive "if=none,id=cd0,media=cdrom,readonly=on,file=$WORK/out-variants/v2.iso" -device ide-cd,drive=cd0,bus=ide.0,bootindex=1 \
  </dev/null >"$WORK/ovmf-v2.qemu" 2>&1 || true
grep_log 'talos-standin: cmdline: talos.platform=metal .* console=ttyS0 e2e.variant=1 talos.config=metal-iso' "$WORK/ovmf-v2.log" "OVMF v2.iso"
grep -a 'talos-standin: cmdline:' "$WORK/ovmf-v2.log" | grep -q BOOT_IMAGE && fail "OVMF v2.iso booted through GRUB, not the UKI"
grep_log "talos-standin: config-source: embedded-config extension $V2_SHA /usr/local/etc/talos/config.yaml mode 400" "$WORK/ovmf-v2.log" "OVMF v2.iso"
grep_log 'talos-standin: config: *hostname: "\?v2-variant-host' "$WORK/ovmf-v2.log" "OVMF v2.iso"
grep_log 'talos-standin: done' "$WORK/ovmf-v2.log" "OVMF v2.iso"
pass "OVMF: v2.iso boots through systemd-boot and its UKI, the archive slot and checksum word patched in"

ovmf_firmware ovmf
timeout 120 qemu-system-x86_64 "${OVMF_ARGS[@]}" -m 512 -smp 1 -display none -monitor none -serial "file:$WORK/ovmf.log" -no-reboot \
  -drive "if=none,id=cd0,media=cdrom,readonly=on,file=$OUT/talos-metal-iso.iso" -device ide-cd,drive=cd0,bus=ide.0,bootindex=1 \
  -drive "if=none,id=cd1,media=cdrom,readonly=on,file=$OUT/cp2-config.iso" -device ide-cd,drive=cd1,bus=ide.1 \
  </dev/null >"$WORK/ovmf.qemu" 2>&1 || true
grep_log 'talos-standin: cmdline: .* console=ttyS0 talos.config=metal-iso' "$WORK/ovmf.log" "OVMF shared ISO + cp2-config.iso"
grep -a 'talos-standin: cmdline:' "$WORK/ovmf.log" | grep -q BOOT_IMAGE && fail "OVMF shared ISO booted through GRUB, not the UKI"
grep_log 'talos-standin: config-source: metal-iso /dev/sr' "$WORK/ovmf.log" "OVMF shared ISO + cp2-config.iso"
grep_log 'talos-standin: config: *hostname: "\?cp2' "$WORK/ovmf.log" "OVMF shared ISO + cp2-config.iso"
grep_log 'talos-standin: config: *rack: "\?b' "$WORK/ovmf.log" "OVMF shared ISO + cp2-config.iso"
pass "OVMF: the shared ISO (its UKI edited) finds cp2's config on the metal-iso CD-ROM"
# The ISO at the limit under SeaBIOS: the kernel's /proc/cmdline is all 2047 bytes, the last argument whole.
timeout 120 qemu-system-x86_64 -m 512 -smp 1 -display none -monitor none -serial "file:$WORK/limit.log" -no-reboot \
  -cdrom "$WORK/out-limit/lim.iso" -boot d </dev/null >"$WORK/limit.qemu" 2>&1 || true
grep_log 'talos-standin: wipe: system' "$WORK/limit.log" "SeaBIOS lim.iso (command line at the limit)"
LIMIT_CMDLINE=$(grep -a '^talos-standin: cmdline: ' "$WORK/limit.log" | head -n 1 | tr -d '\r' | sed 's/^talos-standin: cmdline: //')
[ "${#LIMIT_CMDLINE}" = 2047 ] || fail "lim.iso: /proc/cmdline is ${#LIMIT_CMDLINE} bytes, expected 2047: ${LIMIT_CMDLINE:0:80}...${LIMIT_CMDLINE: -80}"
case "$LIMIT_CMDLINE" in
  BOOT_IMAGE=/boot/vmlinuz\ *" x.pad=$(head -c "$AT_LIMIT_PAD" /dev/zero | tr '\0' a) talos.config=metal-iso") ;;
  *) fail "lim.iso: /proc/cmdline does not end with the whole pad and talos.config=metal-iso: ...${LIMIT_CMDLINE: -80}" ;;
esac
grep -aq 'talos-standin: wipe-result: ' "$WORK/limit.log" || fail "SeaBIOS lim.iso: the stand-in did not finish its wipe"
pass "SeaBIOS: lim.iso boots with a 2047-byte command line, kept whole by GRUB and the kernel"
echo "talos_iso_qemu: $CHECKS checks passed"
