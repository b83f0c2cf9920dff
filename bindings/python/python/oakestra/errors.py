"""Exceptions of the oakestra package, and the SLA ``Violation`` record.

Every exception derives from :class:`OakestraError`. Errors the root orchestrator answers carry
its HTTP ``status`` and its ``message``::

    OakestraError
    ├── ApiError            (status, message, method, path, violations)
    │   ├── AuthError       401 / 403
    │   ├── NotFoundError   404
    │   └── InvalidSlaError the descriptor broke rules; .violations lists them
    ├── TransportError      the root is unreachable (also a ConnectionError)
    ├── WaitTimeout         wait_for_status ran out of time (also a TimeoutError)
    ├── DeployFailed        an instance reached a status listed in fail_on
    └── NoPlacementError    a scheduler found no candidate (status, detail)
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "OakestraError",
    "ApiError",
    "AuthError",
    "NotFoundError",
    "InvalidSlaError",
    "TransportError",
    "WaitTimeout",
    "DeployFailed",
    "NoPlacementError",
    "Violation",
]


class Violation(NamedTuple):
    """One broken SLA rule: ``path`` is a JSON pointer (``""`` for the whole document)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"


class OakestraError(Exception):
    """Base class of every error raised by the oakestra package."""


class ApiError(OakestraError):
    """The root orchestrator answered with an error status.

    ``str(error)`` reads ``"POST /api/application: 422: <server message>"``; the parts are
    attributes.
    """

    def __init__(
        self,
        text: str,
        *,
        status: int,
        server_message: str,
        method: str = "",
        path: str = "",
        violations: list[Violation] | tuple[Violation, ...] = (),
    ) -> None:
        super().__init__(text)
        self.status = status
        #: The root's own message.
        self.message = server_message
        self.method = method
        self.path = path
        self.violations = list(violations)

    def __reduce__(self) -> Any:
        kwargs = {
            "status": self.status,
            "server_message": self.message,
            "method": self.method,
            "path": self.path,
            "violations": self.violations,
        }
        return (_rebuild, (type(self), str(self), kwargs))


def _rebuild(cls: type, text: str, kwargs: dict[str, Any]) -> Any:
    return cls(text, **kwargs)


class AuthError(ApiError):
    """Login failed, or the account may not do this (HTTP 401 or 403)."""


class NotFoundError(ApiError):
    """The application, service or instance does not exist or is not the caller's (404)."""


class InvalidSlaError(ApiError):
    """The descriptor was refused; ``violations`` lists every broken rule with its path."""


class TransportError(OakestraError, ConnectionError):
    """The root orchestrator could not be reached."""


class WaitTimeout(OakestraError, TimeoutError):
    """``Client.wait_for_status`` gave up; the message names each instance's last status."""

    def __init__(
        self,
        text: str,
        *,
        service_id: str = "",
        status: str = "",
        service: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(text)
        self.service_id = service_id
        #: The status that was awaited.
        self.status = status
        #: The service as last seen.
        self.service = service


class DeployFailed(OakestraError):
    """An instance reached one of the statuses ``wait_for_status`` was told to fail on."""

    def __init__(
        self,
        text: str,
        *,
        service_id: str = "",
        instance: int = 0,
        status: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(text)
        self.service_id = service_id
        self.instance = instance
        self.status = status
        self.detail = detail


class NoPlacementError(OakestraError):
    """No candidate fits. ``status`` is Oakestra's negative scheduling status
    (``NO_WORKER_CAPACITY``, ``NO_QUALIFIED_WORKER_FOUND``, ``NoActiveClusterWithCapacity``, …),
    ``detail`` says which constraint excluded how many candidates.

    A Python scheduler function may raise it to decline with a specific status.
    """

    def __init__(self, status: str = "NO_WORKER_CAPACITY", detail: str = "") -> None:
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status
        self.detail = detail

    def __reduce__(self) -> Any:
        return (type(self), (self.status, self.detail))
