"""The headless-Chromium harness (tests/browser.py) on small synthetic pages.

Skipped, with the reason shown, where chromium is not installed
(scripts/ensure-chromium.sh installs it when `make test` runs as root with apt).
"""

import base64
import io
import json

import numpy as np
import pytest

from .browser import SKIP_REASON, chromium_binary, open_in_chromium


@pytest.fixture
def need_chromium():
    if chromium_binary() is None:
        pytest.skip(SKIP_REASON)


def png_data_uri(shape=(6, 10)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, np.linspace(0, 1, shape[0] * shape[1]).reshape(shape), format="png", cmap="gray")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_page(tmp_path, body, head=""):
    path = tmp_path / "report.html"
    path.write_text(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>t</title>{head}</head>'
        f"<body>{body}</body></html>\n",
        encoding="utf-8",
    )
    return path


def test_valid_embedded_png_loads(tmp_path, need_chromium):
    result = open_in_chromium(write_page(tmp_path, f'<p>z-space é</p><img alt="ok" src="{png_data_uri()}">'))
    assert result["errors"] == []
    [img] = result["images"]
    assert img["src"].startswith("data:image/png;base64,")
    assert (img["naturalWidth"], img["naturalHeight"]) == (10, 6)
    assert img["complete"] is True


def test_broken_data_uri_is_reported(tmp_path, need_chromium):
    good = png_data_uri()
    broken = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode("ascii")
    result = open_in_chromium(write_page(tmp_path, f'<img src="{good}"><img src="{broken}">'))
    good_img, bad_img = result["images"]
    assert good_img["naturalWidth"] > 0
    assert bad_img["naturalWidth"] == 0 and bad_img["naturalHeight"] == 0
    assert any("failed to load <img>" in e for e in result["errors"]), result["errors"]


def test_script_error_is_reported(tmp_path, need_chromium):
    page = write_page(tmp_path, '<script>throw new Error("boom from the page");</script><p>x</p>')
    result = open_in_chromium(page)
    assert result["images"] == []
    assert any("boom from the page" in e for e in result["errors"]), result["errors"]


def test_missing_chromium_skips_cleanly(monkeypatch, tmp_path):
    """Without chromium the harness raises with the skip reason (the tests above skip on it)."""
    monkeypatch.setattr("tests.browser.chromium_binary", lambda: None)
    with pytest.raises(RuntimeError, match="chromium not installed"):
        open_in_chromium(write_page(tmp_path, "<p>x</p>"))


# ---- zspace's own pages: the table of contents, sortable tables, the comparison page ----------
TOC_AND_SORT = """
var links = Array.prototype.map.call(document.querySelectorAll("nav.toc a"), function (a) {
  return a.getAttribute("href").slice(1); });
var heads = Array.prototype.map.call(document.querySelectorAll("h2"), function (h) { return h.id; });
var unresolved = links.filter(function (id) { return !document.getElementById(id); });
var out = {links: links, heads: heads, unresolved: unresolved, sorted: {}};
var t = Array.prototype.find.call(document.querySelectorAll("table.sortable"), function (t) {
  return t.tHead.textContent.indexOf(HEADER) >= 0; });
if (t) {
  var ths = t.tHead.rows[0].cells;
  var i = Array.prototype.findIndex.call(ths, function (th) { return th.textContent.indexOf(HEADER) >= 0; });
  function col() { return Array.prototype.map.call(t.tBodies[0].rows, function (r) {
    var c = r.cells[i]; var v = c.getAttribute("data-v"); return v === null ? c.textContent : +v; }); }
  out.sorted.before = col();
  ths[i].click(); out.sorted.asc = col(); out.sorted.ascClass = ths[i].className;
  ths[i].click(); out.sorted.desc = col(); out.sorted.descClass = ths[i].className;
  out.sorted.hover = t.tBodies[0].rows[0].cells[i].getAttribute("title");
}
out.warnings = Array.prototype.filter.call(document.querySelectorAll("[role=alert]"), function (w) {
  return w.getBoundingClientRect().height > 0; }).length;
out.points = document.querySelectorAll("svg circle title").length;
out.columns = document.querySelector("table") ? document.querySelector("table").tHead.rows[0].cells.length : 0;
return out;
"""


def check(header: str) -> str:
    return TOC_AND_SORT.replace("HEADER", json.dumps(header))


def test_sortable_table_and_toc_of_a_zspace_page(tmp_path, need_chromium):
    from zspace.report.page import num_cell, page, table

    rows = [[f"<td>{name}</td>", num_cell(v)] for name, v in (("b", 3), ("a", 10), ("d", 2.5), ("c", -1))]
    path = tmp_path / "p.html"
    path.write_text(page("t", [("First part", table(["name", "value"], rows)), ("Second", "<p>x</p>")]))
    result = open_in_chromium(path, check=check("value"))
    assert result["errors"] == []
    c = result["check"]
    assert c["links"] == c["heads"] == ["first-part", "second"] and c["unresolved"] == []
    assert c["sorted"]["before"] == [3, 10, 2.5, -1]
    assert c["sorted"]["asc"] == [-1, 2.5, 3, 10] and "asc" in c["sorted"]["ascClass"]      # numbers, not text
    assert c["sorted"]["desc"] == [10, 3, 2.5, -1] and "desc" in c["sorted"]["descClass"]
    names = open_in_chromium(path, check=check("name"))["check"]["sorted"]
    assert names["asc"] == ["a", "b", "c", "d"]


def test_run_report_in_chromium(report_page, need_chromium):
    result = open_in_chromium(report_page, check=check("KL (nats)"))
    assert result["errors"] == []
    assert result["images"] and all(img["naturalWidth"] > 0 for img in result["images"])
    c = result["check"]
    assert c["unresolved"] == [] and c["links"] == c["heads"] and "evaluations" in c["links"]
    kl = c["sorted"]
    assert kl["before"] == sorted(kl["before"], reverse=True)              # ranked by KL on the page
    assert kl["asc"] == sorted(kl["before"]) and kl["desc"] == sorted(kl["before"], reverse=True)
    assert "nats" in kl["hover"]                                           # full value and unit on hover
    assert c["warnings"] >= 2                                              # the stale evaluation, shown
    assert c["points"] >= 3 * 2 * 3                                        # 3 terms x 2 splits x 3 epochs


def test_comparison_page_in_chromium(report_runs, tmp_path, need_chromium):
    from zspace.cli import main

    out = tmp_path / "cmp.html"
    assert main(["report", *map(str, report_runs), "--out", str(out)]) == 0
    result = open_in_chromium(out, check=check("measure"))
    assert result["errors"] == []
    assert len(result["images"]) == 4 and all(img["naturalWidth"] > 0 for img in result["images"])
    c = result["check"]
    assert c["unresolved"] == [] and c["columns"] == 3                     # "", a, b
    assert "configuration-differences" in c["links"]
    assert c["sorted"]["asc"] == sorted(c["sorted"]["before"], key=str.lower)
    assert c["points"] >= 2 * 3 * 2                                        # both runs' test curves
