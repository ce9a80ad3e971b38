#!/usr/bin/env python3
"""Many DHCP clients one after the other (MACs 02:00:00:xx:xx:xx): DISCOVER, REQUEST, and on ACK print
"MAC ADDRESS" (flushed) so a test can compare every acknowledged lease with the server's lease file.
A client whose exchange times out (server killed mid-way) is retried with a new xid until DEADLINE.
usage: dhcp_dora_loop.py IFACE COUNT DEADLINE_S [PAUSE_S between clients]"""
import os, socket, struct, sys, time
from dhcp_wire import wait_for_reply

iface, count, deadline = sys.argv[1].encode(), int(sys.argv[2]), time.time() + float(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface)
sock.bind(("0.0.0.0", 68))

def packet(xid, mac, msg_type, extra=b""):
    head = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + bytes(16) + mac + bytes(10) + bytes(192)
    return head + b"\x63\x82\x53\x63" + bytes([53, 1, msg_type]) + extra + b"\xff"

def wait_for(xid, want, timeout):
    reply = wait_for_reply(sock, xid, {want, 6}, timeout)
    if reply is None:
        return None
    data, options, kind = reply
    if kind == 6:
        return "nak"
    return data[16:20], options.get(54, bytes(4))

for n in range(count):
    mac = bytes([2, 0, 0, (n >> 16) & 255, (n >> 8) & 255, n & 255])
    while time.time() < deadline:
        xid = int.from_bytes(os.urandom(4), "big")
        sock.sendto(packet(xid, mac, 1), ("255.255.255.255", 67))
        offer = wait_for(xid, 2, 0.3)
        if not offer or offer == "nak":
            continue
        sock.sendto(packet(xid, mac, 3, bytes([50, 4]) + offer[0] + bytes([54, 4]) + offer[1]), ("255.255.255.255", 67))
        ack = wait_for(xid, 5, 0.3)
        if ack and ack != "nak":
            print(":".join("%02x" % b for b in mac), socket.inet_ntoa(ack[0]), flush=True)
            break
    time.sleep(pause)
