"""A real `swarm up` for the client's tests: the example order flow on the project's Redis, with
memory in the project's PostgreSQL + pgvector and the embedding model.

It needs what `ops/test` provides: SWARM_BIN (the swarm binary), SWARM_UNIT_LIBS (the directory
of the built example unit libraries), SWARM_TEST_REDIS_URL, SWARM_TEST_DATABASE_URL, SWARM_PG_BIN
and SWARM_MODELS_DIR. A missing one fails the tests; they are never skipped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
ORDER_FLOW = ["order-validate", "order-price", "fulfil-express", "fulfil-standard"]


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the client's tests with ops/test", pytrace=False)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_database(url: str, pg_bin: str) -> str:
    """A database of its own on the server of `url` (ops/test drops swarm_test_* databases)."""
    name = f"swarm_test_pyclient_{secrets.token_hex(4)}"
    subprocess.run(
        [str(Path(pg_bin) / "psql"), url, "-qc", f"create database {name}"],
        check=True,
        capture_output=True,
    )
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def swarm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = need("SWARM_BIN")
    libs = Path(need("SWARM_UNIT_LIBS"))
    redis = need("SWARM_TEST_REDIS_URL")
    database = fresh_database(need("SWARM_TEST_DATABASE_URL"), need("SWARM_PG_BIN"))
    models = need("SWARM_MODELS_DIR")
    work = tmp_path_factory.mktemp("swarm")
    units = work / "units"
    units.mkdir(mode=0o700)
    for unit in ORDER_FLOW:
        lib = libs / f"lib{unit.replace('-', '_')}.so"
        shutil.copyfile(lib, units / f"{unit}.so")
        (units / f"{unit}.so").chmod(0o644)
    port = free_port()
    with open(work / "swarm.log", "wb") as log:
        yield from serve(binary, units, redis, database, models, work, port, log)


def serve(
    binary: str,
    units: Path,
    redis: str,
    database: str,
    models: str,
    work: Path,
    port: int,
    log: BinaryIO,
) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary,
            "up",
            "--units",
            str(units),
            "--no-watch",
            "--redis",
            redis,
            "--redis-prefix",
            f"pyclient-{secrets.token_hex(4)}",
            "--postgres",
            database,
            "--models",
            models,
            "--spool",
            str(work / "spool"),
            "--http",
            f"127.0.0.1:{port}",
            "--payload-schemas",
            str(ROOT / "examples/order-flow/schemas"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SWARM_")},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"swarm up exited: {(work / 'swarm.log').read_text()}", pytrace=False)
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("swarm up did not serve within 120 s", pytrace=False)
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def order(order_id: int) -> dict[str, object]:
    return {"id": order_id, "items": [{"sku": "tea", "qty": 1}]}
