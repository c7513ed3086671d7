"""`dynamics report`: one self-contained page, rendered in headless Chromium."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# no network here: these flags stop Chromium from trying to reach its update and sync services
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from dynamics.cli import main

    root = tmp_path_factory.mktemp("results")
    for args in (["run", "scan-snap-fig4", "--quick", "--out", str(root / "scan-snap-fig4")],
                 ["verify", "scan-snap-fig4", "--results", str(root)],
                 ["report", "--results", str(root)]):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, 1), args
    return root


def test_report_is_self_contained_with_every_figure_and_claim(report):
    page = (report / "report.html").read_text()
    figures = sorted(p.name for p in (report / "scan-snap-fig4").glob("*.png"))
    assert figures and page.count('src="data:image/png;base64,') == len(figures)
    assert not re.search(r'src="(?!data:)', page), "a resource that is not embedded"
    assert "scan-snap-fig4/manifest.json" in page and "reproductions pass" in page and "common-mass-falls" in page
    md = (report / "REPORT.md").read_text()
    assert all(f"scan-snap-fig4/{f}" in md for f in figures)


def test_report_renders_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    url = (report / "report.html").as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    n = int(re.search(r'data-figures="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-figures-loaded="(\d+)"', dom).group(1))
    assert n > 0 and loaded == n, f"{loaded} of {n} figures rendered"
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, "--window-size=1200,2400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1100
    assert np.std(pixels[..., :3]) > 0.05, "the screenshot is blank"
