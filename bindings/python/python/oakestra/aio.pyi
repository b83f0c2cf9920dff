from collections.abc import Iterator, Sequence
from typing import Any, overload

from . import Client, Descriptor

class AsyncClient:
    """Client's calls as coroutines (each runs in a worker thread; the GIL is released)."""

    def __init__(self, client: Client) -> None: ...
    @classmethod
    async def connect(
        cls,
        url: str = "http://127.0.0.1:10000",
        username: str = "Admin",
        password: str = "Admin",
        *,
        organization: str | None = None,
    ) -> AsyncClient: ...
    @property
    def client(self) -> Client: ...
    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def token(self) -> str | None: ...
    async def create_applications(self, sla: Descriptor) -> list[dict[str, Any]]: ...
    async def create_application(self, sla: Descriptor) -> dict[str, Any]: ...
    async def applications(self, user_id: str | None = None) -> list[dict[str, Any]]: ...
    async def application(self, application_id: str) -> dict[str, Any]: ...
    async def delete_application(self, application_id: str) -> str: ...
    async def services(self, application_id: str | None = None) -> list[dict[str, Any]]: ...
    async def service(self, service_id: str) -> dict[str, Any]: ...
    async def instances(self, service_id: str) -> list[dict[str, Any]]: ...
    async def delete_service(self, service_id: str) -> str: ...
    @overload
    async def deploy(self, service_id: str) -> dict[str, Any]: ...
    @overload
    async def deploy(self, service_id: str, count: int) -> list[dict[str, Any]]: ...
    async def scale(self, service_id: str, replicas: int) -> dict[str, Any]: ...
    async def undeploy(self, service_id: str, instance: int | None = None) -> str: ...
    async def wait_for_status(
        self,
        service_id: str,
        status: str = "RUNNING",
        *,
        instance: int | None = None,
        timeout: float = 60.0,
        interval: float = 0.25,
        fail_on: Sequence[str] = (),
    ) -> dict[str, Any]: ...
    async def logs(self, service_id: str, instance: int = 0, *, tail: int | None = None) -> str: ...
    async def events(
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
    ) -> list[dict[str, Any]]: ...
    async def follow_events(
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
        """The blocking iterator of Client.follow_events (iterate it in a thread)."""
    async def usage(
        self,
        service_id: str,
        instance: int | None = None,
        *,
        since: int | None = None,
        until: int | None = None,
    ) -> dict[str, Any]: ...
    async def clusters(self, active: bool = False) -> list[dict[str, Any]]: ...
    async def health(self) -> dict[str, Any]: ...
    async def call(self, method: str, path: str, body: Any = None) -> Any: ...
