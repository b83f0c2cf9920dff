# The native module; its public names are re-exported (and documented) by oakestra and
# oakestra.sched.
from . import Client as Client
from . import validate_sla as validate_sla
from .sched import (
    SCHEDULERS as SCHEDULERS,
    Candidate as Candidate,
    Failure as Failure,
    Placement as Placement,
    PlacementRequest as PlacementRequest,
    SchedulerFunction,
    Simulation as Simulation,
    cluster_of as cluster_of,
    place as place,
    simulate as simulate,
)

__version__: str

def external_answer(func: SchedulerFunction, body: bytes) -> tuple[int, str, Placement | None]: ...
def parse_input(body: bytes) -> tuple[PlacementRequest, list[Candidate]]: ...
