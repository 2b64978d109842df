"""The dashboard's files: served by the API at `/` with a strict CSP, no inline script, the
vendored chart library exactly as pinned."""

import hashlib
import re

from app.dashboard import CONTENT_SECURITY_POLICY, STATIC_DIR


def test_page_and_files_are_served_with_security_headers(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    script = api.get("/dashboard/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for response in (page, script):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
    assert api.get("/dashboard/nope.js").status_code == 404
    assert "/" not in api.get("/openapi.json").json()["paths"]


def test_policy_forbids_inline_script_and_other_origins():
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    html = (STATIC_DIR / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # every script is a file
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers either
    for path in STATIC_DIR.rglob("*.js"):
        assert "innerHTML" not in path.read_text() or path.parent.name == "uplot", path


def test_vendored_uplot_matches_its_recorded_hashes():
    vendor = STATIC_DIR / "vendor" / "uplot"
    recorded = dict(line.split()[::-1] for line in (vendor / "VERSION").read_text().splitlines()
                    if re.fullmatch(r"[0-9a-f]{64}  \S+", line))
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in recorded.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest
    assert "MIT" in (vendor / "LICENSE").read_text()
