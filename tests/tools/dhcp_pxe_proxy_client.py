#!/usr/bin/env python3
"""A PXE ROM against a proxyDHCP server: DISCOVER with option 93 = ARCH, vendor class PXEClient and a
type-0 UUID in option 97, read the proxy OFFER (yiaddr must be 0), then, as UEFI ROMs do, a REQUEST
unicast to the proxy's port 4011. Prints both replies as JSON. Runs inside a test namespace.
usage: dhcp_pxe_proxy_client.py IFACE MAC ARCH [TIMEOUT_S]"""
import json, os, socket, struct, sys
from dhcp_wire import dhcp_options

iface, mac, arch = sys.argv[1].encode(), bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5
xid = int.from_bytes(os.urandom(4), "big")
uuid = bytes([0]) + bytes(range(16))

def packet(msg_type, ciaddr=b"\0\0\0\0"):
    head = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + ciaddr + bytes(12) + mac + bytes(10) + bytes(192)
    vendor = b"PXEClient:Arch:%05d:UNDI:002001" % arch
    opts = bytes([53, 1, msg_type, 93, 2, arch >> 8, arch & 255, 60, len(vendor)]) + vendor
    opts += bytes([97, 17]) + uuid + b"\xff"
    return head + b"\x63\x82\x53\x63" + opts

def parse(data):
    options = dhcp_options(data)
    return {"xid": struct.unpack("!I", data[4:8])[0], "yiaddr": socket.inet_ntoa(data[16:20]),
            "siaddr": socket.inet_ntoa(data[20:24]), "file": data[108:236].split(b"\0")[0].decode(),
            "type": options.get(53, b"\0")[0], "opt43": options.get(43, b"").hex(),
            "opt60": options.get(60, b"").decode(), "opt97": options.get(97, b"").hex(),
            "server": socket.inet_ntoa(options.get(54, bytes(4)))}

def receive(sock, want):
    while True:
        data, _ = sock.recvfrom(2048)
        reply = parse(data)
        if reply["xid"] == xid and reply["type"] == want:
            return reply

bcast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
bcast.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
bcast.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface)
bcast.bind(("0.0.0.0", 68))
bcast.settimeout(timeout)
bcast.sendto(packet(1), ("255.255.255.255", 67))
offer = receive(bcast, 2)
unicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
unicast.settimeout(timeout)
unicast.sendto(packet(3), (offer["server"], 4011))
ack = receive(unicast, 5)
print(json.dumps({"offer": offer, "ack": ack}))
