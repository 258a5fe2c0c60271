"""The registration benchmark's baseline: the least a signed registration can cost here.

A bare Starlette route on uvicorn, served as ``idlegrid server`` serves
(``server/serve.uvicorn_config``), that does what every registration must: read the
body, verify the device's Ed25519 signature over the same signing message, parse the
JSON, insert one row and commit it, and answer 201 with a small JSON body. No
middleware, no replay cache, no rate limit, no proof scheduling, no second table. On
SQLite (WAL, the same pragmas' spirit) each request commits on its own, on the event
loop; on PostgreSQL through one psycopg connection in autocommit.

    python benchmarks/bare_register.py PORT NETWORK (sqlite:///PATH | postgresql://…)
"""

from __future__ import annotations

import json
import sqlite3
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idlegrid.core import signing
from idlegrid.server.serve import uvicorn_config

TABLE = "CREATE TABLE IF NOT EXISTS bare_devices (id TEXT PRIMARY KEY, body TEXT NOT NULL)"


def app_for(network: str, database_url: str) -> Starlette:
    execute = _database(database_url)

    async def register(request: Request) -> Response:
        body = await request.body()
        headers = request.headers
        device_id = headers.get(signing.HEADER_KEY, "")
        message = signing.signing_message(
            network,
            "POST",
            request.url.path,
            body,
            headers.get(signing.HEADER_TIMESTAMP, ""),
            headers.get(signing.HEADER_NONCE, ""),
        )
        if not signing.verify_signature(
            device_id, headers.get(signing.HEADER_SIGNATURE, ""), message
        ):
            return Response(b'{"code":"bad_signature"}', 401, media_type="application/json")
        fields = json.loads(body)
        execute(device_id, json.dumps(fields))
        answer = json.dumps({"id": device_id, "name": fields.get("name")})
        return Response(answer, 201, media_type="application/json")

    async def health(_: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/devices", register, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def _database(url: str) -> Any:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(TABLE)

        def insert_sqlite(device_id: str, body: str) -> None:
            conn.execute("INSERT INTO bare_devices VALUES (?, ?)", (device_id, body))

        return insert_sqlite
    import psycopg

    pg = psycopg.connect(url, autocommit=True)
    pg.execute("DROP TABLE IF EXISTS bare_devices")
    pg.execute(TABLE)

    def insert_pg(device_id: str, body: str) -> None:
        pg.execute("INSERT INTO bare_devices VALUES (%s, %s)", (device_id, body))

    return insert_pg


def main() -> None:
    import uvicorn

    port, network, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvicorn.Server(uvicorn_config(app_for(network, url), "127.0.0.1", port)).run()


if __name__ == "__main__":
    main()
