"""The dashboard's page in a real browser.

``buttress dashboard`` runs as its own process on a spare loopback port, for a configuration
whose breakers share a fleet on the machine's Redis; headless Chromium (Debian's ``chromium``
and ``chromedriver``, driven by selenium) shows its page. A breaker forced open from another
process shows on its tile; the operator resets it from the page, for the whole fleet; a
read-only dashboard's page holds no control that acts; 300 breakers and 50 limiters are
rendered within each frame's interval. The page runs under the server's strict CSP: the
browser's console must report no violation.

Needs selenium (the dev extra), chromium and chromedriver (``BUTTRESS_CHROMIUM`` and
``BUTTRESS_CHROMEDRIVER`` point elsewhere), and Redis for the fleet: skipped without them,
failed under CI=true. The screenshots go to build/artefacts/ (``make dashboard-image`` copies
dashboard.png, a busy service's page, to docs/images/ for the documentation).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import buttress as bt
from buttress._memory import MemoryReading
from conftest import IN_CI
from servers import answers, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "build" / "artefacts"
TOKEN = "browser-test-token-0123456789abcdef"
TOKEN_ENV = "BUTTRESS_DASHBOARD_TOKEN"
WAIT = 10.0  # seconds any browser condition may take, at most


def unavailable(reason: str) -> None:
    """Skip the test; under CI=true, fail instead: CI must run it."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def executable(env_var: str, path: str, name: str) -> str:
    chosen = os.environ.get(env_var) or (path if os.path.exists(path) else shutil.which(name))
    if not chosen or not os.access(chosen, os.X_OK):
        unavailable(
            f"{name} is not installed (apt-get install chromium chromium-driver, or set {env_var})"
        )
    assert chosen is not None
    return chosen


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver, both given by path: selenium never looks for
    (or downloads) a browser or a driver of its own."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[dev]')")
    chromium = executable("BUTTRESS_CHROMIUM", "/usr/bin/chromium", "chromium")
    driver_path = executable("BUTTRESS_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1366,900",
        "--hide-scrollbars",
        "--lang=en-GB",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# -- the dashboard, as a process of its own ------------------------------------------------------


def fleet_config(tmp_path: Path, redis_url: str) -> tuple[Path, str]:
    """Breakers in three groups, most of them on a fleet of this test's own namespace."""
    namespace = "dashboard-browser-" + uuid.uuid4().hex[:8]
    path = tmp_path / "buttress.toml"
    path.write_text(
        f"""
[fleet]
url = "{redis_url}"
namespace = "{namespace}"
sync_interval = "100ms"

[circuit_breakers."payments.charge"]
fleet = true
[circuit_breakers."payments.refund"]
fleet = true
[circuit_breakers."payments.payout"]
fleet = true
[circuit_breakers."search.query"]
fleet = true
[circuit_breakers."search.suggest"]
failure_threshold = 10
[circuit_breakers."search.index"]
fleet = true
[circuit_breakers."inventory.reserve"]
fleet = true
[circuit_breakers."inventory.release"]
fleet = true

[rate_limiting.limiters."search.api"]
limit = 600
window = 60.0

[connection_pools.db]
factory = "sqlite3:connect"
args = [":memory:"]
kwargs = {{ check_same_thread = false }}
max_size = 10
"""
    )
    return path, namespace


@contextlib.contextmanager
def dashboard(
    config: Path, tmp_path: Path, browser: Any, *, token: str | None, interval: float = 1.0
) -> Iterator[str]:
    """``buttress dashboard --config CONFIG`` on a spare loopback port: its page's address.
    Stopped with SIGTERM, as a service manager stops it, with the page still open."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    log = tmp_path / f"dashboard-{port}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "buttress",
                "dashboard",
                "--config",
                str(config),
                "--port",
                str(port),
                "--interval",
                str(interval),
                "--namespace",
                "shop",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(
            lambda: answers(port, "/api/state") or proc.poll() is not None,
            what="the dashboard to answer",
            limit=30.0,
        )
        assert proc.poll() is None, f"the dashboard ended: {log.read_text()}"
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()  # an open page's stream must not hold the server up
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError("buttress dashboard did not stop on SIGTERM") from None
        browser.get("about:blank")


def buttress(*args: str) -> str:
    """Another process of the fleet: the command line, as an operator runs it."""
    run = subprocess.run(
        [sys.executable, "-m", "buttress", *args], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


# -- reading the page ----------------------------------------------------------------------------


def until(driver: Any, condition: Any, timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def frames(driver: Any) -> int:
    return int(driver.execute_script("return (window.buttressDashboard || {}).frames || 0"))


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    until(driver, lambda d: frames(d) >= 1)


TILE_JS = """
const heading = [...document.querySelectorAll('#breakers .tile-name')]
  .find((h) => h.textContent === arguments[0]);
return heading ? heading.closest('article') : null;
"""


def tile(driver: Any, name: str) -> Any:
    return driver.execute_script(TILE_JS, name)


def state_of(driver: Any, name: str) -> str | None:
    found = tile(driver, name)
    return None if found is None else found.find_element("css selector", ".badge").text


def console_problems(driver: Any) -> list[str]:
    """The console's errors, and any report of the CSP (which logs its violations)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]
    ]


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.redis
def test_a_breaker_forced_open_elsewhere_shows_and_the_operator_resets_it_fleet_wide(
    browser: Any, tmp_path: Path, redis_url: str
) -> None:
    from selenium.webdriver.common.by import By

    config, _ = fleet_config(tmp_path, redis_url)
    with dashboard(config, tmp_path, browser, token=TOKEN, interval=0.5) as url:
        open_page(browser, url)
        until(browser, lambda d: state_of(d, "payments.charge") == "closed")
        assert browser.find_element(By.ID, "health-word").text == "Healthy"

        reason = ["--reason", "card processor incident 4312", "--by", "alice@ops"]
        buttress("breaker", "force-open", "payments.charge", "--config", str(config), *reason)
        until(browser, lambda d: state_of(d, "payments.charge") == "forced open", timeout=2.0)
        charge = tile(browser, "payments.charge")
        until(browser, lambda d: "alice@ops" in charge.text)
        assert "card processor incident 4312" in charge.text
        assert browser.find_element(By.ID, "health-word").text in ("Degraded", "Unhealthy")
        assert "payments.charge" in browser.find_element(By.ID, "problems").text
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTEFACTS / "dashboard-fleet.png"))

        # The operator resets it from its tile: the token, a reason, the whole fleet.
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", charge)
        charge.find_element(By.CSS_SELECTOR, "button[data-action='reset']").click()
        dialog = browser.find_element(By.ID, "action-dialog")
        until(browser, lambda d: dialog.get_attribute("open") is not None)
        assert browser.switch_to.active_element == browser.find_element(By.ID, "action-reason")
        whole_fleet = browser.find_element(By.ID, "action-fleet")
        assert whole_fleet.is_displayed() and whole_fleet.is_selected()  # a fleet override
        browser.find_element(By.ID, "action-reason").send_keys("processor is back")
        browser.find_element(By.ID, "action-token").send_keys(TOKEN)
        browser.find_element(By.ID, "action-confirm").click()
        until(browser, lambda d: dialog.get_attribute("open") is None)
        notice = browser.find_element(By.ID, "notice").text
        assert "every process of the fleet" in notice, notice
        until(browser, lambda d: state_of(d, "payments.charge") == "closed")
        until(browser, lambda d: "whole fleet" in d.find_element(By.ID, "action-log").text)
        assert "processor is back" in browser.find_element(By.ID, "action-log").text

        status = json.loads(buttress("fleet", "status", "--config", str(config)))
        override = status["breakers"]["payments.charge"]["override"]
        assert override is None or override["effective"] is None, override
        assert console_problems(browser) == []


@pytest.mark.redis
def test_a_read_only_dashboard_has_no_control_that_acts(
    browser: Any, tmp_path: Path, redis_url: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    config, _ = fleet_config(tmp_path, redis_url)
    with dashboard(config, tmp_path, browser, token=None) as url:
        open_page(browser, url)
        until(browser, lambda d: state_of(d, "inventory.reserve") == "closed")
        until(browser, lambda d: "fleet closed" in tile(d, "inventory.reserve").text)
        controls = browser.execute_script(
            "return document.querySelectorAll('button[data-action], #token-button, "
            "#reload-button, #stop-chaos, dialog, form, input[type=password], .tile-actions, "
            ".refused').length"
        )
        assert controls == 0
        labels = {b.text for b in browser.find_elements(By.TAG_NAME, "button")}
        assert not labels & {"Force open", "Disable", "Reset", "Reload config", "Stop all chaos"}

        # "/" goes to the filter; typing narrows every section at once.
        browser.find_element(By.TAG_NAME, "body").send_keys("/")
        search = browser.switch_to.active_element
        assert search.get_attribute("id") == "search"
        search.send_keys("payments")
        visible = browser.execute_script(
            "return [...document.querySelectorAll('#breakers .tile')]"
            ".filter((t) => !t.hidden).map((t) => t.querySelector('.tile-name').textContent)"
        )
        assert sorted(visible) == ["payments.charge", "payments.payout", "payments.refund"]
        search.send_keys(Keys.ESCAPE)
        shown = "#breakers .tile:not([hidden])"
        until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, shown)) == 8)
        assert console_problems(browser) == []


# -- a dashboard in this process, with traffic ---------------------------------------------


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn in a thread, on a spare loopback port: its address."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.end_streams()  # as buttress dashboard does on SIGTERM
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()


@contextlib.contextmanager
def traffic(
    infra: bt.Infrastructure, *, per_round: int, sick: float, seed: int = 7
) -> Iterator[None]:
    """Calls on the breakers and limiters from a thread, until the block ends: a ``sick``
    share of the breakers fail most of their calls (they degrade and open), the others
    succeed; the limiters are asked more than they allow. Seeded: the same run each time."""
    rng = random.Random(seed)
    breakers = sorted(infra.breakers.values(), key=lambda b: b.name)
    limiters = sorted(infra.limiters.values(), key=lambda x: x.name)
    failing = {b.name for b in rng.sample(breakers, max(1, int(len(breakers) * sick)))}
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for breaker in rng.sample(breakers, min(per_round, len(breakers))):
                permit = breaker.try_acquire(critical=rng.random() < 0.5)
                if not permit:
                    continue
                if breaker.name in failing and rng.random() < 0.7:
                    permit.record_exception(ConnectionError("upstream down"))
                else:
                    permit.record_success(rng.uniform(0.001, 0.05))
            for limiter in limiters:
                limiter.try_acquire()
            stop.wait(0.01)  # real-time: a steady load, paced like requests

    thread = threading.Thread(target=run, name="traffic", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def breakers_showing(driver: Any, *states: str) -> int:
    return int(
        driver.execute_script(
            "return [...document.querySelectorAll('#breakers .tile .badge')]"
            ".filter((b) => arguments[0].includes(b.textContent.trim())).length",
            list(states),
        )
    )


def test_a_busy_service_at_a_glance(browser: Any) -> None:
    """The documentation's picture: a service with traffic, failing dependencies, refusals,
    a pool, a bulkhead, memory pressure and a running chaos experiment."""
    config = {
        "memory_manager": {"enabled": False},
        "circuit_breakers": {
            name: {"failure_threshold": 20, "degradation_threshold": 5, "minimum_calls": 20}
            for name in (
                "payments.charge",
                "payments.refund",
                "payments.payout",
                "search.query",
                "search.suggest",
                "inventory.reserve",
                "inventory.release",
                "email.send",
            )
        },
        "rate_limiting": {
            "limiters": {
                "api.public": {"limit": 50, "window": "1s"},
                "api.partners": {"limit": 500, "window": "1s"},
            }
        },
        "services": {"reports": {"breaker": False, "bulkhead": {"max_concurrent": 8}}},
        "connection_pools": {
            "db": {
                "factory": "sqlite3:connect",
                "args": [":memory:"],
                "kwargs": {"check_same_thread": False},
                "max_size": 10,
            }
        },
        "chaos": {"enabled": True},
    }
    config["memory_manager"] = {"check_interval": 0.5}

    def memory() -> MemoryReading:  # a container at 58% of its limit
        return MemoryReading(
            source="cgroup_v2", limit=2 << 30, used=int(0.58 * (2 << 30)), rss=None
        )

    infra = bt.Infrastructure("shop", config, env={}, memory_probe=memory)
    held = []
    try:
        infra.start()
        infra.layers("reports")  # its bulkhead is made with its route
        held = [infra.pools["db"].checkout() for _ in range(3)]
        infra.chaos.experiment(
            "search.suggest", duration=600, latency=(0.05, 0.2), latency_rate=0.3
        ).start()
        app = bt.dashboard_app(infra, token=TOKEN, interval=0.25)
        with traffic(infra, per_round=8, sick=0.25), serving(app) as url:
            open_page(browser, url)
            until(browser, lambda d: breakers_showing(d, "open", "degraded") >= 1, timeout=20)
            until(browser, lambda d: frames(d) >= 40, timeout=30)  # sparklines with a past
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(ARTEFACTS / "dashboard.png"))
            assert console_problems(browser) == []
    finally:
        for lease in held:
            lease.release()
        infra.close()


def scale_config(breakers: int, limiters: int) -> dict[str, Any]:
    return {
        "memory_manager": {"enabled": False},
        "circuit_breakers": {
            f"svc{i % 30:02d}.endpoint{i:03d}": {"minimum_calls": 5} for i in range(breakers)
        },
        "rate_limiting": {
            "limiters": {
                f"svc{i % 10:02d}.api{i:02d}": {"limit": 100 + i, "window": 60.0}
                for i in range(limiters)
            }
        },
    }


@pytest.mark.slow
def test_300_breakers_and_50_limiters_render_within_the_interval(browser: Any) -> None:
    interval = 1.0
    infra = bt.Infrastructure("scale", scale_config(300, 50), env={})
    app = bt.dashboard_app(infra, interval=interval)
    try:
        with traffic(infra, per_round=100, sick=0.1), serving(app) as url:
            open_page(browser, url)
            counts = browser.execute_script(
                "return [document.querySelectorAll('#breakers .tile').length,"
                " document.querySelectorAll('#limiters .tile').length,"
                " document.querySelectorAll('#breakers .group').length]"
            )
            assert counts == [300, 50, 30]
            # The page keeps up while tiles change: some of the sick ones degrade or open.
            until(browser, lambda d: breakers_showing(d, "open", "degraded") >= 5, timeout=20)
            first = frames(browser)
            until(browser, lambda d: frames(d) >= first + 10, timeout=10 * interval + WAIT)
            stats = browser.execute_script("return window.buttressDashboard")
            lags = stats["lag"]["recent"][-10:]
            renders = stats["render"]["recent"][-10:]
            print(
                f"\ndashboard at 300 breakers and 50 limiters, the last {len(lags)} frames: "
                f"lag max {max(lags) * 1000:.1f} ms, mean {statistics.fmean(lags) * 1000:.1f} ms; "
                f"rendering max {max(renders):.1f} ms, mean {statistics.fmean(renders):.1f} ms; "
                f"the first frame (every tile made) {stats['render']['recent'][0]:.1f} ms"
            )
            assert max(lags) < interval, lags
            assert console_problems(browser) == []
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(ARTEFACTS / "dashboard-300.png"))
    finally:
        infra.close()
