"""The Flower app bundle (FAB) that `flwr run .` builds holds the app's code and nothing else."""

from io import BytesIO
from pathlib import Path
from zipfile import ZipFile

from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import FAB_MAX_SIZE

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedpersonal/", "strategies/", "clients/", "simulations/")


def test_fab_holds_the_four_code_packages_only_and_fits_the_cap() -> None:
    fab = build_fab_from_disk(ROOT)
    assert len(fab) < FAB_MAX_SIZE
    names = ZipFile(BytesIO(fab)).namelist()
    code = [name for name in names if name not in ("pyproject.toml", ".info/CONTENT")]
    assert all(name.startswith(PACKAGES) and name.endswith(".py") for name in code), code
    for needed in ("simulations/server_app.py", "simulations/client_app.py", "fedpersonal/config.py"):
        assert needed in names
    assert not any(name.startswith(("benchmarks/", "tests/", "docs/")) for name in names)
