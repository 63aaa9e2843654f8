"""The report pages in a real browser (headless Chromium through Playwright).

One synthetic subject (3 mm voxels, two lesions in the left hemisphere) runs through the
participant level with its true lesion mask as a manual mask (``--lesion-source manual
--skull-strip none --plugin Linear``: no network, about 1.5 minutes on 2 CPU cores), then the
group level. The output folder is then moved, and
``sub-01.html``, ``group/group.html`` and one image's stand-alone section page are opened with
``file://`` URLs at phone (390 px) and desktop (1400 px) widths: no console error, no failed
request, every image loaded, nothing wider than the viewport, and the links between the pages
lead to the pages.

Needs ``playwright`` (PyPI) and a Chromium: Debian's ``chromium`` at ``/usr/bin/chromium``
(Playwright's own browser download is not used); skipped with the reason when either is
missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from click.testing import CliRunner

from stroke_lesion_app.cli.run import cli
from stroke_lesion_app.synthetic import synthesize_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("STROKE_LESION_APP_CHROMIUM") or shutil.which("chromium") or \
    "/usr/bin/chromium"
WIDTHS = (390, 1400)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--allow-file-access-from-files"])
        except Exception as error:  # noqa: BLE001 - any launch failure means: cannot test here
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(error).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Participant and group levels on two synthetic subjects; the output folder is then moved
    elsewhere (relative links must survive)."""
    root = tmp_path_factory.mktemp("report_pages")
    bids = root / "bids"
    synthesize_dataset(bids, n_subjects=1, seed=0, resolution=3)
    anat = bids / "derivatives" / "synthetic-truth" / "sub-01" / "anat"
    shutil.copy(anat / "sub-01_label-L_mask.nii.gz",
                bids / "sub-01" / "anat" / "sub-01_label-lesion_roi.nii.gz")
    shutil.rmtree(bids / "derivatives")
    out = root / "out"
    for level in (["participant", "-w", str(root / "work"), "--plugin", "Linear",
                   "--skull-strip", "none", "--lesion-source", "manual",
                   "--group-normalisation", "affine"], ["group"]):
        result = CliRunner().invoke(cli, [str(bids), str(out), *level], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    moved = root / "moved" / "derivatives"
    moved.parent.mkdir()
    shutil.move(out, moved)
    return moved


def _pages(out: Path) -> list[Path]:
    return [out / "sub-01.html", out / "group" / "group.html",
            out / "sub-01" / "figures" / "sub-01_report.html"]


def _open(browser, path: Path, width: int):
    """Load ``path``; return the page and the console errors and failed requests seen."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(
        f"failed request: {request.url} ({request.failure})"))
    page.goto(path.as_uri(), wait_until="load")
    return page, problems


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", ["subject", "group", "section"])
def test_pages_load_and_fit(browser, outputs, which, width):
    path = dict(zip(("subject", "group", "section"), _pages(outputs)))[which]
    page, problems = _open(browser, path, width)
    try:
        assert not problems, problems
        broken = page.evaluate("[...document.images].filter(i => !i.complete || "
                               "i.naturalWidth === 0).map(i => i.src)")
        images = page.evaluate("document.images.length")
        assert images >= (3 if which != "group" else 2) and not broken, broken
        overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], f"page {overflow[0]} px wide in {overflow[1]} px"
        # the scope statement is on every page, the convention under every slice figure
        assert "chronic stroke" in page.inner_text(".scope")
        if which != "group":
            assert "Radiological convention" in page.inner_text("figure figcaption")
        # every local link (figures, TSVs, other pages) points to an existing file
        for href in page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)"):
            url = urlparse(href)
            if url.scheme == "file":
                assert Path(unquote(url.path)).exists(), href
    finally:
        page.close()


def test_group_and_subject_pages_link_each_other(browser, outputs):
    subject, group, _ = _pages(outputs)
    page, problems = _open(browser, subject, 1400)
    try:
        page.click("nav >> text=Group report")
        page.wait_for_load_state("load")
        assert Path(unquote(urlparse(page.url).path)) == group
        assert page.inner_text("h1") == "Group report"
        page.click("table >> text=sub-01")
        page.wait_for_load_state("load")
        assert Path(unquote(urlparse(page.url).path)) == subject
        assert page.inner_text("h1") == "sub-01"
        assert not problems, problems
    finally:
        page.close()
