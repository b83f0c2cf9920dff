# Type stubs of the oakestra package (the native Client and validate_sla live in _native).
import os
from collections.abc import Iterator, Sequence
from typing import Any, overload

from . import sched as sched
from .aio import AsyncClient as AsyncClient
from .errors import ApiError as ApiError
from .errors import AuthError as AuthError
from .errors import DeployFailed as DeployFailed
from .errors import InvalidSlaError as InvalidSlaError
from .errors import NoPlacementError as NoPlacementError
from .errors import NotFoundError as NotFoundError
from .errors import OakestraError as OakestraError
from .errors import TransportError as TransportError
from .errors import Violation as Violation
from .errors import WaitTimeout as WaitTimeout

__version__: str

#: A deployment descriptor: the parsed JSON (a dict), or the path of a JSON file.
Descriptor = dict[str, Any] | str | os.PathLike[str]

def validate_sla(sla: Descriptor) -> list[Violation]:
    """Every violation of an SLA (deployment descriptor), empty when it is valid."""

class Client:
    """A logged-in connection to a root orchestrator. Every call blocks with the GIL released."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:10000",
        username: str = "Admin",
        password: str = "Admin",
        *,
        organization: str | None = None,
    ) -> None:
        """Connects and logs in; raises AuthError on bad credentials, TransportError when
        nothing answers, ValueError for a URL that is not http(s)://host:port."""
    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def token(self) -> str | None:
        """The current access token."""
    # applications
    def create_applications(self, sla: Descriptor) -> list[dict[str, Any]]:
        """Creates every application of the descriptor with its services (all or nothing);
        returns them in descriptor order. Raises InvalidSlaError with every violation."""
    def create_application(self, sla: Descriptor) -> dict[str, Any]:
        """Like create_applications for a descriptor with exactly one application."""
    def applications(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every application (Admin), or those of one user."""
    def application(self, application_id: str) -> dict[str, Any]: ...
    def delete_application(self, application_id: str) -> str: ...
    # services and instances
    def services(self, application_id: str | None = None) -> list[dict[str, Any]]:
        """Every service (Admin), or those of one application."""
    def service(self, service_id: str) -> dict[str, Any]:
        """One service with its instance_list."""
    def instances(self, service_id: str) -> list[dict[str, Any]]: ...
    def delete_service(self, service_id: str) -> str: ...
    @overload
    def deploy(self, service_id: str) -> dict[str, Any]:
        """Deploys one more instance; returns it (instance_number, status)."""
    @overload
    def deploy(self, service_id: str, count: int) -> list[dict[str, Any]]:
        """Deploys count instances in one request; returns them as a list."""
    def scale(self, service_id: str, replicas: int) -> dict[str, Any]:
        """Sets the desired number of instances (0 to 10000); the root keeps that many.
        Returns {replicas, instances, deployed, removed}."""
    def undeploy(self, service_id: str, instance: int | None = None) -> str:
        """Undeploys one instance, or all when instance is None."""
    def wait_for_status(
        self,
        service_id: str,
        status: str = "RUNNING",
        *,
        instance: int | None = None,
        timeout: float = 60.0,
        interval: float = 0.25,
        fail_on: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Waits until the instance (or every instance) has `status`; returns the service.
        Raises WaitTimeout (with each instance's last status) or DeployFailed (a fail_on
        status was reached)."""
    def logs(self, service_id: str, instance: int = 0, *, tail: int | None = None) -> str: ...
    # events and usage
    def events(
        self,
        *,
        service: str | None = None,
        application: str | None = None,
        cluster: str | None = None,
        kind: str | None = None,
        object: str | None = None,
        since: float | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events (what happened to which object, and why), oldest first."""
    def follow_events(
        self,
        *,
        service: str | None = None,
        application: str | None = None,
        cluster: str | None = None,
        kind: str | None = None,
        object: str | None = None,
        since: float | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The matching kept events, then each new one as it happens (blocks)."""
    def usage(
        self,
        service_id: str,
        instance: int | None = None,
        *,
        since: int | None = None,
        until: int | None = None,
    ) -> dict[str, Any]:
        """CPU and memory history of the service's instances, Oakestra's shape."""
    # clusters and others
    def clusters(self, active: bool = False) -> list[dict[str, Any]]: ...
    def health(self) -> dict[str, Any]: ...
    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Any endpoint, authenticated, e.g. call("GET", "/api/users")."""

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
