#!/usr/bin/env python3
"""A fleet of DHCP clients on one interface, for the kill -9 test (tests/e2e/dhcp_kill9.sh).
MACs 02:00:00:00:HI:LO for FIRST .. FIRST+COUNT-1. First every MAC gets a lease (DISCOVER, REQUEST);
then, until STOP_FILE exists, the fleet goes round again and again: a renewal (REQUEST with ciaddr,
RENEWING) or a RELEASE followed by a new DISCOVER/REQUEST. Every exchange is retried with a new xid
until it succeeds or DEADLINE_S passes (the server is being killed and restarted).
Prints one line per event, flushed, with the time it was received (time.time()):
  ACK MAC ADDRESS TIME        an ACK received (first lease, renewal, lease after a release)
  NAK MAC ADDRESS TIME        a renewal of a lease the client holds was refused
  RETURN MAC OLD NEW TIME     after releasing OLD, the next DISCOVER/REQUEST got NEW
The replies to renewals are unicast to ciaddr: the caller makes the subnet local in the client's
namespace (ip route add local ...) so they arrive.
WORKERS clients run at once (threads sharing one socket; replies are matched by xid), so the server
sees concurrent requests and commits them in groups.
usage: dhcp_dora_loop.py IFACE FIRST COUNT STOP_FILE DEADLINE_S [WORKERS]"""
import os, queue, socket, struct, sys, threading, time
from dhcp_wire import dhcp_options

iface, first, count = sys.argv[1].encode(), int(sys.argv[2]), int(sys.argv[3])
stop_file, deadline = sys.argv[4], time.time() + float(sys.argv[5])
workers = int(sys.argv[6]) if len(sys.argv) > 6 else 4
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface)
sock.bind(("0.0.0.0", 68))
waiting, waiting_lock, print_lock = {}, threading.Lock(), threading.Lock()


def receive():
    while True:
        data, _ = sock.recvfrom(2048)
        if len(data) < 240:
            continue
        xid = struct.unpack("!I", data[4:8])[0]
        with waiting_lock:
            box = waiting.get(xid)
        if box is not None:
            options = dhcp_options(data)
            box.put((data, options, options.get(53, b"\0")[0]))


def wait_for_reply(xid, accept, timeout):
    """The first reply to `xid` whose type is in `accept`, as (data, options, type), or None."""
    end = time.time() + timeout
    with waiting_lock:
        box = waiting.setdefault(xid, queue.Queue())
    try:
        while time.time() < end:
            try:
                reply = box.get(timeout=max(0.01, end - time.time()))
            except queue.Empty:
                return None
            if reply[2] in accept:
                return reply
        return None
    finally:
        with waiting_lock:
            waiting.pop(xid, None)


def send(data):
    sock.sendto(data, ("255.255.255.255", 67))


def packet(xid, mac, msg_type, extra=b"", ciaddr=bytes(4)):
    head = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + ciaddr + bytes(12) + mac + bytes(10) + bytes(192)
    return head + b"\x63\x82\x53\x63" + bytes([53, 1, msg_type]) + extra + b"\xff"


def emit(*fields):
    with print_lock:
        print(*fields, "%.6f" % time.time(), flush=True)


def text(mac):
    return ":".join("%02x" % b for b in mac)


def exchange(mac, send, want):
    """Sends packet(xid) built by `send` and waits for a reply of type `want` (or NAK): (kind, data,
    options), or None on timeout."""
    xid = int.from_bytes(os.urandom(4), "big")
    with waiting_lock:
        waiting[xid] = queue.Queue()  # before sending: the reply may come back at once
    sock.sendto(send(xid), ("255.255.255.255", 67))
    reply = wait_for_reply(xid, {want, 6}, 0.3)
    if reply is None:
        return None
    data, options, kind = reply
    return kind, data, options, xid


def lease(mac):
    """DISCOVER/REQUEST until ACKed; the address (4 bytes) and the server id, or None at the deadline."""
    while time.time() < deadline:
        offer = exchange(mac, lambda xid: packet(xid, mac, 1), 2)
        if not offer or offer[0] != 2:
            continue
        address, server = offer[1][16:20], offer[2].get(54, bytes(4))
        xid = offer[3]
        with waiting_lock:
            waiting[xid] = queue.Queue()
        send(packet(xid, mac, 3, bytes([50, 4]) + address + bytes([54, 4]) + server))
        ack = wait_for_reply(xid, {5, 6}, 0.3)
        if ack and ack[2] == 5:
            emit("ACK", text(mac), socket.inet_ntoa(ack[0][16:20]))
            return ack[0][16:20], server
    return None


def renew(mac, address):
    while time.time() < deadline:
        reply = exchange(mac, lambda xid: packet(xid, mac, 3, ciaddr=address), 5)
        if reply is None:
            continue
        emit("ACK" if reply[0] == 5 else "NAK", text(mac), socket.inet_ntoa(reply[1][16:20] if reply[0] == 5 else address))
        return reply[0] == 5
    return False


def client(macs, failures):
    held = {}
    for mac in macs:
        got = lease(mac)
        if got is None:
            failures.append("no lease for %s before the deadline" % text(mac))
            return
        held[mac] = got
    round_number = 0
    while not os.path.exists(stop_file) and time.time() < deadline:
        for i, mac in enumerate(macs):
            if os.path.exists(stop_file):
                return
            address, server = held[mac]
            if (i + round_number) % 2 == 0:
                renew(mac, address)
            else:
                send(packet(int.from_bytes(os.urandom(4), "big"), mac, 7, bytes([54, 4]) + server, ciaddr=address))
                got = lease(mac)
                if got is None:
                    return
                emit("RETURN", text(mac), socket.inet_ntoa(address), socket.inet_ntoa(got[0]))
                held[mac] = got
        round_number += 1


threading.Thread(target=receive, daemon=True).start()
all_macs = [bytes([2, 0, 0, 0, (n >> 8) & 255, n & 255]) for n in range(first, first + count)]
failures, threads = [], []
for w in range(workers):
    threads.append(threading.Thread(target=client, args=(all_macs[w::workers], failures)))
    threads[-1].start()
for thread in threads:
    thread.join()
if failures:
    sys.exit("; ".join(failures))
