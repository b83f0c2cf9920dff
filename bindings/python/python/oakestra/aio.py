"""``AsyncClient``: the same calls as ``Client`` for asyncio code.

Each call runs the blocking client in a worker thread (``asyncio.to_thread``); the Rust side
releases the GIL while it waits on the network, so the event loop and other threads keep
running.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from ._native import Client


class AsyncClient:
    """Wraps a :class:`oakestra.Client`; every method is a coroutine with the same arguments.

    Create one with ``await AsyncClient.connect(url, username, password)`` (logs in without
    blocking the loop) or ``AsyncClient(client)``.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    @classmethod
    async def connect(
        cls,
        url: str = "http://127.0.0.1:10000",
        username: str = "Admin",
        password: str = "Admin",
        *,
        organization: str | None = None,
    ) -> AsyncClient:
        client = await asyncio.to_thread(
            Client, url, username, password, organization=organization
        )
        return cls(client)

    @property
    def client(self) -> Client:
        """The blocking client underneath."""
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attr, *args, **kwargs)

        return call

    def __repr__(self) -> str:
        return f"AsyncClient({self._client!r})"
