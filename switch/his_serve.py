"""The HIS API on a port of its own (specs/his-api.yaml, "Serving"): with ``[his] port`` set, the
daemon serves the hospital API there — only ``/his/...``, not ``/metrics`` or the health
checks, which stay on the ``[http]`` port — and, with ``tls_cert`` and ``tls_key`` (PEM), over
TLS only (1.2 at least). The port keeps the ``[http]`` connection and time limits
(`switch.http_server`). Without ``[his] port`` (the demo), the API is mounted on the ``[http]``
port as before."""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass

from aiohttp import web

from switch.config import Config
from switch.his_api import HisDeps, mount_his_app
from switch.his_observe import his_observer
from switch.http_server import GuardedSite, HttpGuard, HttpLimits

log = logging.getLogger("medswitch.his")


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for the HIS port: TLS 1.2 or later, the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass(frozen=True, slots=True)
class HisSite:
    runner: web.AppRunner
    port: int  # the bound port
    tls: bool


async def start_his_site(his: HisDeps, limits: HttpLimits, config: Config) -> HisSite:
    """Serve the HIS application alone on ``[http] host`` and ``[his] port``; stop it with
    ``site.runner.cleanup()``."""
    settings = config.his
    assert settings.port is not None
    tls = tls_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
    guard = HttpGuard(limits)
    middlewares = [his_observer(his.metrics), guard.middleware]  # counted, timed and logged
    app = web.Application(middlewares=middlewares, client_max_size=limits.body_bytes_max)
    mount_his_app(app, his)
    drain_s = config.http.drain_timeout_s
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=drain_s)
    await runner.setup()
    try:
        address = (config.http.host, settings.port)
        sock = socket.create_server(address, backlog=128, reuse_port=config.workers > 1)
        port = sock.getsockname()[1]
        await GuardedSite(runner, sock, guard, ssl_context=tls).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("HIS API on %s:%d (%s)", config.http.host, port, "TLS" if tls else "plain HTTP")
    return HisSite(runner, port, tls is not None)
