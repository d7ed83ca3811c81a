"""Run the server as a process: listen at once (the model loads behind /health's 503), stop on SIGTERM/SIGINT
after draining, exit 1 when the model fails to load (so a supervisor restarts it or shows why)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from aiohttp import web

from backend.api.context import SERVER, Server
from backend.app import create_app, ssl_context
from backend.config import Config

log = logging.getLogger("ai00")

SHUTDOWN_TIMEOUT_S = 10.0  # after the drain: how long handlers get to write the last events of cut streams


async def serve(config: Config) -> int:
    app = create_app(config)
    server = app[SERVER]
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()  # starts the engine thread; the model loads while we already answer
    listen = config.listen
    await web.TCPSite(runner, listen.ip, listen.port, ssl_context=ssl_context(config)).start()
    log.info("listening on %s://%s:%d; the model is loading (GET /health: 503 until ready)",
             "https" if listen.tls else "http", listen.ip, runner.addresses[0][1])  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await first_of(stop.wait(), failed(server))
    code = 1 if server.readiness.status == "failed" else 0
    if code == 0:
        stop.clear()  # a second signal cuts the drain short
        await drain(server, listen.drain_timeout, stop)
    await runner.cleanup()  # cuts what still runs (Done `cancelled`), closes sockets, stops the engine thread
    return code


async def failed(server: Server) -> None:
    """Returns only if the model fails to load."""
    await server.readiness.settled.wait()
    if server.readiness.status != "failed":
        await asyncio.Event().wait()


async def drain(server: Server, timeout: float, again: asyncio.Event) -> None:
    """Refuse new generations (503) and give the running and queued ones up to `timeout` seconds to end."""
    scheduler = server.pool or server.scheduler  # every model's engines
    server.readiness.drain()
    scheduler.drain()
    busy = scheduler.busy
    log.warning("draining: %d generation(s) running or queued may finish within %.0f s; new ones get 503",
                busy, timeout)  # fmt: skip
    deadline = time.monotonic() + timeout
    while scheduler.busy and time.monotonic() < deadline and not again.is_set():
        await first_of(again.wait(), asyncio.sleep(0.05))
    if scheduler.busy:
        log.warning("drain: cutting %d generation(s) still running", scheduler.busy)
    else:
        log.info("drain: every generation finished")


async def first_of(*aws) -> None:
    """Wait until the first of `aws` ends; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
