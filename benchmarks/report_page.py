"""Size and load time of the HTML report in headless Chromium, against a minimal page on the same browser.

Usage: python benchmarks/report_page.py STUDY_DIR... [--out report.html] [--repeats 5]

Renders the report of the given sparcom outputs (timed), then opens it ``repeats`` times in headless Chromium
(Debian's ``chromium``), each time on a fresh navigation, and reports the load event time (navigation timing,
``loadEventEnd``), the DOM size, and the same load time of a minimal HTML page as the reference: a busy machine
slows both alike. Target: the SmolLM2 × HexaInst page loads in under 2 s and stays under 10 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import Browser, chromium_path

from sparcom.report.html import render_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if chromium_path() is None:
        sys.exit("chromium not found; install it with: apt-get install -y chromium")
    out = args.out or Path(tempfile.mkdtemp()) / "report.html"
    started = time.perf_counter()
    render_report(args.studies, out, overwrite=True)
    render_seconds = time.perf_counter() - started
    minimal = out.with_name("minimal.html")
    minimal.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>x</title></head>"
                       "<body><p>minimal</p></body></html>")
    loads, references = [], []
    with Browser(1400, 1000) as browser:
        for _ in range(args.repeats):
            references.append(browser.open(minimal))
            loads.append(browser.open(out))
        nodes = browser.evaluate("document.getElementsByTagName('*').length")
        errors = list(browser.errors)
    size = out.stat().st_size
    print(f"report: {out}")
    print(f"machine load (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"render: {render_seconds:.2f} s; size: {size / 1e6:.2f} MB; DOM elements: {nodes:,}")
    print(f"load event, median of {args.repeats}: {statistics.median(loads):.0f} ms "
          f"(min {min(loads):.0f}, max {max(loads):.0f}); minimal page: {statistics.median(references):.0f} ms; "
          f"ratio {statistics.median(loads) / max(statistics.median(references), 1e-9):.1f}")
    print(f"console errors: {errors or 'none'}")


if __name__ == "__main__":
    main()
