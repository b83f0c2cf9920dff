"""Oakestra-rs from Python: a client of the root orchestrator's REST API, the SLA validator,
and the schedulers (``oakestra.sched``), all backed by the Rust crates.

    >>> import oakestra
    >>> client = oakestra.Client("http://127.0.0.1:10000", "Admin", "Admin")
    >>> app = client.create_application("examples/sla-clientsrvr-container.json")
    >>> for service_id in app["microservices"]:
    ...     client.deploy(service_id)
    ...     client.wait_for_status(service_id, "RUNNING", timeout=60)
"""

import os
from typing import Any

from . import sched
from ._native import Client, __version__, validate_sla
from .aio import AsyncClient
from .errors import (
    ApiError,
    AuthError,
    DeployFailed,
    InvalidSlaError,
    NoPlacementError,
    NotFoundError,
    OakestraError,
    TransportError,
    Violation,
    WaitTimeout,
)

#: A deployment descriptor: the parsed JSON (a dict), or the path of a JSON file.
Descriptor = dict[str, Any] | str | os.PathLike[str]

__all__ = [
    "Client",
    "AsyncClient",
    "validate_sla",
    "Descriptor",
    "sched",
    "Violation",
    "OakestraError",
    "ApiError",
    "AuthError",
    "NotFoundError",
    "InvalidSlaError",
    "TransportError",
    "WaitTimeout",
    "DeployFailed",
    "NoPlacementError",
    "__version__",
]
