"""Who the DICOM node talks to and what it trusts: peers (``AE@host:port``), routes, the allowlist, UIDs.

Everything here is parsed and checked once, when the node starts (a bad value is one line naming the
option), and every UID is checked against the DICOM UID grammar before it becomes part of a path.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SegError

# PS3.5 9.1: numeric components separated by dots, no leading zeros, at most 64 characters.
UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
AE_PATTERN = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # default character repertoire, no backslash
ROUTE_KEYS = ("Modality", "SeriesDescription", "BodyPartExamined", "ProtocolName", "Manufacturer", "StationName")
LOOPBACK = ("127.0.0.0/8", "::1/128")


class NodeError(SegError, ValueError):
    """A node setting that cannot be used (the message names the option and the value)."""


def valid_uid(value: Any) -> bool:
    """Whether ``value`` is a DICOM UID (and so safe as a path component)."""
    text = str(value or "")
    return len(text) <= 64 and UID_PATTERN.fullmatch(text) is not None


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity on the network."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str, option: str = "--send-to") -> Peer:
    """``AE@host:port`` (an IPv6 host in brackets: ``AE@[::1]:104``)."""
    match = re.fullmatch(r"(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})", text.strip())
    if match is None or not AE_PATTERN.fullmatch(match["ae"].strip()):
        raise NodeError(f"{option}: expected AE@host:port (AE title of 1-16 characters), got {text!r}")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise NodeError(f"{option}: port {port} out of range in {text!r}")
    return Peer(match["ae"].strip(), match["host"].strip("[]"), port)


@dataclass(frozen=True)
class Route:
    """Series whose header matches every filter (shell patterns, case-insensitive) go to ``bundle``."""

    filters: tuple[tuple[str, str], ...]
    bundle: Path

    def matches(self, header: Mapping[str, Any]) -> bool:
        return all(fnmatch.fnmatchcase(str(header.get(key) or "").upper(), pattern.upper())
                   for key, pattern in self.filters)

    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.filters) or "*"


def parse_route(text: str) -> Route:
    """``Key=Pattern[,Key=Pattern...]:BUNDLE_DIR``, e.g. ``Modality=MR:brain_bundle``."""
    spec, sep, bundle = text.partition(":")
    if not sep or not bundle:
        raise NodeError(f"--route: expected FILTER:BUNDLE_DIR like Modality=MR:brain_bundle, got {text!r}")
    filters = []
    for item in spec.split(","):
        key, eq, pattern = item.partition("=")
        if not eq or key.strip() not in ROUTE_KEYS or not pattern.strip():
            raise NodeError(f"--route {text!r}: {item!r} is not KEY=PATTERN with KEY one of {', '.join(ROUTE_KEYS)}")
        filters.append((key.strip(), pattern.strip()))
    return Route(tuple(filters), Path(bundle))


def choose_route(routes: Sequence[Route], header: Mapping[str, Any]) -> Route | None:
    """The first route whose filters match the series (routes without filters match everything)."""
    return next((route for route in routes if route.matches(header)), None)


@dataclass(frozen=True)
class Allowlist:
    """Calling AE titles and networks the node accepts associations from.

    Attributes:
        ae_titles: Accepted calling AE titles; empty: any.
        networks: Accepted peer networks; by default loopback only.
    """

    ae_titles: frozenset[str] = frozenset()
    networks: tuple[Any, ...] = field(default_factory=lambda: tuple(ipaddress.ip_network(n) for n in LOOPBACK))

    @classmethod
    def parse(cls, ae_titles: Iterable[str] = (), networks: Iterable[str] = ()) -> Allowlist:
        titles = frozenset(t.strip() for t in ae_titles)
        for title in titles:
            if not AE_PATTERN.fullmatch(title):
                raise NodeError(f"--allow-ae: not an AE title: {title!r}")
        try:
            parsed = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)
        except ValueError as exc:
            raise NodeError(f"--allow-from: {exc}") from None
        return cls(titles, parsed) if parsed else cls(titles)

    def refusal(self, ae_title: str, address: str) -> str | None:
        """Why an association from ``ae_title`` at ``address`` is refused (None: accepted)."""
        if self.ae_titles and ae_title.strip() not in self.ae_titles:
            return f"calling AE title {ae_title.strip()!r} is not on the allowlist"
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return f"address {address!r} is not an IP address"
        if not any(ip in network for network in self.networks):
            return f"address {address} is not on the allowlist"
        return None
