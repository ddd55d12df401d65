#!/usr/bin/env python3
"""A central system built on a third-party OCPP stack, to run ocpp-bench against something other
than ocpp-css: The Mobility House's `ocpp` library (PyPI `ocpp`, which validates every message
against the OCA schemas) over `websockets`. It accepts any station at ws://HOST:PORT/{id} (no
authentication), speaks 1.6 and 2.0.1, accepts every boot, id tag and transaction, and keeps
nothing: a stand-in for "another CSMS", not a product.

    pip install ocpp websockets
    bench/scripts/thirdparty_csms.py [--port 9000]
"""

import argparse
import asyncio
import itertools
import logging
from datetime import datetime, timezone

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call_result as r16
from ocpp.v16.enums import Action as A16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call_result as r201
from ocpp.v201.enums import Action as A201

TRANSACTION_IDS = itertools.count(1)


def now():
    return datetime.now(timezone.utc).isoformat()


class Station16(Cp16):
    @on(A16.boot_notification)
    async def boot(self, **_):
        return r16.BootNotification(current_time=now(), interval=300, status="Accepted")

    @on(A16.heartbeat)
    async def heartbeat(self, **_):
        return r16.Heartbeat(current_time=now())

    @on(A16.status_notification)
    async def status(self, **_):
        return r16.StatusNotification()

    @on(A16.authorize)
    async def authorize(self, **_):
        return r16.Authorize(id_tag_info={"status": "Accepted"})

    @on(A16.start_transaction)
    async def start(self, **_):
        return r16.StartTransaction(transaction_id=next(TRANSACTION_IDS), id_tag_info={"status": "Accepted"})

    @on(A16.meter_values)
    async def meter_values(self, **_):
        return r16.MeterValues()

    @on(A16.stop_transaction)
    async def stop(self, **_):
        return r16.StopTransaction(id_tag_info={"status": "Accepted"})


class Station201(Cp201):
    @on(A201.boot_notification)
    async def boot(self, **_):
        return r201.BootNotification(current_time=now(), interval=300, status="Accepted")

    @on(A201.heartbeat)
    async def heartbeat(self, **_):
        return r201.Heartbeat(current_time=now())

    @on(A201.status_notification)
    async def status(self, **_):
        return r201.StatusNotification()

    @on(A201.authorize)
    async def authorize(self, **_):
        return r201.Authorize(id_token_info={"status": "Accepted"})

    @on(A201.transaction_event)
    async def transaction_event(self, **_):
        return r201.TransactionEvent(id_token_info={"status": "Accepted"})


async def station(connection):
    station_id = connection.request.path.strip("/").split("/")[-1]
    protocol = connection.subprotocol
    cp = (Station201 if protocol == "ocpp2.0.1" else Station16)(station_id, connection)
    try:
        await cp.start()
    except websockets.exceptions.ConnectionClosed:
        pass


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    async with websockets.serve(station, args.host, args.port, subprotocols=["ocpp1.6", "ocpp2.0.1"]):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
