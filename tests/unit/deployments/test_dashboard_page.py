"""The dashboard page (``rayfleet/deployments/dashboard.html``) in headless Chromium.

A tiny Starlette app on a loopback port serves the page and a ``/-/validation``
document made by the real :class:`ValidatorCore` after five and a half simulated
minutes of traffic: a canary at its 50% step after a shadow phase, with input
drift; a canary rolled back on errors; a canary in its shadow phase, with
agreement; a model without a rollout. Chromium loads the page, lets its polling
run in virtual time, and the tests read the DOM it rendered; one saves a
screenshot to ``build/test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from rayfleet.platform.config.rollout import RolloutSpec
from rayfleet.platform.config.spec import (
    ModelSpec,
    ObservationSpec,
    PlatformSpec,
    VersionSpec,
)
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.validation.observation import Observation, ObservationRow
from tests.browser import dump_dom, ensure_chromium, screenshot
from tests.observations import ingest_rows

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "rayfleet" / "deployments" / "dashboard.html"
ARTIFACTS = ROOT / "build" / "test-artifacts"

T0 = 1_767_268_800.0  # 2026-01-01 12:00 UTC
SIM_S = 330
FEATURES = 8


# -- a realistic /-/validation document ------------------------------------


def _spec() -> PlatformSpec:
    digits_rollout = RolloutSpec(
        steps=(10.0, 25.0, 50.0, 100.0),
        shadow_percent=20.0,
        shadow_min_pairs=40,
        min_requests_per_step=60,
        min_step_s=60.0,
    )
    return PlatformSpec(
        store="memory://unused",
        observations=ObservationSpec(bucket_s=10.0, horizon_s=3600.0),
        models=(
            ModelSpec(
                name="digits",
                versions=(VersionSpec(name="v1"), VersionSpec(name="v2", canary=True)),
                rollout=digits_rollout,
            ),
            ModelSpec(
                name="fraud",
                versions=(
                    VersionSpec(name="2024-11"),
                    VersionSpec(name="2025-01", canary=True),
                ),
                rollout=RolloutSpec(min_requests_per_step=40, min_step_s=20.0),
            ),
            ModelSpec(
                name="sentiment",
                versions=(VersionSpec(name="v3"), VersionSpec(name="v4", canary=True)),
                rollout=RolloutSpec(shadow_percent=50.0, shadow_min_pairs=5000),
            ),
            ModelSpec(name="iris", versions=(VersionSpec(name="v7"),)),
        ),
    )


# Per model: requests per second, classes predicted (None: a score in [0, 1]),
# shadow agreement; per version: median latency in ms and 5xx share.
RATES = {"digits": 14, "fraud": 6, "sentiment": 4, "iris": 2}
CLASSES = {"digits": 10, "fraud": None, "sentiment": 3, "iris": 3}
AGREEMENT = {"digits": 0.97, "sentiment": 0.93}
MEDIAN_MS = {"v1": 4.0, "v2": 4.6, "2024-11": 12.0, "2025-01": 14.0, "v3": 25.0}
MEDIAN_MS |= {"v4": 21.0, "v7": 2.0}
FAILING = {"v1": 0.003, "v2": 0.004, "2024-11": 0.002, "2025-01": 0.3, "v3": 0.005}
FAILING |= {"v4": 0.002, "v7": 0.01}


def _features(
    rng: np.random.Generator, model: str, version: str
) -> tuple[float, ...] | None:
    if model != "digits":
        return None
    values = rng.normal(0.0, 1.0, FEATURES)
    if version == "v2":
        values[3] += 0.9  # a major shift in one feature
        values[5] *= 1.5  # a moderate one in another
    return tuple(float(v) for v in values)


def _prediction(rng: np.random.Generator, model: str) -> float:
    classes = CLASSES[model]
    return float(rng.beta(2, 9)) if classes is None else float(rng.integers(classes))


def _simulate(core: ValidatorCore, seed: int = 7) -> None:
    """Traffic by the core's own plans, ticks every 5 s, a canary that loads late."""
    rng = np.random.default_rng(seed)
    choose = random.Random(seed)
    ready = {key: True for key in core.stats}
    # The digits canary takes two minutes to load: the rollout waits in PENDING.
    ready[("digits", "v2")] = False
    serial = 0
    for second in range(SIM_S):
        now = T0 + second
        ready[("digits", "v2")] = second >= 120
        plans = core.plans()
        rows: list[ObservationRow] = []
        for model, rate in RATES.items():
            plan = plans[model]
            for _ in range(int(rng.poisson(rate))):
                serial += 1
                version = plan.choose(rand=choose.random)
                # A slow wave, lognormal noise and a heavy tail.
                wave = 1 + 0.15 * np.sin(second / 40)
                tail = 2.5 if rng.random() < 0.01 else 1.0
                noise = float(rng.lognormal(0, 0.25))
                latency = MEDIAN_MS[version] * wave * noise * tail
                failed = rng.random() < FAILING[version]
                primary = Observation(
                    model=model,
                    version=version,
                    ts=now + float(rng.uniform(0, 1)),
                    latency_ms=latency,
                    model_ms=latency * 0.8,
                    status=503 if failed else 200,
                    features=_features(rng, model, version),
                    prediction=None if failed else _prediction(rng, model),
                    confidence=0.9,
                    request_id=f"r{serial}",
                )
                rows.append(primary.to_row())
                if not plan.shadow or choose.random() * 100 >= plan.shadow_percent:
                    continue
                answer = primary.prediction
                if answer is not None and rng.random() > AGREEMENT[model]:
                    answer = (answer + 1) % (CLASSES[model] or 1)
                shadow = Observation(
                    model=model,
                    version=plan.shadow,
                    ts=primary.ts + 0.003,
                    latency_ms=latency * 0.9,
                    model_ms=latency * 0.7,
                    status=200,
                    features=_features(rng, model, plan.shadow),
                    prediction=answer,
                    confidence=0.9,
                    shadow_of=version,
                    request_id=primary.request_id,
                )
                rows.append(shadow.to_row())
        ingest_rows(core, rows, router="router-a", dropped=3 * (second // 100))
        if second % 5 == 4:
            core.tick(now + 1, ready)


def _core() -> ValidatorCore:
    rng = np.random.default_rng(1)
    # 1000 reference rows: against the ~190 rows the canary's window samples, few
    # enough that a moderate shift can stand out from the noise and unshifted
    # features read "none" rather than "insufficient" (400 were too few).
    reference = {f"f{i}": rng.normal(0.0, 1.0, 1000) for i in range(FEATURES)}
    return ValidatorCore(
        _spec(), "demo", MemoryStateStore(), {("digits", "v2"): reference}, now=T0
    )


def validation_snapshot() -> dict[str, Any]:
    """``/-/validation`` after the simulated rollout."""
    core = _core()
    _simulate(core)
    return core.snapshot(T0 + SIM_S)


def empty_snapshot() -> dict[str, Any]:
    """``/-/validation`` of a Validator that has seen no request yet."""
    return _core().snapshot(T0)


# -- a tiny server for the page and its data --------------------------------


class _Data:
    """What each mount of the page serves at ``/-/validation``."""

    def __init__(self, snapshot: dict[str, Any], empty: dict[str, Any]) -> None:
        self.snapshot = snapshot
        self.empty = empty
        self.flaky_calls = 0


# Documents with pieces missing: an older or newer Validator, a model mid-start.
PARTIAL = {
    "models": [
        {"name": "bare"},
        {
            "name": "odd",
            "stable": "v1",
            "plan": {"weights": {"v1": 100}},
            "versions": [{"name": "v1", "series": [{"start": T0, "requests": 0}]}],
            "rollout": {"phase": "canary", "canary_version": "v2", "gates": [{}]},
            "comparison": {"input_drift": {"features": [{"name": "f0"}]}},
        },
    ]
}


def _app(data: _Data) -> Starlette:
    page = PAGE.read_text(encoding="utf-8")

    async def dashboard(request: Request) -> Response:
        return HTMLResponse(page)

    async def validation(request: Request) -> Response:
        return JSONResponse(data.snapshot)

    async def empty(request: Request) -> Response:
        return JSONResponse(data.empty)

    async def partial(request: Request) -> Response:
        return JSONResponse(PARTIAL)

    async def flaky(request: Request) -> Response:
        # The first answer is good; then the Validator is gone.
        data.flaky_calls += 1
        if data.flaky_calls == 1:
            return JSONResponse(data.snapshot)
        return JSONResponse({"error": "validator restarting"}, status_code=503)

    routes = [Route("/-/dashboard", dashboard), Route("/-/validation", validation)]
    # Mounted under a prefix, the page must find its data under the same prefix.
    mounts = {"/empty": empty, "/partial": partial, "/apps/demo/flaky": flaky}
    for prefix, handler in mounts.items():
        routes.append(Route(f"{prefix}/-/dashboard", dashboard))
        routes.append(Route(f"{prefix}/-/validation", handler))
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def chromium() -> str:
    # First, so that a machine without a browser skips before any other work.
    return ensure_chromium()


@pytest.fixture(scope="module")
def data(chromium: str) -> _Data:
    return _Data(validation_snapshot(), empty_snapshot())


@pytest.fixture(scope="module")
def server(data: _Data) -> Iterator[str]:
    """The base URL of the app, served by uvicorn in a thread for this module."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app(data), lifespan="off", ws="none", log_level="warning", access_log=False
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- reading the dumped DOM ----------------------------------------------------


class _Node:
    """An element of the dumped page: tag, attributes, children and text in order."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: _Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.content: list[_Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        """The visible text inside, whitespace collapsed."""
        parts = [p if isinstance(p, str) else p.text() for p in self.content]
        return " ".join(" ".join(parts).split())

    def walk(self) -> Iterator[_Node]:
        for child in self.content:
            if isinstance(child, _Node):
                yield child
                yield from child.walk()

    def find(self, tag: str = "", cls: str = "", **attrs: str) -> list[_Node]:
        """Descendants with the tag, class and attribute values given."""
        return [
            node
            for node in self.walk()
            if (not tag or node.tag == tag)
            and (not cls or cls in node.classes)
            and all(node.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(self, tag: str = "", cls: str = "", **attrs: str) -> _Node:
        found = self.find(tag, cls, **attrs)
        assert len(found) == 1, f"{len(found)} matches of {tag}.{cls} {attrs}"
        return found[0]


class _Tree(HTMLParser):
    """The DOM Chromium dumped, as a small tree (no script text)."""

    VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "col", "source"})

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("#root", {}, None)
        self._at = self.root
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {k: v or "" for k, v in attrs}, self._at)
        self._at.content.append(node)
        if tag not in self.VOID:
            self._at = node

    def handle_endtag(self, tag: str) -> None:
        node: _Node | None = self._at
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self._at = node.parent

    def handle_data(self, data: str) -> None:
        if self._at.tag not in ("script", "style"):
            self._at.content.append(data)


def _load(url: str, wait_ms: int) -> _Node:
    return _Tree(dump_dom(url, wait_ms=wait_ms)).root


# -- the tests -----------------------------------------------------------------


def test_the_simulation_covers_every_rollout_state(data: _Data) -> None:
    """The scenario the page tests below rely on, checked on its own."""
    models = {m["name"]: m for m in data.snapshot["models"]}
    phases = {n: m["rollout"] and m["rollout"]["phase"] for n, m in models.items()}
    assert phases == {
        "digits": "canary",
        "fraud": "rolled_back",
        "sentiment": "shadow",
        "iris": None,
    }
    drift = models["digits"]["comparison"]["input_drift"]
    assert {f["band"] for f in drift["features"]} >= {"none", "moderate", "major"}
    assert models["sentiment"]["comparison"]["agreement"]["pairs"] > 0
    assert models["sentiment"]["plan"]["shadow"] == "v4"
    assert models["iris"]["comparison"] is None
    assert data.snapshot["observations"]["dropped"] > 0


def test_dashboard_renders_the_validation_snapshot(server: str, data: _Data) -> None:
    dom = _load(f"{server}/-/dashboard", wait_ms=2500)
    body = dom.one("body")
    assert body.attrs["data-status"] == "ok"
    assert dom.one(id="error").attrs.get("hidden") is not None
    assert re.search(r"updated \d\d:\d\d:\d\d", dom.one(id="updated").text())

    models = dom.one(id="models")
    names = [card.attrs["data-model"] for card in models.find(cls="model")]
    assert names == [m["name"] for m in data.snapshot["models"]]
    by_name = {m["name"]: m for m in data.snapshot["models"]}

    for name, model in by_name.items():
        card = models.one(cls="model", data_model=name)
        assert card.one("h2").text() == name
        rollout = model["rollout"]
        phase = card.one(cls="rollout-phase")
        assert phase.attrs["data-phase"] == (rollout["phase"] if rollout else "none")
        weights = card.one(cls="weights")
        shown = {w.attrs["data-version"]: w for w in weights.find(cls="weight")}
        assert set(shown) == set(model["plan"]["weights"])
        for version, weight in model["plan"]["weights"].items():
            assert float(shown[version].attrs["data-weight"]) == pytest.approx(weight)
        # Every version with traffic draws p50 and p99 lines and an error line.
        latency = card.one("svg", cls="latency-chart")
        errors = card.one("svg", cls="error-chart")
        for version in model["versions"]:
            series, label = version["series"], version["name"]
            lines = latency.find("path", data_version=label)
            if any(point["p50_ms"] is not None for point in series):
                assert {p.attrs["data-series"] for p in lines} == {"p50", "p99"}
                assert all(p.attrs["d"].startswith("M") for p in lines)
            if any(point["requests"] for point in series):
                assert errors.find("path", data_version=label)
        if rollout is None:
            assert not card.find("table", cls="gates")
            continue
        gates = card.one("table", cls="gates").one("tbody").find("tr")
        assert [(g.attrs["data-gate"], g.attrs["data-verdict"]) for g in gates] == [
            (g["name"], g["verdict"]) for g in rollout["gates"]
        ]
        # Latency gates say which time they judged; the others, none.
        assert [g.attrs["data-timing"] for g in gates] == [
            g["timing"] or "" for g in rollout["gates"]
        ]
        history = card.one("ol", cls="timeline").find("li")
        assert len(history) == len(rollout["history"])
        assert history[-1].one(cls="reason").text() == rollout["history"][-1]["reason"]
        assert card.one(cls="rollout-weight").text() == f"{rollout['weight']:g}%"

    # The live canary: phase, step, drift rows sorted by PSI net of its noise,
    # prediction drift.
    digits = models.one(cls="model", data_model="digits")
    assert digits.one(cls="rollout-phase").text() == "canary"
    assert digits.one(cls="rollout-canary").text() == "v2"
    live = by_name["digits"]["rollout"]
    step = f"{live['step_index'] + 1} of {len(live['steps'])}"
    assert digits.one(cls="rollout-step").text() == step
    assert digits.one(cls="step", data_state="current").text() == f"{live['weight']:g}%"
    rows = digits.one("table", cls="drift").one("tbody").find("tr")
    features = by_name["digits"]["comparison"]["input_drift"]["features"]
    expected = sorted(features, key=lambda f: f["psi_corrected"], reverse=True)[:15]
    assert [r.attrs["data-feature"] for r in rows] == [f["name"] for f in expected]
    assert [r.attrs["data-band"] for r in rows] == [f["band"] for f in expected]
    assert rows[0].attrs["data-band"] == "major"
    assert "categorical" in digits.one(cls="prediction-drift").text()

    # The canary rolled back on errors shows its failed gate.
    fraud = models.one(cls="model", data_model="fraud")
    assert fraud.one(cls="rollout-phase").text() == "rolled back"
    failed = fraud.one("tr", data_verdict="fail")
    assert failed.attrs["data-gate"] == "error_rate_delta"
    assert fraud.one(cls="verdict-fail").text() == "fail"
    assert "numeric" in fraud.one(cls="prediction-drift").text()
    assert "no reference data" in fraud.one(cls="drift-panel").text()

    # The shadowed canary: shadow percent and agreement on its pairs.
    sentiment = models.one(cls="model", data_model="sentiment")
    plan = by_name["sentiment"]["plan"]
    assert f"{plan['shadow_percent']:g}% of requests shadowed to v4" in sentiment.text()
    agreement = by_name["sentiment"]["comparison"]["agreement"]
    shown = sentiment.one(cls="agreement")
    assert shown.attrs["data-pairs"] == str(agreement["pairs"])
    assert f"{agreement['rate'] * 100:.1f}%" in shown.text()

    # A model without a rollout shows its traffic and charts only.
    iris = models.one(cls="model", data_model="iris")
    assert iris.one(cls="rollout-phase").text() == "no rollout"
    assert not iris.find("table", cls="drift")

    events = dom.one("ul", cls="events").find("li")
    assert len(events) == len(data.snapshot["events"])
    newest = data.snapshot["events"][-1]
    assert events[0].attrs["data-kind"] == newest["kind"]
    assert newest["reason"] in events[0].text()


def test_dashboard_screenshot(server: str) -> None:
    shot = screenshot(
        f"{server}/-/dashboard",
        ARTIFACTS / "dashboard.png",
        width=1440,
        height=3200,
        wait_ms=2500,
    )
    assert shot.stat().st_size > 50_000


def test_dashboard_waits_for_data_without_traffic(server: str) -> None:
    dom = _load(f"{server}/empty/-/dashboard", wait_ms=2500)
    assert dom.one("body").attrs["data-status"] == "ok"
    digits = dom.one(cls="model", data_model="digits")
    assert digits.one(cls="rollout-phase").attrs["data-phase"] == "pending"
    for chart in ("latency-chart", "error-chart"):
        svg = digits.one("svg", cls=chart)
        assert not svg.find("path")
        assert "waiting for data" in svg.text()
    drift = digits.one(cls="drift-panel").text()
    assert "Waiting for data" in drift
    assert "no shadow pairs" in drift
    # Starting the rollouts was news already.
    events = dom.one("ul", cls="events").find("li")
    assert [e.attrs["data-kind"] for e in events] == ["rollout_started"] * 3


def test_dashboard_keeps_data_and_shows_error_when_the_validator_fails(
    server: str, data: _Data
) -> None:
    data.flaky_calls = 0
    dom = _load(f"{server}/apps/demo/flaky/-/dashboard", wait_ms=5000)
    body = dom.one("body")
    assert data.flaky_calls >= 2, "the page polls again after its first load"
    assert body.attrs["data-status"] == "error"
    assert int(body.attrs["data-fetches"]) >= 2
    assert "stale" in body.classes
    banner = dom.one(id="error")
    assert banner.attrs.get("hidden") is None
    text = banner.text()
    assert "/apps/demo/flaky/-/validation" in text
    assert "503" in text and "validator restarting" in text
    assert "showing the data from" in text
    # The data of the first poll is still on the page.
    models = dom.one(id="models")
    assert [c.attrs["data-model"] for c in models.find(cls="model")] == [
        m["name"] for m in data.snapshot["models"]
    ]
    assert models.one(cls="model", data_model="digits").one("table", cls="drift")


def test_dashboard_survives_documents_with_pieces_missing(server: str) -> None:
    dom = _load(f"{server}/partial/-/dashboard", wait_ms=2500)
    assert dom.one("body").attrs["data-status"] == "ok"
    assert dom.one(id="error").attrs.get("hidden") is not None
    models = dom.one(id="models")
    assert [c.attrs["data-model"] for c in models.find(cls="model")] == ["bare", "odd"]
    assert "Cannot show" not in models.text()
    bare = models.one(cls="model", data_model="bare")
    assert bare.one(cls="rollout-phase").attrs["data-phase"] == "none"
    odd = models.one(cls="model", data_model="odd")
    assert odd.one("table", cls="drift").one("tbody").find("tr")
    assert "waiting for data" in odd.one("svg", cls="latency-chart").text()
    assert "No rollout events yet" in dom.one(id="events-body").text()
