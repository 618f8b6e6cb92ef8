"""The HTML report in a real browser (headless Chromium): no horizontal overflow at 1400 px and at 400 px, the two
graphs side by side when wide and stacked when narrow, zooming scrolls inside the figure, and every in-page link
(rule hits, node index) lands on an element that exists.

The report is loaded into an ``<iframe srcdoc>`` of the given width (Chromium's headless window is at least
500 px wide; a srcdoc frame shares the wrapper's origin, so its script can read the frame's layout). A script in
the wrapper writes the measurements into the DOM, which ``--dump-dom`` prints. Skips when Chromium is absent
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import etc
from etc.tools.report import HitRecorder, render_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)

MEASURE = """
<script>
function box(el) { const r = el.getBoundingClientRect(); return [Math.round(r.left), Math.round(r.right)]; }
function measure(doc, win) {
  const root = doc.documentElement;
  const figs = [...doc.querySelectorAll('.pair figure')];
  const tops = figs.map(f => f.getBoundingClientRect().top);
  const wide = [...doc.querySelectorAll('body *')].filter(e => e.closest('figure') === null)
    .filter(e => e.getBoundingClientRect().right > root.clientWidth + 1).map(e => e.tagName + '#' + e.id);
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, innerWidth: win.innerWidth,
          stacked: tops.length === 2 && tops[1] > tops[0] + 1, beyond: wide.slice(0, 10),
          figures: figs.map(box)};
}
window.addEventListener('load', () => {
  const frame = document.getElementById('page');
  const doc = frame.contentDocument, win = frame.contentWindow;
  const out = {plain: measure(doc, win)};
  try {
    const links = [...doc.querySelectorAll('a[href^="#"]')];
    out.links = links.length;
    out.dangling = links.map(a => a.getAttribute('href').slice(1)).filter(id => !doc.getElementById(id));
    const svg = doc.getElementById('graph-before');
    const fit = svg.getBoundingClientRect().width;
    doc.getElementById('graph-before-zoom-2').click();
    out.zoomed = measure(doc, win);
    out.svgFit = fit; out.svgZoomed = svg.getBoundingClientRect().width;
    out.figureScroll = svg.closest('figure').scrollWidth > svg.closest('figure').clientWidth;
  } catch (e) { out.error = String(e); }
  const pre = document.createElement('pre'); pre.id = 'etc-measure'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def measure(page: str, width: int, tmp_path: Path) -> dict:
    """Layout figures of ``page`` shown ``width`` px wide in headless Chromium."""
    wrapper = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{margin:0}</style></head><body>'
        f'<iframe id="page" style="width:{width}px;height:900px;border:0" srcdoc="{html.escape(page, quote=True)}">'
        f"</iframe>{MEASURE}</body></html>"
    )
    path = tmp_path / f"wrapper-{width}.html"
    path.write_text(wrapper, encoding="utf-8")
    flags = [
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={max(width, 500) + 100},1000",
        "--virtual-time-budget=5000",
    ]
    out = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120
    )
    found = re.search(r'<pre id="etc-measure">(.*?)</pre>', out.stdout, flags=re.S)
    assert found, f"no measurement in Chromium's DOM (exit {out.returncode}): {out.stderr[-800:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def page() -> str:
    """The report of ETDS (two streams, 2 blocks, 8 channels) as `etc optimize --report` writes it, latency off."""
    torch = pytest.importorskip("torch")
    from etc import zoo
    from etc.frontends.torch import export

    torch.manual_seed(0)
    model = export(
        zoo.build("etds_dual", scale=4, M=2, C=8).eval(), torch.rand(1, 3, 32, 32), exporter="legacy"
    )
    recorder = HitRecorder()
    plain, report = etc.optimize(model, instruments=[recorder])
    return render_report(model, plain, report, sites=recorder.sites, title="etds_dual", measure_latency=False)


@pytest.mark.parametrize("width, stacked", [(1400, False), (400, True)])
def test_report_fits_the_window_with_graphs_side_by_side_or_stacked(page, tmp_path, width, stacked):
    got = measure(page, width, tmp_path)
    plain = got["plain"]
    assert "error" not in got, got["error"]
    assert plain["innerWidth"] == width
    assert plain["scrollWidth"] <= plain["clientWidth"], f"horizontal overflow at {width} px: {plain}"
    assert not plain["beyond"], f"elements past the right edge at {width} px: {plain['beyond']}"
    assert plain["stacked"] == stacked, plain
    # zoomed to 200% the graph grows (and scrolls inside its figure when wider); the page itself still fits
    assert got["svgZoomed"] > got["svgFit"]
    assert got["figureScroll"] or width > 2 * got["svgZoomed"]
    assert got["zoomed"]["scrollWidth"] <= got["zoomed"]["clientWidth"], got["zoomed"]
    assert got["links"] > 0 and not got["dangling"], got["dangling"]
