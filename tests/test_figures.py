"""save_figure writes a real PNG where it is told, creates the folder, and frees the figure."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from fedpersonal.figures import save_figure  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("tight_layout", [True, False])
def test_save_figure_writes_png_into_new_folder_and_closes(tmp_path: Path, tight_layout: bool) -> None:
    figure, axis = plt.subplots(figsize=(2, 2))
    axis.plot([0, 1], [1, 0])
    target = tmp_path / "deeper" / "plot.png"
    assert save_figure(figure, target, dpi=50, tight_layout=tight_layout, bbox_inches="tight") == target
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert figure.number not in plt.get_fignums()


def test_dpi_sets_the_pixel_size(tmp_path: Path) -> None:
    sizes = []
    for dpi in (20, 40):
        figure, _ = plt.subplots(figsize=(3, 2))
        data = save_figure(figure, tmp_path / f"{dpi}.png", dpi=dpi).read_bytes()
        sizes.append((int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")))
    assert sizes == [(60, 40), (120, 80)]
