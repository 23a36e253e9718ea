"""The process lane of tests/conftest.py names tests that exist, and every test that starts a
SuperLink or a Ray cluster is in it."""

import ast
from pathlib import Path

from conftest import PROCESS_LANE, lane_scope

TESTS = Path(__file__).resolve().parent
STARTERS = {"PrivateSuperLink", "local_cluster"}  # calls that start SuperLink or Ray processes


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
    return bool(entered & STARTERS) or bool(called & helpers) or "superlink" in arguments


def collected_tests() -> dict[str, bool]:
    """Test id (as xdist sees it, from the repository root) -> whether the test starts processes
    (itself, or through a module-level helper or fixture that does)."""
    found = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        functions = [node for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)]
        helpers = {f.name for f in functions if not f.name.startswith("test_") and starts_processes(f, set())}
        for function in functions:
            if function.name.startswith("test_"):
                test_id = f"tests/{path.relative_to(TESTS).as_posix()}::{function.name}"
                found[test_id] = starts_processes(function, helpers)
    return found


def test_every_lane_entry_names_existing_tests():
    ids = list(collected_tests())
    for prefix in PROCESS_LANE:
        assert any(test_id.startswith(prefix) for test_id in ids), f"{prefix!r} matches no test"


def test_every_test_that_starts_a_superlink_or_ray_is_in_the_lane():
    for test_id, starts in collected_tests().items():
        if starts:
            assert lane_scope(test_id) == "process-lane", f"{test_id} starts processes outside the lane"
