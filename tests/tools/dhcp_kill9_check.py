#!/usr/bin/env python3
"""Checks the events of tests/tools/dhcp_dora_loop.py against the lease files of a kill -9 test.
usage: dhcp_kill9_check.py EVENTS FINAL_LEASE_FILE [SNAPSHOT KILLED_AT]...
Each SNAPSHOT is the lease file as a killed server left it, copied after the process was reaped and
before the next one started; KILLED_AT is the time (time.time()) taken once it was reaped. Every ACK
received before KILLED_AT was sent by a server that is dead by then: it must be in that file (the
client's last ACK before then, with its address). On the events as a whole: no address ACKed to two
MACs, no MAC ACKed two addresses, no renewal of a held lease refused, every released client given its
address back; in the final file no address held by two clients and none the subnet's network or
broadcast address. Prints one line per failure and exits 1 if there is any."""
import sys


def lease_state(path):
    """The file's final state as the server reads it: the last line per client, 0.0.0.0 removing it,
    a last line without its newline (torn by the kill) left out."""
    with open(path) as f:
        text = f.read()
    whole = text[:text.rfind("\n") + 1]
    state = {}
    for line in whole.splitlines():
        if not line or line.startswith("#"):
            continue
        client, address, expires = line.split()
        if address == "0.0.0.0":
            state.pop(client, None)
        else:
            state[client] = (address, int(expires))
    return state


events = [line.split() for line in open(sys.argv[1]) if line.strip()]
failures = []
acks = [(e[1], e[2], float(e[3])) for e in events if e[0] == "ACK"]
pairs = sys.argv[3:]
checked = 0
for i in range(0, len(pairs), 2):
    snapshot, killed_at = pairs[i], float(pairs[i + 1])
    state = lease_state(snapshot)
    last = {}
    for mac, address, when in acks:
        if when < killed_at:
            last[mac] = address
    for mac, address in sorted(last.items()):
        checked += 1
        held = state.get(mac)
        if held is None or held[0] != address:
            failures.append("kill %d: %s was ACKed %s before the kill, the file the killed server left has %s"
                            % (i // 2 + 1, mac, address, held[0] if held else "no lease"))
by_address, by_mac = {}, {}
for mac, address, _ in acks:
    by_address.setdefault(address, set()).add(mac)
    by_mac.setdefault(mac, set()).add(address)
for address, macs in sorted(by_address.items()):
    if len(macs) > 1:
        failures.append("address %s ACKed to %d MACs: %s" % (address, len(macs), " ".join(sorted(macs))))
for mac, addresses in sorted(by_mac.items()):
    if len(addresses) > 1:
        failures.append("MAC %s ACKed %d addresses: %s" % (mac, len(addresses), " ".join(sorted(addresses))))
for e in events:
    if e[0] == "NAK":
        failures.append("renewal of %s by %s refused (NAK): the server lost or gave away a lease it had ACKed" % (e[2], e[1]))
    if e[0] == "RETURN" and e[2] != e[3]:
        failures.append("%s released %s and was then given %s, though its address was free" % (e[1], e[2], e[3]))
final = lease_state(sys.argv[2])
holders = {}
for client, (address, _) in final.items():
    holders.setdefault(address, []).append(client)
    if address.endswith(".0") or address.endswith(".255"):
        failures.append("final file: %s holds %s, the /24's network or broadcast address" % (client, address))
for address, clients in sorted(holders.items()):
    if len(clients) > 1:
        failures.append("final file: %s held by %s" % (address, " ".join(clients)))
for mac, address, _ in acks:
    if final.get(mac, (None,))[0] != address:
        failures.append("final file: %s was ACKed %s, the file has %s" % (mac, address, final.get(mac, ("nothing",))[0]))
        break
for failure in failures:
    print(failure)
print("checked %d ACKed leases against %d kill snapshots, %d events" % (checked, len(pairs) // 2, len(events)))
sys.exit(1 if failures else 0)
