"""results/report.html from a fabricated results folder: one self-contained page with the tables
beside the papers' values, bar charts, sample GIFs, training curves and dataset availability;
absent inputs are notes, never a crash."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from animbench.cli import main
from animbench.data.video import write_clip
from animbench.report import (
    GIF_MAX_FRAMES,
    build_report,
    gif_strip,
    nice_ticks,
    sample_indices,
    svg_bar_chart,
    svg_line_chart,
    wide_table_html,
)

CONFIG = {
    "benchmark": {
        "datasets": ["synthetic-face", "vox"],
        "methods": ["fomm", "mraa"],
        "baselines": ["source-copy"],
    },
    "datasets": {"synthetic-face": {"source": "synthetic"}, "vox": {"source": "youtube"}},
}
CLIP = "id00000#test0000#000000#000012"
VOID = {"meta", "img", "br", "hr", "input", "link", "col", "source", "area", "base", "wbr"}
PROVENANCE = {
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "config_hash": "c" * 64,
    "animbench_version": "0.1.0",
    "created": "2026-01-01T00:00:00+00:00",
}


class Page(HTMLParser):
    """Tags (with attributes), text and nesting errors of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors, page.errors[:5]
    assert page.stack == [], f"unclosed elements: {page.stack}"
    return page


def frames(shift: int, count: int = 12, size: int = 32) -> np.ndarray:
    """A square moving right on a grey background."""
    out = np.full((count, size, size, 3), 90, dtype=np.uint8)
    for t in range(count):
        x = (2 * t + shift) % (size - 8)
        out[t, 10:18, x : x + 8] = (220, 40, 40)
    return out


def table_row(**values) -> dict:
    return {
        "paper": "mtia_eccv2022",
        "table": "table2",
        "n_videos": 6,
        "n_frames": 72,
        "checkpoint_sha256": "e" * 64,
        "detector_versions": "keypoint: synthetic-face 1",
        **PROVENANCE,
        **values,
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A small results folder: table2 and a paper table (no table1), one synthetic dataset with
    FOMM trained and reconstructed (MRAA absent), a real dataset's download and crop tables."""
    res = tmp_path / "results"
    res.mkdir()
    rows = [
        table_row(
            dataset="synthetic-face",
            paper_dataset=None,
            method="FOMM",
            metric="L1",
            value=0.0451,
            paper_value=np.nan,
            delta=np.nan,
            status="measured",
            note="synthetic dataset: no paper value <script>alert(1)</script>",
        ),
        table_row(
            dataset="vox",
            paper_dataset="vox",
            method="FOMM",
            metric="L1",
            value=np.nan,
            paper_value=0.0431,
            delta=np.nan,
            status="not run",
            note="FOMM is not part of this run",
            checkpoint_sha256=None,
        ),
        table_row(
            dataset="vox",
            paper_dataset="vox",
            method="MTIA",
            metric="AKD",
            value=1.5,
            paper_value=1.131,
            delta=0.369,
            status="measured",
            note="",
        ),
    ]
    pd.DataFrame(rows).to_parquet(res / "table2.parquet")
    paper = [
        table_row(
            paper="cpabmm_aaai2024",
            table="table1",
            dataset="taichi",
            method="X2Face",
            metric="L1",
            value=np.nan,
            paper_value=0.08,
            delta=np.nan,
            status="not available",
            note="X2Face is not implemented",
        )
    ]
    pd.DataFrame(paper).to_parquet(res / "cpab_table1.parquet")

    data = res / "data" / "synthetic-face" / "clips"
    for i in range(3):
        write_clip(data / "train" / f"id00000#train{i:04d}#000000#000012", frames(i))
    write_clip(data / "test" / CLIP, frames(5))
    for method, shift in (("fomm", 6), ("source-copy", 0)):
        write_clip(res / "reconstruction" / "synthetic-face" / method / CLIP, frames(shift))

    run = res / "runs" / "synthetic-face" / "fomm"
    run.mkdir(parents=True)
    steps = np.arange(1, 41)
    log = pd.DataFrame(
        {
            "step": steps,
            "epoch": steps // 10,
            "seconds": steps * 0.5,
            "perceptual": 5.0 / steps,
            "equivariance_value": 1.0 / np.sqrt(steps),
            "grad_norm_kp_detector": 10.0,
            "lr": 2e-4,
        }
    )
    log.to_csv(run / "log.csv", index=False)
    pd.DataFrame({"step": steps[:10], "reconstruction_kp": 1.0 / steps[:10]}).to_csv(
        run / "log-avd.csv", index=False
    )

    vox = res / "data" / "vox"
    vox.mkdir(parents=True)
    pd.DataFrame(
        {
            "youtube_id": ["a", "b", "c", "d"],
            "status": ["ok", "present", "failed", "missing"],
            "error_class": ["", "", "private", "not_attempted"],
        }
    ).to_parquet(vox / "availability.parquet")
    pd.DataFrame(
        {
            "name": ["x", "y", "z"],
            "partition": ["train", "train", "test"],
            "status": ["written", "missing_video", "written"],
        }
    ).to_parquet(vox / "clips.parquet")
    return res


def test_report_is_one_valid_self_contained_page(results: Path):
    out = build_report(results, CONFIG, results / "report.html")
    assert out == results / "report.html"
    page = parse(out)
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), f"<{tag} {name}={value[:60]}>"
        for value in attrs.values():
            assert "://" not in (value or ""), f"<{tag}> refers outside the file: {value}"
    assert [p.name for p in results.iterdir() if p.name.startswith(".")] == []  # no temp file


def test_report_images_decode_and_animate(results: Path):
    page = parse(build_report(results, CONFIG, results / "report.html"))
    images = page.all("img")
    assert len(images) == 2  # synthetic-face: fomm and source-copy
    for attrs in images:
        header, payload = attrs["src"].split(",", 1)
        assert header == "data:image/gif;base64"
        with Image.open(io.BytesIO(base64.b64decode(payload))) as gif:
            assert gif.format == "GIF"
            assert 1 < gif.n_frames <= GIF_MAX_FRAMES
            assert gif.size == (2 * 32 + 2, 32)  # ground truth | prediction
            gif.seek(gif.n_frames - 1)
            gif.convert("RGB").load()
        assert int(attrs["width"]) >= 2 * 32  # small clips are shown enlarged
    text = " ".join(page.text)
    assert "synthetic-face / fomm" in text and "synthetic-face / source-copy" in text


def test_report_tables_charts_and_notes(results: Path):
    out = build_report(results, CONFIG, results / "report.html")
    page = parse(out)
    text = " ".join(" ".join(page.text).split())
    # tables with the papers' values beside ours, and the provenance
    assert "0.0431" in text and "1.131" in text and "0.0451" in text and "0.369" in text
    assert "0.08" in text and "X2Face" in text  # a paper table present beside table2
    assert "commit: 0123456789abcdef" in text  # provenance shared by every row
    assert "checkpoint eeeeeeeeeeee" in text  # and per row
    # text is escaped, never markup
    assert "<script>alert(1)</script>" in text and not page.all("script")
    # bar charts of measured vs paper; loss curves (total, its terms; avd stage alone)
    svgs = out.read_text()
    bars = re.findall(r'<svg class="bar-chart".*?</svg>', svgs, re.S)
    assert len(bars) == 4  # table2: synthetic-face L1, vox L1, vox AKD; cpab_table1: taichi L1
    assert all('class="bar"' in chart for chart in bars)
    curves = re.findall(r'<svg class="line-chart".*?</svg>', svgs, re.S)
    assert len(curves) == 2
    main_log = next(c for c in curves if "log.csv" in c)
    assert main_log.count("<polyline") == 3  # total, perceptual, equivariance_value
    assert "grad_norm" not in main_log and ">lr<" not in main_log
    # availability of the real dataset, clip counts of the synthetic one
    assert "downloads: 4 sources" in text and "private" in text
    assert "clips: 3 expected" in text and "missing_video" in text
    # what is absent is a note
    assert "table1: not produced yet" in text
    assert "reconstruction synthetic-face / mraa: not produced yet" in text
    assert "reconstruction vox / fomm: not produced yet" in text
    assert "training log synthetic-face/mraa: not produced yet" in text


def test_paper_table_chart_has_paper_bars(results: Path):
    svgs = build_report(results, CONFIG, results / "report.html").read_text()
    bars = re.findall(r'<svg class="bar-chart".*?</svg>', svgs, re.S)
    charts = {re.search(r"<text[^>]*>([^<]*)</text>", c).group(1): c for c in bars}
    assert set(charts) == {"synthetic-face: L1", "vox: L1", "vox: AKD", "taichi: L1"}
    assert charts["vox: L1"].count('class="bar"') == 1  # the paper's value alone
    akd = charts["vox: AKD"]
    assert akd.count('class="bar"') == 2  # measured 1.5 and the paper's 1.131
    assert "MTIA paper: 1.131" in akd and "MTIA measured: 1.5" in akd


def test_empty_results_give_notes_not_a_crash(tmp_path: Path):
    out = build_report(tmp_path / "nothing", None, tmp_path / "report.html")
    text = " ".join(" ".join(parse(out).text).split())
    for what in ("table2", "table1", "reconstructions", "training runs", "datasets"):
        assert f"{what}: not produced yet" in text


def test_unreadable_inputs_are_notes(results: Path):
    (results / "table2.parquet").write_bytes(b"not parquet")
    (results / "runs" / "synthetic-face" / "fomm" / "log.csv").write_text("a,b\n1,2\n")
    shutil.rmtree(results / "reconstruction" / "synthetic-face" / "fomm" / CLIP)
    text = " ".join(parse(build_report(results, CONFIG, results / "r.html")).text)
    assert "could not read" in text and "table2.parquet" in text
    assert "log.csv: ValueError: no rows with a step column" in text
    assert "has a prediction" in text  # reconstruction folder without the test clip


def test_cli_writes_the_report(results: Path, capsys):
    out = results / "report.html"
    spec = json.dumps(CONFIG)
    assert main(["report", "--results", str(results), "--spec", spec, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.stat().st_size > 0


def test_gif_strip_and_helpers():
    gif = gif_strip(frames(0, count=5, size=200), frames(3, count=5, size=200), panel=50)
    with Image.open(io.BytesIO(gif)) as image:
        assert image.n_frames == 5 and image.size == (102, 50)
    assert sample_indices(12) == list(range(12))
    assert sample_indices(100, limit=32) == list(range(0, 100, 4))[:32]
    ticks = nice_ticks(0.0, 0.0437)
    assert ticks[0] <= 0 and ticks[-1] >= 0.0437 and len(ticks) <= 7
    assert nice_ticks(0, 90)[-1] >= 90
    bar = svg_bar_chart("t <&>", ["a", "b"], {"measured": [1.0, np.nan], "paper": [2.0, 3.0]})
    assert bar.count('class="bar"') == 3 and "t &lt;&amp;&gt;" in bar and "n/a" in bar
    line = svg_line_chart("l", range(1000), {"x": np.linspace(0, 1, 1000)})
    assert len(re.search(r'points="([^"]*)"', line).group(1).split()) <= 300


LONG_NOTE = "VGG19 randomly initialised: the perceptual loss is not the paper's " * 3


def hand_table() -> pd.DataFrame:
    """Two datasets x (L1 ↓, SSIM ↑) for three methods, by hand: MRAA deviates but has the
    lowest vox L1; MTIA's 0.001 is not a measurement (missing) and must not be the best."""
    rows = []
    values = {
        ("vox", "L1"): {"FOMM": 0.05, "MRAA": 0.04, "MTIA": 0.001},
        ("vox", "SSIM"): {"FOMM": 0.81, "MRAA": 0.70, "MTIA": np.nan},
        ("taichi", "L1"): {"FOMM": 0.07, "MRAA": 0.06, "MTIA": 0.065},
    }
    papers = {"FOMM": 0.043, "MRAA": 0.041, "MTIA": 0.039}
    for (dataset, metric), by_method in values.items():
        for method, value in by_method.items():
            status = {"MRAA": "deviates", "MTIA": "measured"}.get(method, "measured")
            if (dataset, method) == ("vox", "MTIA"):
                status = "missing" if metric == "L1" else "not run"
            paper = papers[method] if metric == "L1" else np.nan
            rows.append(
                table_row(
                    dataset=dataset,
                    method=method,
                    metric=metric,
                    value=value,
                    ci_low=value - 0.005,
                    ci_high=value + 0.005,
                    paper_value=paper,
                    delta=value - paper,
                    status=status,
                    note=LONG_NOTE if method == "MRAA" else "",
                    checkpoint_sha256=f"{dataset}-{method}".ljust(64, "0"),
                )
            )
    return pd.DataFrame(rows)


def cell_texts(html_text: str) -> dict[tuple[str, int], str]:
    """(method, column index) -> the cell's HTML, from a paper-shaped table's body."""
    body = re.search(r"<tbody>(.*?)</tbody>", html_text, re.S).group(1)
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        method = re.search(r'<th class="method"[^>]*>([^<]*)</th>', row).group(1)
        for i, cell in enumerate(re.findall(r"<td[^>]*>.*?</td>", row, re.S)):
            out[(method, i)] = cell
    return out


def test_paper_shape_methods_rows_dataset_metric_columns():
    html_text = wide_table_html(hand_table(), "table2")
    head = re.search(r"<thead>(.*?)</thead>", html_text, re.S).group(1)
    assert re.findall(r'class="dataset">([^<]*)<', head) == ["vox", "taichi"]
    assert re.findall(r'<th colspan="(\d)"', head) == ["2", "1"]
    assert re.findall(r'class="metric">([^<]*)<', head) == ["L1 ↓", "SSIM ↑", "L1 ↓"]
    cells = cell_texts(html_text)
    assert sorted({m for m, _ in cells}) == ["FOMM", "MRAA", "MTIA"]  # methods as rows
    assert len(cells) == 9
    fomm_vox_l1 = cells[("FOMM", 0)]  # ours, its interval, the paper's value, delta
    assert "0.05" in fomm_vox_l1 and "[0.045, 0.055]" in fomm_vox_l1
    assert "paper 0.043" in fomm_vox_l1 and "Δ +0.007" in fomm_vox_l1
    assert "paper" not in cells[("FOMM", 1)]  # no paper value: no paper line
    assert "not run" in cells[("MTIA", 1)] and "–" in cells[("MTIA", 1)]


def test_paper_shape_marks_the_best_per_column():
    cells = cell_texts(wide_table_html(hand_table(), "table2"))
    best = {key for key, cell in cells.items() if "best" in cell.split(">", 1)[0]}
    # vox L1: MRAA's deviating 0.04 (MTIA's 0.001 is missing, not measured); vox SSIM (higher
    # is better): FOMM's 0.81; taichi L1: MRAA's 0.06
    assert best == {("MRAA", 0), ("FOMM", 1), ("MRAA", 2)}
    assert all("<b>" in cells[key] for key in best)
    assert sum("<b>" in cell for cell in cells.values()) == 3
    assert 'class="cell deviates best"' in cells[("MRAA", 0)]  # shown as deviating too
    # the paper's best of a column is underlined: MTIA's 0.039 in both L1 columns
    assert [k for k, c in cells.items() if "paper-best" in c] == [("MTIA", 0), ("MTIA", 2)]
    # a metric with no direction (a parameter count) has no best
    counts = pd.DataFrame(
        [
            table_row(
                dataset="-",
                method=m,
                metric="params_M",
                value=v,
                paper_value=v,
                delta=0.0,
                status="measured",
                note="",
            )
            for m, v in (("a", 1.0), ("b", 2.0))
        ]
    )
    counted = wide_table_html(counts, "table1")
    assert ' best"' not in counted and "<b>" not in counted and "<u" not in counted
    assert (
        'class="dataset"' not in counted and "bold:" not in counted
    )  # nor in its legend  # one header row


def test_paper_shape_notes_once_as_footnotes(results: Path):
    html_text = wide_table_html(hand_table(), "table2")
    assert html_text.count(html.escape(LONG_NOTE.strip())) == 1  # three MRAA cells, one footnote
    cells = cell_texts(html_text)
    refs = {
        re.search(r'class="note-ref"><a href="#table2-note-(\d+)"', cells[("MRAA", i)]).group(1)
        for i in range(3)
    }
    assert refs == {"1"} and 'id="table2-note-1"' in html_text
    assert "note-ref" not in cells[("FOMM", 0)]
    # provenance shared by every row once; the checkpoint per (dataset, method) as lettered
    # footnotes, each cell referring to its own
    assert html_text.count("commit: 0123456789abcdef") == 1
    assert re.search(r'prov-ref"><a href="#table2-prov-a"', cells[("FOMM", 0)])
    assert html_text.count("checkpoint: vox-MRAA") == 1
    # in the report: the paper shape leads, the long format follows (one row per value)
    report = build_report(results, CONFIG, results / "report.html").read_text()
    table2 = report[report.index("<h3>table2</h3>") : report.index("<h3>table1</h3>")]
    assert table2.index('<table class="paper-shape">') < table2.index('class="long-format"')
    assert table2.index('class="long-format"') < table2.index('<table class="results">')
    long_rows = re.search(r'<table class="results">.*?<tbody>(.*?)</tbody>', table2, re.S)
    assert long_rows.group(1).count("<tr") == 3


BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
BROWSER = next((b for b in map(shutil.which, BROWSERS) if b), None)
# run in the page before anything loads: collect errors, then on load report the images
CHECK = """<script>window.__errors = [];
window.addEventListener("error", function (e) {
  __errors.push(String(e.message || (e.target && e.target.tagName) || "error")); }, true);
window.addEventListener("load", function () {
  var images = Array.from(document.images), out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length,
    svgs: document.querySelectorAll("svg").length,
    tables: document.querySelectorAll("table").length, errors: __errors,
    paper_shape: document.querySelectorAll("table.paper-shape").length,
    best_bold: Array.from(document.querySelectorAll("td.cell.best b")).map(function (b) {
      return Number(getComputedStyle(b).fontWeight) >= 700; }),
    long_rows: document.querySelectorAll("details.long-format table.results tbody tr").length,
    footnotes: document.querySelectorAll("ol.footnotes li").length});
  document.body.appendChild(out); });</script>"""


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed (apt: chromium)")
def test_report_opens_in_a_headless_browser(results: Path, tmp_path: Path):
    report = build_report(results, CONFIG, results / "report.html").read_text()
    page = tmp_path / "check.html"
    page.write_text(report.replace("<head>", "<head>" + CHECK, 1))
    proc = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="browser-check">([^<]*)</pre>', proc.stdout)
    assert found, proc.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["errors"] == [] and "CONSOLE" not in proc.stderr
    assert check["images"] == 2 and check["broken"] == 0
    assert check["svgs"] >= 5 and check["tables"] >= 3
    # each table in the paper's shape, the best in bold, notes as footnotes, the long format
    assert check["paper_shape"] == 2  # table2 and cpab_table1 (table1 is absent)
    assert check["best_bold"] == [
        True,
        True,
    ]  # table2: synthetic-face L1, vox AKD; cpab_table1: none
    assert check["long_rows"] == 4 and check["footnotes"] == 3
