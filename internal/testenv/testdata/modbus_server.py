#!/usr/bin/python3
"""A Modbus TCP server for megawatch's tests, on Debian's python3-pymodbus (3.0).

usage: modbus_server.py HOST PORT REGISTERS.json

REGISTERS.json is {"holding": {"<address>": <u16>, ...}, "input": {...}},
0-based protocol addresses. It is re-read on every request, so the test sets
values by replacing the file (write + rename). Addresses not in the map are
answered with the Modbus exception "illegal data address".
"""
import json
import logging
import sys

from pymodbus.datastore import ModbusServerContext, ModbusSlaveContext
from pymodbus.datastore.store import BaseModbusDataBlock
from pymodbus.server import StartTcpServer


class FileBlock(BaseModbusDataBlock):
    """Registers read from the JSON file at each request."""

    def __init__(self, path, table):
        self.path, self.table = path, table
        self.default_value = 0
        self.values = {}
        self.address = 0

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                return {int(k): int(v) & 0xFFFF for k, v in json.load(f).get(self.table, {}).items()}
        except (OSError, ValueError):
            return {}

    def validate(self, address, count=1):
        regs = self._load()
        return all(a in regs for a in range(address, address + count))

    def getValues(self, address, count=1):  # pylint: disable=invalid-name
        regs = self._load()
        return [regs.get(a, 0) for a in range(address, address + count)]

    def setValues(self, address, values):  # pylint: disable=invalid-name
        pass


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    logging.basicConfig(level=logging.WARNING)
    slave = ModbusSlaveContext(hr=FileBlock(path, "holding"), ir=FileBlock(path, "input"), zero_mode=True)
    context = ModbusServerContext(slaves=slave, single=True)
    print(f"modbus test server on {host}:{port}", flush=True)
    StartTcpServer(context=context, address=(host, port))


if __name__ == "__main__":
    main()
