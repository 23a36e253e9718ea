"""The process lane of tests/conftest.py names tests that exist, and every test that starts a
SuperLink or a Ray cluster is in it."""

import ast
from pathlib import Path

from conftest import PROCESS_LANE, ProcessLaneScheduling

TESTS = Path(__file__).resolve().parent
STARTERS = ("PrivateSuperLink", "local_cluster")  # calls that start SuperLink or Ray processes


def collected_tests() -> dict[str, ast.FunctionDef]:
    """Test id (as xdist sees it, from the repository root) -> the test function's syntax tree."""
    found = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found[f"tests/{path.relative_to(TESTS).as_posix()}::{node.name}"] = node
    return found


def starts_processes(function: ast.FunctionDef, helpers: set[str]) -> bool:
    """``with PrivateSuperLink(...)`` / ``with local_cluster(...)`` (entering starts them), a call to a
    helper that does, or the ``superlink`` fixture."""
    entered = {
        item.context_expr.func.id
        for node in ast.walk(function)
        if isinstance(node, ast.With)
        for item in node.items
        if isinstance(item.context_expr, ast.Call) and isinstance(item.context_expr.func, ast.Name)
    }
    called = {
        node.func.id for node in ast.walk(function) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    arguments = {arg.arg for arg in function.args.args}
    return bool(entered & set(STARTERS)) or bool(called & helpers) or "superlink" in arguments


def test_every_lane_entry_names_existing_tests():
    ids = list(collected_tests())
    for prefix in PROCESS_LANE:
        assert any(test_id.startswith(prefix) for test_id in ids), f"{prefix!r} matches no test"


def test_every_test_that_starts_a_superlink_or_ray_is_in_the_lane():
    scheduler = ProcessLaneScheduling.__new__(ProcessLaneScheduling)
    for test_id, function in collected_tests().items():
        module = ast.parse((TESTS.parent / test_id.split("::")[0]).read_text())
        helpers = {  # module-level functions or fixtures that start processes themselves
            node.name
            for node in module.body
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_") and starts_processes(node, set())
        }
        if starts_processes(function, helpers):
            assert scheduler._split_scope(test_id) == "process-lane", f"{test_id} starts processes outside the lane"
