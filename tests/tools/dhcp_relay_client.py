#!/usr/bin/env python3
"""A DHCP relay agent with a client behind it, in one process: binds RELAY_ADDRESS:67 (as a relay
does) and unicasts to the server a DISCOVER and then a REQUEST for MAC with giaddr = RELAY_ADDRESS,
hops 1, reading the OFFER and ACK that come back to the relay. Prints both as JSON. With --giaddr X
the packets carry X instead (a relay for a subnet the server may not serve); --expect-silence makes
silence within TIMEOUT_S the success and any reply a failure. Runs inside a test network namespace.
usage: dhcp_relay_client.py RELAY_ADDRESS SERVER MAC [TIMEOUT_S] [--giaddr X] [--expect-silence]"""
import json, os, socket, struct, sys
from dhcp_wire import dhcp_options

args = sys.argv[1:]
silence = "--expect-silence" in args
if silence:
    args.remove("--expect-silence")
giaddr = None
if "--giaddr" in args:
    at = args.index("--giaddr")
    giaddr = args[at + 1]
    del args[at:at + 2]
relay, server, mac = args[0], args[1], bytes.fromhex(args[2].replace(":", ""))
timeout = float(args[3]) if len(args) > 3 else 5
giaddr = giaddr or relay
xid = int.from_bytes(os.urandom(4), "big")

def packet(msg_type, extra=b""):
    head = struct.pack("!BBBBIHH", 1, 1, 6, 1, xid, 0, 0) + bytes(12) + socket.inet_aton(giaddr) + mac + bytes(10) + bytes(192)
    return head + b"\x63\x82\x53\x63" + bytes([53, 1, msg_type, 55, 4, 1, 3, 6, 51]) + extra + b"\xff"

def parse(data):
    options = dhcp_options(data)
    ip = lambda code: socket.inet_ntoa(options[code][:4]) if code in options else None
    return {"xid": struct.unpack("!I", data[4:8])[0], "yiaddr": socket.inet_ntoa(data[16:20]),
            "giaddr": socket.inet_ntoa(data[24:28]), "type": options.get(53, b"\0")[0], "netmask": ip(1),
            "router": ip(3), "dns": ip(6), "server": ip(54),
            "lease": struct.unpack("!I", options[51])[0] if 51 in options else None}

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((relay, 67))
sock.settimeout(timeout)

def exchange(msg_type, want, extra=b""):
    sock.sendto(packet(msg_type, extra), (server, 67))
    while True:
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            if silence:
                print(json.dumps({"silence": True}))
                sys.exit(0)
            raise SystemExit("no reply of type %d within %s s" % (want, timeout))
        reply = parse(data)
        if reply["xid"] == xid:
            if silence:
                raise SystemExit("expected no reply, got %s" % json.dumps(reply))
            if reply["type"] == want:
                return reply

offer = exchange(1, 2)
ack = exchange(3, 5, bytes([50, 4]) + socket.inet_aton(offer["yiaddr"]) + bytes([54, 4]) + socket.inet_aton(offer["server"]))
print(json.dumps({"offer": offer, "ack": ack}))
