"""Open a local HTML file in headless Chromium and report its images and errors.

Used by the end-to-end report test. Chromium is Debian's package, installed by
scripts/ensure-chromium.sh (run by `make test`); without it the browser tests skip.

How it works: the page is copied to a temporary folder with a small script put at
the very start of <head>. That script records JavaScript errors (window.onerror)
and failed resource loads (a capturing "error" listener on window, which sees
<img> failures too), and on "load" writes a JSON summary of document.images and
the errors into a <pre id="__browser_check__">. Chromium runs with --dump-dom and
the summary is read back from the dumped DOM. A <meta charset="utf-8"> goes
first, since the probe pushes the page's own one past the 1024 bytes scanned. No network is used: file:// and
data: URIs only.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["SKIP_REASON", "chromium_binary", "open_in_chromium"]

SKIP_REASON = "chromium not installed (scripts/ensure-chromium.sh could not install it): browser checks skipped"

_MARKER = "__browser_check__"

_PROBE = """<meta charset="utf-8"><script>
(function () {
  var errors = [];
  window.onerror = function (message, source, line) {
    errors.push(String(message) + (line ? " (line " + line + ")" : ""));
  };
  window.addEventListener("error", function (event) {
    var t = event.target;
    if (t && t !== window && t.tagName) {
      var src = t.currentSrc || t.src || t.href || "";
      errors.push("failed to load <" + t.tagName.toLowerCase() + "> " + String(src).slice(0, 80));
    }
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    errors.push("unhandled rejection: " + String(event.reason));
  });
  window.addEventListener("load", function () {
    var images = Array.prototype.map.call(document.images, function (img) {
      return {src: String(img.getAttribute("src") || "").slice(0, 40),
              naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
              complete: img.complete};
    });
    var checked = null;
    if (window.__zspace_check__) {      // the caller's check, after the page's own scripts ran
      try { checked = window.__zspace_check__(); } catch (e) { errors.push("check failed: " + e); }
    }
    var pre = document.createElement("pre");
    pre.id = "%s";
    pre.textContent = JSON.stringify({images: images, errors: errors, check: checked});
    (document.body || document.documentElement).appendChild(pre);
  });
})();
</script>""" % _MARKER


def chromium_binary() -> str | None:
    """Path of the chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _stderr_tail(stderr: str | bytes | None, limit: int = 2000) -> str:
    """Chromium's stderr without the noise it always prints in containers (no D-Bus)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = [
        line for line in (stderr or "").splitlines()
        if "dbus" not in line.lower() and "unexpected operator" not in line
    ]
    return "\n".join(lines)[-limit:]


def _inject(page: str, check: str | None = None) -> str:
    """Put the probe script at the very start of <head> (adding a <head> if needed), with the
    caller's check function when given."""
    probe = _PROBE + (f"<script>window.__zspace_check__ = function () {{ {check} }};</script>" if check else "")
    m = re.search(r"<head\b[^>]*>", page, flags=re.IGNORECASE)
    if m:
        return page[: m.end()] + probe + page[m.end():]
    m = re.search(r"<html\b[^>]*>", page, flags=re.IGNORECASE)
    if m:
        return page[: m.end()] + "<head>" + probe + "</head>" + page[m.end():]
    return probe + page


def open_in_chromium(html_path: Path, timeout: float = 60, check: str | None = None) -> dict:
    """Load ``html_path`` in headless Chromium; return what the page saw.

    Returns ``{"images": [{"src", "naturalWidth", "naturalHeight", "complete"}, ...],
    "errors": [str, ...], "check": ...}`` where ``src`` is the first 40 characters of each
    <img>'s src attribute, ``errors`` holds JavaScript errors and failed resource loads, and
    ``check`` is what ``check`` (the body of a JavaScript function, run on "load" after the
    page's own scripts: it may click, sort, read the DOM) returned, as JSON (None without one).
    Raises RuntimeError when chromium is missing, fails, or the summary is absent.
    """
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError(SKIP_REASON)
    html_path = Path(html_path)
    with tempfile.TemporaryDirectory(prefix="zspace-chromium-") as tmp:
        tmp = Path(tmp)
        # A copy in a temporary folder: reports are self-contained (data: URIs only).
        page = tmp / "page.html"
        page.write_text(_inject(html_path.read_text(encoding="utf-8"), check), encoding="utf-8")
        cmd = [
            binary,
            "--headless=new",
            "--no-sandbox",  # tests may run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            f"--user-data-dir={tmp / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"chromium timed out after {timeout}s on {html_path}; stderr tail:\n{_stderr_tail(exc.stderr)}"
            ) from None
    m = re.search(r'<pre id="%s">(.*?)</pre>' % _MARKER, proc.stdout, flags=re.DOTALL)
    if m is None:
        raise RuntimeError(
            f"chromium (exit {proc.returncode}) gave no page summary for {html_path}; "
            f"stderr tail:\n{_stderr_tail(proc.stderr)}"
        )
    summary = json.loads(html.unescape(m.group(1)))
    return {"images": summary["images"], "errors": summary["errors"], "check": summary.get("check")}
