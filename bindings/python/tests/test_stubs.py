"""The type stubs shipped with the package describe what exists at runtime (no drift)."""

from __future__ import annotations

import ast
from pathlib import Path

import oakestra
from oakestra import sched

PACKAGE = Path(oakestra.__file__).parent


def stub(name: str) -> ast.Module:
    return ast.parse((PACKAGE / name).read_text())


def classes(module: ast.Module) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in module.body if isinstance(n, ast.ClassDef)}


def methods(cls: ast.ClassDef) -> set[str]:
    return {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and not n.name.startswith("_")}


def fields(cls: ast.ClassDef) -> set[str]:
    return {n.target.id for n in cls.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_stub_files_ship_with_the_package() -> None:
    for name in ("__init__.pyi", "sched.pyi", "aio.pyi", "_native.pyi", "py.typed"):
        assert (PACKAGE / name).is_file(), name


def test_client_stub_matches_the_native_class() -> None:
    client = classes(stub("__init__.pyi"))["Client"]
    assert methods(client) == public(oakestra.Client)
    async_client = classes(stub("aio.pyi"))["AsyncClient"]
    assert methods(async_client) - {"connect", "client"} == public(oakestra.Client)
    init = stub("__init__.pyi")
    [stub_all] = [n.value for n in init.body if isinstance(n, ast.Assign)
                  and isinstance(n.targets[0], ast.Name) and n.targets[0].id == "__all__"]
    assert ast.literal_eval(stub_all) == oakestra.__all__
    for name in oakestra.__all__:
        assert hasattr(oakestra, name), name


def test_sched_stub_matches_the_records_and_functions() -> None:
    module = stub("sched.pyi")
    stubbed = classes(module)
    assert fields(stubbed["Candidate"]) == set(sched.Candidate("w").to_dict())
    assert fields(stubbed["PlacementRequest"]) == set(sched.PlacementRequest().to_dict())
    assert fields(stubbed["Placement"]) == set(sched.Placement("w").to_dict())
    for cls in ("Candidate", "PlacementRequest", "Placement"):
        assert methods(stubbed[cls]) == {"from_dict", "to_dict", "replace"}
    simulation = {n.name for n in stubbed["Simulation"].body if isinstance(n, ast.FunctionDef)}
    assert simulation == public(sched.Simulation)
    functions = {n.name for n in module.body if isinstance(n, ast.FunctionDef)}
    imported = {a.asname or a.name for n in module.body if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assigned = {t.id for n in module.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Name)}
    for name in functions | set(stubbed) | (assigned - {"__all__"}):
        assert hasattr(sched, name), name
    for name in sched.__all__:
        assert name in functions | set(stubbed) | imported | assigned, name
