"""A framed listener's settings, and how a section of the configuration gives them
(``[terminal]``, ``[bank]`` and each ``[[bank.links]]`` share the names; design and meaning in
:mod:`switch.listener` and README's configuration part)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from messages.framing import LengthFormat, Measure


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    host: str
    port: int
    length_format: LengthFormat
    frame_bytes_max: int = 8192
    connections_max: int = 2000
    idle_timeout_s: float = 300.0
    read_timeout_s: float = 30.0  # a frame complete within this of its first byte
    reuse_port: bool = False
    connections_per_address_max: int = 200
    in_flight_max: int = 32  # requests being handled for one connection
    write_buffer_bytes_max: int = 65_536  # replies unsent before reading pauses
    drain_timeout_s: float = 10.0  # at stop: the longest wait for replies to go out
    backlog: int = 1024
    allowed_addresses: tuple[str, ...] = ()  # peers' IP addresses; empty: any
    measure: Measure | None = None  # where a message ends, when frames have no length header


class ListenLimits(Protocol):
    """What a listener's section of the configuration says (``[terminal]``, ``[bank]``)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def frame_bytes_max(self) -> int: ...
    @property
    def connections_max(self) -> int: ...
    @property
    def connections_per_address_max(self) -> int: ...
    @property
    def idle_timeout_s(self) -> float: ...
    @property
    def read_timeout_s(self) -> float: ...
    @property
    def in_flight_max(self) -> int: ...
    @property
    def write_buffer_bytes_max(self) -> int: ...
    @property
    def drain_timeout_s(self) -> float: ...


def listener_settings(
    limits: ListenLimits,
    length_format: LengthFormat,
    *,
    reuse_port: bool = False,
    allowed_addresses: tuple[str, ...] = (),
    measure: Measure | None = None,
) -> ListenerSettings:
    """The settings of a listener configured by ``limits``."""
    return ListenerSettings(
        host=limits.host,
        port=limits.port,
        length_format=length_format,
        frame_bytes_max=limits.frame_bytes_max,
        connections_max=limits.connections_max,
        idle_timeout_s=limits.idle_timeout_s,
        read_timeout_s=limits.read_timeout_s,
        reuse_port=reuse_port,
        connections_per_address_max=limits.connections_per_address_max,
        in_flight_max=limits.in_flight_max,
        write_buffer_bytes_max=limits.write_buffer_bytes_max,
        drain_timeout_s=limits.drain_timeout_s,
        allowed_addresses=allowed_addresses,
        measure=measure,
    )
