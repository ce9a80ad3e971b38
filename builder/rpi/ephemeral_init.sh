#!/bin/busybox sh
# /init of the initramfs of an ephemeral (RAM-only, rebuilt-on-reboot) node, written into the
# initramfs by builder/rpi/ephemeral_initramfs.cpp (embedded into the binary at build time).
#
# Kernel command line:
#   aggrik8s.root=http://HOST:PORT/PATH/root.squashfs   the root filesystem (squashfs)
#   aggrik8s.root_sha256=<64 hex>                      its sha256
#   aggrik8s.identity=http://HOST:PORT/PATH            a tar of the node's own files (hostname, RKE2
#                                                      config and node password, SSH host keys)
#   [aggrik8s.retries=N]                               attempts per step before rebooting (default 5)
#   [init=/sbin/init]                                  the real init, run in the new root
#
# Steps: mount proc/sys/dev/run, load the modules of aggrik8s.modules, wait for an Ethernet link,
# DHCP (udhcpc + /etc/udhcpc.script), download the root into a tmpfs, check its sha256, mount it
# read-only under a tmpfs overlay at /newroot, extract the identity tar over it, write
# /etc/aggrik8s/ephemeral-boot.env there, switch_root. Every line it prints starts with
# "aggrik8s-init: " and ends with " @<seconds since boot>s" (from /proc/uptime). A failed step prints
# "aggrik8s-init: FAILED: <step>: <why>" and is retried after 1, 2, 4, 8... s (at most 30 s); after
# aggrik8s.retries attempts it prints "aggrik8s-init: giving up: <why>; rebooting in 10 s" and reboots.
# It never starts a shell: an unattended node that cannot boot must say why and try again, not wait
# for a keyboard nobody will use.
export PATH=/bin
umask 022

/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
/bin/busybox mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
# The cpio's /dev/console already carries stdout; devtmpfs brings the NIC, loop and null devices.
/bin/busybox mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
# /run is moved into the new root at the end (as initramfs-tools does): systemd keeps a /run that is
# already mounted, so the mounts that hold the root stay visible there (df /run/aggrik8s/...).
/bin/busybox mount -t tmpfs -o nosuid,nodev,mode=0755,size=10% tmpfs /run

# Centiseconds since boot. ash arithmetic reads a leading 0 as octal: "1xx - 100" keeps the
# fraction decimal.
uptime_cs() {
  read -r up _ </proc/uptime
  echo $(( ${up%.*} * 100 + 1${up#*.} - 100 ))
}
# "12.34" from centiseconds.
seconds() {
  printf '%d.%02d' $(($1 / 100)) $(($1 % 100))
}
log() {
  echo "aggrik8s-init: $* @$(seconds "$(uptime_cs)")s"
}

give_up() {
  log "giving up: $1; rebooting in 10 s"
  sleep 10
  reboot -f
  # reboot -f returns only when the reboot(2) call itself failed.
  echo b >/proc/sysrq-trigger
  while :; do sleep 60; done
}

# attempt STEP FUNCTION...: runs FUNCTION until it succeeds, at most $retries times, with back-off.
# FUNCTION returns non-zero and sets $why on failure.
attempt() {
  step=$1
  shift
  n=1 delay=1
  while :; do
    why=
    "$@" && return 0
    log "FAILED: $step: ${why:-unknown error} (attempt $n of $retries)"
    [ "$n" -lt "$retries" ] || give_up "$step: ${why:-unknown error} after $n attempts"
    log "$step: retrying in $delay s"
    sleep "$delay"
    n=$((n + 1)) delay=$((delay * 2))
    [ "$delay" -le 30 ] || delay=30
  done
}

# ---- command line ----------------------------------------------------------------------------------
root_url='' root_sha256='' identity_url='' retries=5 init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    aggrik8s.root=*) root_url=${arg#*=} ;;
    aggrik8s.root_sha256=*) root_sha256=${arg#*=} ;;
    aggrik8s.identity=*) identity_url=${arg#*=} ;;
    aggrik8s.retries=*) retries=${arg#*=} ;;
    init=*) init=${arg#*=} ;;
  esac
done
log "ephemeral boot, kernel $(uname -r)"
case "$retries" in '' | *[!0-9]*) log "aggrik8s.retries='$retries' is not a number: using 5"; retries=5 ;; esac
[ "$retries" -ge 1 ] || retries=1
# Nothing on the command line changes between attempts: a bad one reboots at once (the server may
# hand out a corrected one on the next boot).
for required in aggrik8s.root:"$root_url" aggrik8s.identity:"$identity_url"; do
  value=${required#*:}
  case "$value" in
    http://?*) ;;
    '') give_up "cmdline: no ${required%%:*}= on the kernel command line" ;;
    *) give_up "cmdline: ${required%%:*}=$value is not an http:// URL (busybox wget here has no TLS)" ;;
  esac
done
root_sha256=$(echo "$root_sha256" | tr 'A-F' 'a-f')
case "$root_sha256" in
  *[!0-9a-f]*) give_up "cmdline: aggrik8s.root_sha256=$root_sha256 is not 64 hex digits" ;;
esac
[ "${#root_sha256}" -eq 64 ] || give_up "cmdline: aggrik8s.root_sha256 '$root_sha256' is not 64 hex digits (${#root_sha256})"
case "$init" in /*) ;; *) give_up "cmdline: init=$init is not an absolute path" ;; esac

# ---- modules ---------------------------------------------------------------------------------------
kver=$(uname -r)
modules_dir=/lib/modules/$kver
if [ ! -f "$modules_dir/aggrik8s.modules" ]; then
  give_up "modules: this initramfs was built for kernel $(ls /lib/modules | tr '\n' ' ')but the kernel is $kver"
fi
loaded=
while read -r ko; do
  case "$ko" in '' | '#'*) continue ;; esac
  name=${ko##*/}
  name=${name%.ko}
  # A failed insmod does not get better by trying again: a module that does not fit this kernel.
  out=$(insmod "$modules_dir/$ko" 2>&1) || give_up "modules: insmod $ko: $out"
  loaded="$loaded $name"
done <"$modules_dir/aggrik8s.modules"
builtin=$(sed -n 's/^# built in: //p' "$modules_dir/aggrik8s.modules")
log "modules: loaded${loaded:- none}; built in: ${builtin:-none}"

# ---- link ------------------------------------------------------------------------------------------
# The first Ethernet interface (ARPHRD_ETHER, a real device, not wireless) with a carrier. Pi 5's macb
# and its PHY need a few seconds to negotiate; virtio's link is up at once.
find_link() {
  deadline=$(($(uptime_cs) + 2000))
  candidates=
  for dev in /sys/class/net/*; do
    name=${dev##*/}
    [ "$(cat "$dev/type" 2>/dev/null)" = 1 ] && [ -e "$dev/device" ] && [ ! -e "$dev/wireless" ] || continue
    ip link set "$name" up 2>/dev/null
    candidates="$candidates $name"
  done
  if [ -z "$candidates" ]; then
    why="no Ethernet interface (/sys/class/net has: $(ls /sys/class/net | tr '\n' ' '))"
    return 1
  fi
  while :; do
    for name in $candidates; do
      if [ "$(cat "/sys/class/net/$name/carrier" 2>/dev/null)" = 1 ]; then
        iface=$name
        return 0
      fi
    done
    [ "$(uptime_cs)" -lt "$deadline" ] || break
    # Polling the carrier: the kernel offers no simpler wait from a shell.
    sleep 0.2
  done
  why="no carrier on${candidates} within 20 s (cable, switch port?)"
  return 1
}
t0=$(uptime_cs)
attempt link find_link
log "link: $iface is up ($(cat "/sys/class/net/$iface/address")) after $(seconds $(($(uptime_cs) - t0))) s"

# ---- DHCP ------------------------------------------------------------------------------------------
dhcp() {
  rm -f /run/aggrik8s-dhcp.env
  # -C: no client identifier (option 61). The Pi's bootloader sends none, so a DHCP server keys its
  # lease by the MAC; asking the same way gets the same lease and address, the one serve knows as the
  # node's (its identity goes only there), instead of a second lease under "01:<MAC>".
  if ! out=$(udhcpc -C -i "$iface" -s /etc/udhcpc.script -f -q -n -t 4 -T 3 2>&1); then
    why="no lease on $iface: $(echo "$out" | tail -n 1)"
    return 1
  fi
  if [ ! -f /run/aggrik8s-dhcp.env ]; then
    why="udhcpc succeeded but /etc/udhcpc.script configured nothing: $(echo "$out" | tail -n 1)"
    return 1
  fi
  echo "$out" | grep '^aggrik8s-init: ' || true
}
t0=$(uptime_cs)
attempt dhcp dhcp
dhcp_address='' dhcp_router=''
# shellcheck disable=SC1091 # written by /etc/udhcpc.script: dhcp_address, dhcp_router
. /run/aggrik8s-dhcp.env
time_dhcp=$(($(uptime_cs) - t0))
log "dhcp: $dhcp_address on $iface router ${dhcp_router:-none} in $(seconds "$time_dhcp") s"

# ---- root download and verification ----------------------------------------------------------------
# umask 077: the identity tar (secrets) is downloaded under /run/aggrik8s too.
mkdir -m 0700 /run/aggrik8s
cd /run/aggrik8s || give_up "cannot enter /run/aggrik8s"
mkdir -p download lower overlay
root_file=/run/aggrik8s/download/root.squashfs
download_attempts=0
# wget runs without -T: Debian 12's busybox 1.35 wget crashes (SIGSEGV) when given it; its own
# 900 s read timeout applies.
download_root() {
  download_attempts=$((download_attempts + 1))
  grep -q ' /run/aggrik8s/download ' /proc/mounts && umount /run/aggrik8s/download
  # The size first, so the tmpfs is as large as the file (a tmpfs allocates on use; the size is a limit
  # that also makes a too-large root fail here, not later as an out-of-memory root).
  if ! headers=$(wget -S --spider "$root_url" 2>&1); then
    why="wget $root_url: $(echo "$headers" | tr -d '\r' | tail -n 1)"
    return 1
  fi
  length=$(echo "$headers" | tr -d '\r' | sed -n 's/^ *[Cc]ontent-[Ll]ength: *\([0-9][0-9]*\)$/\1/p' | tail -n 1)
  if [ -z "$length" ]; then
    why="$root_url: the server sent no Content-Length"
    return 1
  fi
  size_kib=$((length / 1024 + 1024))
  # A root larger than the free RAM would fail half-way or push the node out of memory later.
  avail_kib=$(sed -n 's/^MemAvailable: *\([0-9][0-9]*\) kB$/\1/p' /proc/meminfo)
  if [ -n "$avail_kib" ] && [ "$size_kib" -ge "$avail_kib" ]; then
    why="the root is $length bytes, more than the $avail_kib KiB of RAM available"
    return 1
  fi
  if ! out=$(mount -t tmpfs -o "size=${size_kib}k,mode=0700,nosuid,nodev" tmpfs /run/aggrik8s/download 2>&1); then
    why="cannot mount a ${size_kib} KiB tmpfs for the root: $out"
    return 1
  fi
  log "root: downloading $root_url ($length bytes)"
  start=$(uptime_cs)
  if ! out=$(wget -q -O "$root_file" "$root_url" 2>&1); then
    why="wget $root_url: $(echo "$out" | tail -n 1)"
    return 1
  fi
  time_download=$(($(uptime_cs) - start))
  [ "$time_download" -gt 0 ] || time_download=1
  # stat, not wc -c: busybox wc reads the whole file, which for a 1 GiB root took minutes under
  # emulation and costs a second pass over RAM on a Pi.
  bytes=$(stat -c %s "$root_file")
  if [ "$bytes" != "$length" ]; then
    why="$root_url: got $bytes bytes, Content-Length said $length"
    return 1
  fi
  rate=$((bytes * 100 * 100 / time_download / 1048576))
  log "root: downloaded $bytes bytes in $(seconds "$time_download") s ($(seconds "$rate") MiB/s)"
  start=$(uptime_cs)
  got=$(sha256sum "$root_file" | cut -d ' ' -f 1)
  time_verify=$(($(uptime_cs) - start))
  if [ "$got" != "$root_sha256" ]; then
    why="sha256 of $root_url is $got, expected $root_sha256"
    return 1
  fi
  log "verify: sha256 $got ok in $(seconds "$time_verify") s"
}
attempt download download_root

# ---- mount: squashfs (read-only) under a tmpfs overlay ----------------------------------------------
mount_root() {
  for m in /newroot /run/aggrik8s/overlay /run/aggrik8s/lower; do
    grep -q " $m " /proc/mounts && umount "$m"
  done
  start=$(uptime_cs)
  if ! out=$(mount -t squashfs -o ro,loop "$root_file" /run/aggrik8s/lower 2>&1); then
    why="mount -t squashfs $root_file: $out"
    return 1
  fi
  # The writable layer: everything the node writes lives here, in RAM, and is gone at the next boot.
  if ! out=$(mount -t tmpfs -o mode=0755 tmpfs /run/aggrik8s/overlay 2>&1); then
    why="tmpfs for the overlay: $out"
    return 1
  fi
  mkdir -p /run/aggrik8s/overlay/upper /run/aggrik8s/overlay/work
  if ! out=$(mount -t overlay -o lowerdir=/run/aggrik8s/lower,upperdir=/run/aggrik8s/overlay/upper,workdir=/run/aggrik8s/overlay/work overlay /newroot 2>&1); then
    why="mount -t overlay at /newroot: $out"
    return 1
  fi
  time_mount=$(($(uptime_cs) - start))
  log "mount: squashfs under a tmpfs overlay at /newroot in $(seconds "$time_mount") s"
}
attempt mount mount_root

# ---- identity --------------------------------------------------------------------------------------
identity_file=/run/aggrik8s/identity.tar
fetch_identity() {
  start=$(uptime_cs)
  rm -f "$identity_file"
  # The tar holds the node's secrets (node password, SSH host keys, join token): 0600 in a 0700 dir.
  if ! out=$(umask 077 && wget -q -O "$identity_file" "$identity_url" 2>&1); then
    rm -f "$identity_file"
    why="wget $identity_url: $(echo "$out" | tail -n 1)"
    return 1
  fi
  bytes=$(wc -c <"$identity_file")
  # busybox tar restores mode and numeric owner (no /etc/passwd here to map names).
  if ! out=$(tar -x -f "$identity_file" -C /newroot 2>&1); then
    rm -f "$identity_file"
    why="tar -x of $identity_url ($bytes bytes): $out"
    return 1
  fi
  entries=$(tar -t -f "$identity_file" | wc -l)
  rm -f "$identity_file"
  time_identity=$(($(uptime_cs) - start))
  log "identity: $entries entries ($bytes bytes) from $identity_url in $(seconds "$time_identity") s"
}
attempt identity fetch_identity

# ---- hand over -------------------------------------------------------------------------------------
# The path of $2 inside root $1 with every symlink resolved inside that root (an absolute link such as
# /sbin/init -> /lib/systemd/systemd points into the new root, not into this initramfs).
resolve_in_root() {
  rest=${2#/} cur='' hops=0
  while [ -n "$rest" ]; do
    part=${rest%%/*}
    case "$rest" in */*) rest=${rest#*/} ;; *) rest= ;; esac
    case "$part" in '' | .) continue ;; ..) cur=${cur%/*}; continue ;; esac
    if [ -L "$1$cur/$part" ]; then
      hops=$((hops + 1))
      [ "$hops" -le 40 ] || return 1
      target=$(readlink "$1$cur/$part")
      case "$target" in /*) cur= ;; esac
      rest=${target#/}${rest:+/$rest}
    else
      cur=$cur/$part
    fi
  done
  echo "$1$cur"
}
quote() {
  printf "'%s'" "$(echo "$1" | sed "s/'/'\\\\''/g")"
}
prepare_switch() {
  real_init=$(resolve_in_root /newroot "$init")
  if [ -z "$real_init" ] || [ ! -f "$real_init" ] || [ ! -x "$real_init" ]; then
    why="$init is not an executable file in the root"
    return 1
  fi
  for d in proc sys dev run etc/aggrik8s; do mkdir -p "/newroot/$d"; done
  env=/newroot/etc/aggrik8s/ephemeral-boot.env
  {
    echo "# Written by the aggrik8s initramfs at boot: where this root came from and how long each step took (s)."
    echo "AGGRIK8S_ROOT_URL=$(quote "$root_url")"
    echo "AGGRIK8S_ROOT_SHA256=$root_sha256"
    echo "AGGRIK8S_ROOT_BYTES=$bytes_root"
    echo "AGGRIK8S_ROOT_DOWNLOAD_ATTEMPTS=$download_attempts"
    echo "AGGRIK8S_IDENTITY_URL=$(quote "$identity_url")"
    echo "AGGRIK8S_INTERFACE=$iface"
    echo "AGGRIK8S_ADDRESS=$dhcp_address"
    echo "AGGRIK8S_ROUTER=${dhcp_router:-}"
    echo "AGGRIK8S_TIME_DHCP=$(seconds "$time_dhcp")"
    echo "AGGRIK8S_TIME_DOWNLOAD=$(seconds "$time_download")"
    echo "AGGRIK8S_TIME_VERIFY=$(seconds "$time_verify")"
    echo "AGGRIK8S_TIME_MOUNT=$(seconds "$time_mount")"
    echo "AGGRIK8S_TIME_IDENTITY=$(seconds "$time_identity")"
    echo "AGGRIK8S_UPTIME_SWITCH_ROOT=$(seconds "$(uptime_cs)")"
  } >"$env.partial" && mv "$env.partial" "$env" || {
    why="cannot write $env"
    return 1
  }
  chmod 0644 "$env"
}
bytes_root=$(stat -c %s "$root_file")
attempt switch_root prepare_switch
log "switch_root: starting $init"
cd /
mount --move /dev /newroot/dev
mount --move /run /newroot/run
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot "$init"
