"""Placement with Oakestra-rs's schedulers (the ``oakestra-sched`` crate), from Python.

* :class:`Candidate` (a worker, or a cluster with aggregated resources) and
  :class:`PlacementRequest` (one instance: CPU, memory, GPUs, virtualization, constraints) are
  built with keyword arguments or :meth:`~Candidate.from_dict`; their attributes are the
  fields of the JSON shape external schedulers exchange.
* :func:`place` (or :func:`first_fit`, :func:`best_fit`, :func:`least_loaded`, :func:`ldp`)
  places one instance; :func:`simulate` runs several schedulers over a list of requests.
* A scheduler can also be a Python function ``f(request, candidates)`` returning a candidate
  name (or a ``Candidate``, an index, a ``Placement``, ``None`` to decline); :func:`serve`
  makes it the external scheduler of a cluster started with
  ``--scheduler external:<url>``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ._native import (
    SCHEDULERS,
    Candidate,
    Failure,
    Placement,
    PlacementRequest,
    Simulation,
    cluster_of,
    place,
    simulate,
)
from ._native import external_answer as _external_answer
from ._native import parse_input as _parse_input
from .errors import NoPlacementError

#: A request as the functions take it: a PlacementRequest or its dict.
RequestLike = PlacementRequest | Mapping[str, Any]
#: A candidate as the functions take it: a Candidate or its dict.
CandidateLike = Candidate | Mapping[str, Any]
#: What a Python scheduler returns: a name, a Candidate, an index, a Placement, a dict, or None.
SchedulerAnswer = str | Candidate | int | Placement | Mapping[str, Any] | None
#: A Python scheduler: f(request, candidates) -> SchedulerAnswer.
SchedulerFunction = Callable[[PlacementRequest, list[Candidate]], SchedulerAnswer]

__all__ = [
    "Candidate",
    "PlacementRequest",
    "Placement",
    "Failure",
    "Simulation",
    "NoPlacementError",
    "SCHEDULERS",
    "RequestLike",
    "CandidateLike",
    "SchedulerAnswer",
    "SchedulerFunction",
    "place",
    "first_fit",
    "best_fit",
    "least_loaded",
    "ldp",
    "simulate",
    "cluster_of",
    "serve",
    "SchedulerServer",
    "Call",
]


def first_fit(request: Any, candidates: Any) -> Placement:
    """The first feasible candidate in list order."""
    return place(request, candidates, "first_fit")


def best_fit(request: Any, candidates: Any) -> Placement:
    """The feasible candidate left with the least free CPU + memory (packs instances)."""
    return place(request, candidates, "best_fit")


def least_loaded(request: Any, candidates: Any) -> Placement:
    """The feasible candidate with the lowest CPU load, then the most free memory."""
    return place(request, candidates, "least_loaded")


def ldp(request: Any, candidates: Any) -> Placement:
    """Latency- and distance-aware placement (lowest expected RTT, then distance, then best fit)."""
    return place(request, candidates, "ldp")


class Call(NamedTuple):
    """One request an external scheduler served."""

    #: What the cluster asked to place.
    request: PlacementRequest
    #: The workers it offered.
    candidates: list[Candidate]
    #: The JSON answer sent back (``{"candidate": …}`` or ``{"status": …, "detail": …}``).
    answer: dict[str, Any]
    #: The HTTP status sent back (200, or 500 when the function raised).
    http_status: int


class SchedulerServer:
    """A running external scheduler (see :func:`serve`). Use as a context manager or call
    :meth:`stop`."""

    def __init__(self, fn: SchedulerFunction, host: str, port: int, path: str) -> None:
        self.fn = fn
        self.path = path
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != server.path:
                    self._send(404, {"status": "NO_WORKER_CAPACITY",
                                     "detail": f"no scheduler at {self.path}; use {server.path}"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                code, text, _placement = _external_answer(server.fn, body)
                if code != 400:
                    request, candidates = _parse_input(body)
                    with server._lock:
                        server.calls.append(Call(request, candidates, json.loads(text), code))
                self._send_text(code, text)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"scheduler": getattr(server.fn, "__name__", "python"),
                                 "calls": len(server.calls)})

            def _send(self, code: int, answer: dict[str, Any]) -> None:
                self._send_text(code, json.dumps(answer))

            def _send_text(self, code: int, text: str) -> None:
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        # One request at a time: the function need not be thread-safe.
        self._server = HTTPServer((host, port), Handler)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"oakestra-scheduler-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Where the cluster should POST, e.g. ``http://127.0.0.1:9000/place``."""
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def flag(self) -> str:
        """The cluster's ``--scheduler`` value: ``external:<url>``."""
        return f"external:{self.url}"

    def stop(self) -> None:
        """Stops serving and frees the port (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> SchedulerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", "python")
        return f"SchedulerServer({name}, url={self.url!r}, calls={len(self.calls)})"


def serve(
    fn: SchedulerFunction,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    path: str = "/place",
) -> SchedulerServer:
    """Serves ``fn(request, candidates)`` as an external scheduler over HTTP, in a background
    thread, and returns at once.

    A cluster started with ``--scheduler external:<server.url>`` (``oakestra-cluster`` or
    ``oak up``) POSTs ``{"request": …, "candidates": […]}`` for every placement; ``fn`` gets a
    :class:`PlacementRequest` and a list of :class:`Candidate` and returns the chosen
    candidate's name (or a ``Candidate``, an index, a ``Placement``), or ``None`` to decline;
    raising :class:`NoPlacementError` declines with its status. ``port=0`` picks a free port
    (see ``server.port``). Every exchange is recorded in ``server.calls``.
    """
    if not callable(fn):
        raise TypeError(f"serve needs a function f(request, candidates), not {type(fn).__name__}")
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/'")
    return SchedulerServer(fn, host, port, path)
