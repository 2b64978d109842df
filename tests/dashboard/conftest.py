"""Browser tests: the dashboard in Debian's headless Chromium, driven by Playwright.

The server is a real `trajx serve` (embedded worker) in a child process; jobs are tiny
digits MLP transfers. Chromium is the system's (`.ci/setup` installs it); Playwright
never downloads a browser of its own.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.core.persistence.db import make_engine, make_session_factory
from tests.conftest import TenantKey, make_tenant, service_unavailable
from trajx.client import Client
from trajx.demo.server import EmbeddedServer

CHROMIUM = Path(os.environ.get("TRAJX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARCH = {"name": "mlp", "config": {"in_features": 64, "hidden": [16], "num_classes": 10}}


@dataclass(frozen=True)
class Inputs:
    source: list[str]
    train: str
    eval: str
    bad_train: str

    def spec(self, steps: int, method: str = "fgmt", targets: int = 1) -> dict:
        return {"method": method, "arch": ARCH, "source": self.source, "train_data": self.train,
                "eval_data": self.eval, "targets": [{"seed": seed} for seed in range(1, targets + 1)],
                "params": {"steps": steps, "batch_size": 64, "device": "cpu"}}

    def average_spec(self) -> dict:
        """An EMA sweep over the two source checkpoints: two candidates, one chosen."""
        return {"kind": "average", "arch": ARCH, "checkpoints": self.source, "train_data": self.train,
                "eval_data": self.eval, "method": {"name": "ema", "decay": 0.5}, "sweep": {"decay": [0.3, 0.6]},
                "params": {"device": "cpu", "batch_size": 64}}

    def align_spec(self) -> dict:
        return {"kind": "align", "arch": ARCH, "model_a": self.source[0], "model_b": self.source[1],
                "train_data": self.train, "eval_data": self.eval, "params": {"device": "cpu", "batch_size": 64}}


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[EmbeddedServer]:
    # No auth cache: a revoked key is refused at once.
    with EmbeddedServer(tmp_path_factory.mktemp("server"),
                        env={"OMP_NUM_THREADS": "1", "TRAJX_AUTH_CACHE_SECONDS": "0"}) as running:
        yield running


@pytest.fixture(scope="session")
def client(server) -> Iterator[Client]:
    with Client(server.url, server.api_key) as session:
        yield session


def write_inputs(out: Path) -> list[Path]:
    """theta0/thetaT checkpoints, the digits train and held-out shards, and a shard whose
    labels lie outside the model's 10 classes (a job on it fails on the worker)."""
    from trajx.demo.source import load_digits_split
    from trajx.engine.zoo import init_state_dict

    for name, seed in (("theta0", 0), ("thetaT", 100)):
        save_file(init_state_dict(ARCH["name"], ARCH["config"], seed), str(out / f"{name}.safetensors"))
    split = load_digits_split()
    split.save_shards(out)
    save_file({"inputs": split.train_inputs[:64], "targets": torch.full((64,), 99, dtype=torch.int64)},
              str(out / "bad_targets.safetensors"))
    return sorted(out.glob("*.safetensors"))


def upload_inputs(client: Client, out: Path) -> Inputs:
    ids = {path.stem: client.upload(path).id for path in write_inputs(out)}
    return Inputs([ids["theta0"], ids["thetaT"]], ids["train"], ids["heldout"], ids["bad_targets"])


@pytest.fixture(scope="session")
def inputs(client, tmp_path_factory) -> Inputs:
    return upload_inputs(client, tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="session")
def other_tenant(server) -> TenantKey:
    engine = make_engine(f"sqlite:///{server.data_dir / 'trajx.db'}")
    try:
        return make_tenant(make_session_factory(engine))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        service_unavailable(f"no Chromium at {CHROMIUM} (bash .ci/setup installs Debian's)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


class Console:
    """Console errors and uncaught page errors seen by a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    opened.console = Console(opened)
    yield opened
    context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where the browser tests save each page at 1280 and 390 px (`$TRAJX_SCREENSHOTS`, else a tmp dir)."""
    chosen = os.environ.get("TRAJX_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def snap_both_widths(page, directory: Path, name: str) -> None:
    """Full-page screenshots at 1280 and 390 px wide; at both the page itself never scrolls
    sideways (wide tables scroll inside their own box)."""
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)  # charts redraw at their new width
        page.screenshot(path=str(directory / f"{name}-{width}.png"), full_page=True)
        wide = page.evaluate("""width => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > width + 1 && !e.closest('.scroll, pre, .timeline'))
            .slice(0, 5).map(e => `${e.tagName}#${e.id}.${e.className}`)""", width)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{name} overflows at {width} px: {wide}"
    page.set_viewport_size({"width": 1280, "height": 900})


def sign_in(page, key: str, url: str = "/") -> None:
    page.goto(url)
    page.fill("#api-key", key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
