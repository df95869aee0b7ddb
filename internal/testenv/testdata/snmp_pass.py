#!/usr/bin/env python3
"""A net-snmp pass_persist handler for megawatch's tests (stdlib only).

usage (in snmpd.conf): pass_persist .1.3.6.1.4.1 /path/snmp_pass.py /path/values.json

values.json maps numeric OIDs (leading dot) to [type, value], with type one
of net-snmp's pass types (integer, gauge, counter, timeticks, ipaddress,
objectid, octet, string). It is re-read on every request, so the test sets
values by replacing the file (write + rename).
"""
import json
import sys


def key(oid):
    return tuple(int(p) for p in oid.strip(".").split(".") if p)


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return {k: v for k, v in json.load(f).items()}
    except (OSError, ValueError):
        return {}


def main():
    path = sys.argv[1]
    out = sys.stdout
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "PING":
            out.write("PONG\n")
        elif cmd in ("get", "getnext"):
            oid = sys.stdin.readline().strip()
            values = load(path)
            if cmd == "get":
                hit = oid if oid in values else None
            else:
                after = sorted((k for k in values if key(k) > key(oid)), key=key)
                hit = after[0] if after else None
            if hit is None:
                out.write("NONE\n")
            else:
                typ, val = values[hit]
                out.write(f"{hit}\n{typ}\n{val}\n")
        elif cmd == "set":
            sys.stdin.readline()
            sys.stdin.readline()
            out.write("not-writable\n")
        elif cmd == "":
            continue
        else:
            out.write("NONE\n")
        out.flush()


if __name__ == "__main__":
    main()
