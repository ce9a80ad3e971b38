#!/usr/bin/env python3
"""A scripted Raspberry Pi 5 EEPROM bootloader, DHCP part: DISCOVER with the Pi's vendor class, arch 0
and option 97 = RPi5 + board revision + MAC low bytes + serial; prints the OFFER as JSON, then
REQUEST/ACK. Runs inside a test network namespace (broadcast to 255.255.255.255:67 from port 68).
usage: dhcp_pi5_client.py MAC SERIAL_HEX [TIMEOUT_S]"""
import json, os, socket, struct, sys

mac = bytes.fromhex(sys.argv[1].replace(":", ""))
serial = bytes.fromhex(sys.argv[2])
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 5
xid = int.from_bytes(os.urandom(4), "big")

def packet(msg_type, extra=b""):
    head = struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, xid, 0, 0x8000, 0, 0, 0, 0) + mac + bytes(10) + bytes(192)
    opt97 = b"RPi5" + bytes([0, 0xd0, 0x40, 0x17]) + mac[2:] + serial
    vendor = b"PXEClient:Arch:00000:UNDI:002001"
    opts = bytes([53, 1, msg_type, 93, 2, 0, 0, 94, 3, 1, 2, 1, 60, len(vendor)]) + vendor
    opts += bytes([97, len(opt97)]) + opt97 + bytes([55, 4, 1, 3, 43, 66]) + extra + b"\xff"
    return head + b"\x63\x82\x53\x63" + opts

def parse(data):
    options, i = {}, 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1; continue
        options[data[i]] = data[i + 2:i + 2 + data[i + 1]]; i += 2 + data[i + 1]
    return {"xid": struct.unpack("!I", data[4:8])[0], "yiaddr": socket.inet_ntoa(data[16:20]),
            "siaddr": socket.inet_ntoa(data[20:24]), "file": data[108:236].split(b"\0")[0].decode(),
            "type": options.get(53, b"\0")[0], "opt43": options.get(43, b"").hex(),
            "opt66": options.get(66, b"").decode(), "opt60": options.get(60, b"").decode(),
            "opt97": options.get(97, b"").hex(), "server": socket.inet_ntoa(options.get(54, bytes(4)))}

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")  # 255.255.255.255 has no route otherwise
sock.bind(("0.0.0.0", 68))
sock.settimeout(timeout)

def exchange(msg_type, want, extra=b""):
    sock.sendto(packet(msg_type, extra), ("255.255.255.255", 67))
    while True:
        data, _ = sock.recvfrom(2048)
        reply = parse(data)
        if reply["xid"] == xid and reply["type"] == want:
            return reply

offer = exchange(1, 2)
ack = exchange(3, 5, bytes([50, 4]) + socket.inet_aton(offer["yiaddr"]) + bytes([54, 4]) + socket.inet_aton(offer["server"]))
print(json.dumps({"offer": offer, "ack": ack}))
