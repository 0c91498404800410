"""The single-file HTML reports opened in a real headless Chromium: a screenshot shows every
plot drawn (non-blank pixels where each plot sits), for a finished run and for a search."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import skip_tier, tiny_recipe

from flow.pipeline import run_recipe
from flow.recipe.config import parse_recipe
from flow.report.html import run_report_html, search_report_html
from flow.report.summary import Summary
from flow.search import run_search

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 1280, 4000
# appended to a copy of the report only (the reports themselves carry no script): writes each
# plot's position in the page into the DOM, which --dump-dom prints
MEASURE = """<script>
addEventListener('load', () => {
  const r = [...document.querySelectorAll('.plot')].map(e => {
    const b = e.getBoundingClientRect();
    return [b.left, b.top, b.width, b.height].map(Math.round).join(',');
  });
  const p = document.createElement('pre'); p.id = 'rects'; p.textContent = r.join(';');
  document.body.appendChild(p);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    skip_tier("browser", "no Chromium installed", "apt-get install -y chromium")


def _run_chromium(url: str, tmp: Path, *args: str) -> str:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars",
           "--force-device-scale-factor=1", f"--window-size={WIDTH},{HEIGHT}",
           "--virtual-time-budget=5000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def plot_regions(html: str, tmp: Path) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """(screenshot RGB array, each plot's x, y, w, h) of the page rendered by Chromium."""
    import matplotlib.image

    page = tmp / "page.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>"))
    dom = _run_chromium(page.as_uri(), tmp, "--dump-dom")
    found = re.search(r'<pre id="rects">([^<]*)</pre>', dom)
    assert found, "Chromium did not run the page"
    rects = [tuple(int(v) for v in r.split(",")) for r in found.group(1).split(";") if r]
    shot = tmp / "shot.png"
    _run_chromium(page.as_uri(), tmp, f"--screenshot={shot}")
    return matplotlib.image.imread(shot)[..., :3], rects


def drawn(image: np.ndarray, rect: tuple[int, int, int, int]) -> bool:
    """Does the region hold a drawing: enough non-white pixels in several colours?"""
    x, y, w, h = rect
    region = image[y + 6 : y + h - 6, x + 6 : x + w - 6]  # inside the plot's frame
    ink = region.min(axis=2) < 0.9
    colours = {tuple(c) for c in (region[ink] * 16).astype(int)[::7]}
    return bool(ink.mean() > 0.03 and len(colours) >= 6)


def check_rendered(html: str, tmp: Path, expected: int) -> None:
    image, rects = plot_regions(html, tmp)
    assert len(rects) == expected
    for r in rects:
        assert r[2] > 200 and r[3] > 150 and r[1] + r[3] <= HEIGHT, f"plot {r} not on screen"
        assert drawn(image, r), f"plot at {r} is blank"


def blank_plots(html: str) -> str:
    """The same page with each plot replaced by an empty box of the same kind (negative control)."""
    return re.sub(r'<div class="plot">.*?</svg>\s*</div>',
                  '<div class="plot" style="width:560px;height:360px"></div>', html, flags=re.S)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    recipe = parse_recipe({"name": "rep", "data": {"dataset": "digits", "limit": 300},
                           "train": {"epochs": 2}, "qat": {"epochs": 1},
                           "method": {"name": "uniform", "weight_bits": 3, "act_bits": 3},
                           "hardware": {"board": "pynq-z1", "target_fps": 50000},
                           "simulate": {"enabled": False}})
    run_recipe(recipe, out)
    return out / "rep"


def test_run_report_renders_its_plots_in_chromium(run_dir, tmp_path):
    summary = Summary.model_validate_json((run_dir / "summary.json").read_text())
    html = run_report_html(summary, run_dir)
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html) and "<script" not in html
    check_rendered(html, tmp_path, expected=3)
    with pytest.raises(AssertionError, match="blank"):  # the check sees a missing plot
        (tmp_path / "neg").mkdir()
        check_rendered(blank_plots(html), tmp_path / "neg", expected=3)


def test_search_report_renders_its_fronts_in_chromium(tmp_path):
    recipe = parse_recipe(tiny_recipe("rep_search", trials=4, finn="all", qat_top=1))
    outcome = run_search(recipe, tmp_path, workers=1)
    html = Path(outcome.report).read_text()
    assert html == search_report_html(outcome)  # the file is the outcome's report
    for text in ("Pareto fronts", "Cost model vs FINN", outcome.chosen[:8]):
        assert text in html
    check_rendered(html, tmp_path, expected=3)
