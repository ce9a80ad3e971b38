#!/bin/busybox sh
# /etc/udhcpc.script of the ephemeral initramfs (see ephemeral_init.sh): busybox udhcpc runs it with
# the event in $1 and the lease in the environment ($interface, $ip, $mask (prefix length), $router,
# $dns, $domain, $lease, $serverid). It configures the interface, prints what it set, and leaves
# /run/aggrik8s-dhcp.env for /init. The address stays on the interface after switch_root: the real
# system's network manager takes the link over from there.
# shellcheck disable=SC2154 # $interface, $ip, ... come from udhcpc
export PATH=/bin

log() {
  read -r up _ </proc/uptime
  echo "aggrik8s-init: $* @${up}s"
}

case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface" 2>/dev/null
    ip link set "$interface" up
    ;;
  bound | renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" dev "$interface" || exit 1
    routers=
    if [ -n "${router:-}" ]; then
      ip -4 route del default 2>/dev/null
      # The first router that takes; a lease may list several.
      for r in $router; do
        if ip -4 route add default via "$r" dev "$interface" 2>/dev/null; then
          routers=$r
          break
        fi
      done
    fi
    : >/etc/resolv.conf
    [ -z "${domain:-}" ] || echo "search $domain" >>/etc/resolv.conf
    for d in ${dns:-}; do echo "nameserver $d" >>/etc/resolv.conf; done
    log "dhcp: lease $ip/${mask:-24} router ${routers:-none} dns ${dns:-none} from ${serverid:-?} for ${lease:-?} s on $interface"
    {
      echo "dhcp_address=$ip/${mask:-24}"
      echo "dhcp_router=$routers"
    } >/run/aggrik8s-dhcp.env
    ;;
  leasefail | nak)
    log "dhcp: $1 on $interface${message:+: $message}"
    ;;
esac
exit 0
