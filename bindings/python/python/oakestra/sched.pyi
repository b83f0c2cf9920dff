# Type stubs of oakestra.sched (classes and functions from oakestra._native, serve in Python).
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .errors import NoPlacementError as NoPlacementError

SCHEDULERS: list[str]


class Candidate:
    """A worker (or a cluster with aggregated resources) an instance can be placed on."""

    name: str
    cpu_cores: float
    #: share of the cores that is taken (reserved, or measured under usage-based capacity)
    cpu_load_percent: float
    #: measured CPU usage; ranks candidates that fit equally
    cpu_usage_percent: float
    memory_total_mb: int
    memory_free_mb: int
    gpus: int
    gpus_free: int
    virtualization: list[str]
    arch: list[str]
    csi_drivers: list[str]
    addons: list[str]
    #: ``{"lat": …, "long": …}``
    location: dict[str, float] | None
    #: ``{"vector": [...], "height": …}``
    vivaldi: dict[str, Any] | None
    rtt_ms: dict[str, float]
    active: bool
    #: ``{"vcpus": …, "memory_mb": …, "gpus": …}`` (root level)
    max_worker_free: dict[str, Any] | None
    def __init__(
        self,
        name: str,
        *,
        cpu_cores: float = 0.0,
        cpu_load_percent: float = 0.0,
        cpu_usage_percent: float = 0.0,
        memory_total_mb: int = 0,
        memory_free_mb: int = 0,
        gpus: int = 0,
        gpus_free: int = 0,
        virtualization: list[str] = ...,
        arch: list[str] = ...,
        csi_drivers: list[str] = ...,
        addons: list[str] = ...,
        location: Mapping[str, float] | None = None,
        vivaldi: Mapping[str, Any] | None = None,
        rtt_ms: Mapping[str, float] = ...,
        active: bool = True,
        max_worker_free: Mapping[str, Any] | None = None,
    ) -> None: ...
    @staticmethod
    def from_dict(data: Mapping[str, Any], *, strict: bool = True) -> Candidate: ...
    def to_dict(self) -> dict[str, Any]: ...
    def replace(self, **changes: Any) -> Candidate: ...

class PlacementRequest:
    """One instance to place: resources, virtualization and constraints."""

    #: ``"cluster"`` (candidates are workers) or ``"root"`` (candidates are clusters)
    level: str
    service: str
    vcpus: float
    memory_mb: int
    vgpus: int
    virtualization: str
    arch: list[str]
    csi_drivers: list[str]
    #: nodes, cluster, clusters, addons, geo, latency, connectivity
    constraints: dict[str, Any]
    def __init__(
        self,
        *,
        level: str = "cluster",
        service: str = "",
        vcpus: float = 0.0,
        memory_mb: int = 0,
        vgpus: int = 0,
        virtualization: str = "",
        arch: list[str] = ...,
        csi_drivers: list[str] = ...,
        constraints: Mapping[str, Any] = ...,
    ) -> None: ...
    @staticmethod
    def from_dict(data: Mapping[str, Any], *, strict: bool = True) -> PlacementRequest: ...
    def to_dict(self) -> dict[str, Any]: ...
    def replace(self, **changes: Any) -> PlacementRequest: ...

class Placement:
    """A scheduler's choice."""

    candidate: str
    index: int | None
    expected_latency_ms: float | None
    distance_km: float | None
    def __init__(
        self,
        candidate: str,
        *,
        index: int | None = None,
        expected_latency_ms: float | None = None,
        distance_km: float | None = None,
    ) -> None: ...
    @staticmethod
    def from_dict(data: Mapping[str, Any], *, strict: bool = True) -> Placement: ...
    def to_dict(self) -> dict[str, Any]: ...
    def replace(self, **changes: Any) -> Placement: ...

class Failure:
    """A request of a simulation that was not placed."""

    @property
    def index(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def detail(self) -> str: ...

class Simulation:
    """One scheduler's run over a list of requests."""

    @property
    def scheduler(self) -> str: ...
    @property
    def placements(self) -> list[Placement | None]: ...
    @property
    def failures(self) -> list[Failure]: ...
    @property
    def placed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def candidates(self) -> list[Candidate]: ...
    @property
    def counts(self) -> dict[str, int]: ...

RequestLike = PlacementRequest | Mapping[str, Any]
CandidateLike = Candidate | Mapping[str, Any]
#: What a Python scheduler returns: a name, a Candidate, an index, a Placement, a dict, or None.
SchedulerAnswer = str | Candidate | int | Placement | Mapping[str, Any] | None
SchedulerFunction = Callable[[PlacementRequest, list[Candidate]], SchedulerAnswer]

def place(
    request: RequestLike,
    candidates: Iterable[CandidateLike],
    scheduler: str | SchedulerFunction | None = None,
) -> Placement:
    """Places one instance (default scheduler best_fit); raises NoPlacementError."""

def first_fit(request: RequestLike, candidates: Iterable[CandidateLike]) -> Placement: ...
def best_fit(request: RequestLike, candidates: Iterable[CandidateLike]) -> Placement: ...
def least_loaded(request: RequestLike, candidates: Iterable[CandidateLike]) -> Placement: ...
def ldp(request: RequestLike, candidates: Iterable[CandidateLike]) -> Placement: ...
def simulate(
    requests: Iterable[RequestLike],
    candidates: Iterable[CandidateLike],
    schedulers: str | SchedulerFunction | Iterable[str | SchedulerFunction] | None = None,
) -> dict[str, Simulation]:
    """Runs each scheduler (default: all built-ins) over the requests on its own copy of the
    candidates; returns {scheduler name: Simulation}."""

def cluster_of(name: str, workers: Iterable[CandidateLike]) -> Candidate:
    """One root-level candidate aggregating the workers' resources (sums, active workers only,
    the largest free capacity of a single worker in max_worker_free)."""

class Call(NamedTuple):
    request: PlacementRequest
    candidates: list[Candidate]
    answer: dict[str, Any]
    http_status: int

class SchedulerServer:
    fn: SchedulerFunction
    host: str
    port: int
    path: str
    calls: list[Call]
    @property
    def url(self) -> str: ...
    @property
    def flag(self) -> str: ...
    def stop(self) -> None: ...
    def __enter__(self) -> SchedulerServer: ...
    def __exit__(self, *exc: object) -> None: ...

def serve(
    fn: SchedulerFunction, port: int = 0, *, host: str = "127.0.0.1", path: str = "/place"
) -> SchedulerServer:
    """Serves fn as the external scheduler of a cluster started with
    --scheduler external:<server.url>; returns at once."""
