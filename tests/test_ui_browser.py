"""The dashboard in a real browser: Playwright driving Debian's Chromium against a live
`softlabels serve --worker` (auth on) on a database of this module's own.

Needs `apt-get install chromium` (the browser at /usr/bin/chromium) and the `playwright` Python
package; skipped when either is missing, except under CI=true, where that fails the run.
Run: pytest -m browser tests/test_ui_browser.py.
Set SOFTLABELS_SCREENSHOTS=<dir> to save the pages it visits as PNGs (the docs/ screenshots
of the demo project come from scripts/ui_screenshots.py).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from tests.helpers import LiveServer, server_with_worker

CHROMIUM = "/usr/bin/chromium"
# Skipped on a developer machine without the browser; in CI (CI=true) a missing browser or
# playwright package fails the run instead, so the browser tests cannot silently not run.
IN_CI = os.environ.get("CI", "").lower() == "true"
if not IN_CI:
    pytest.importorskip("playwright.sync_api")
from playwright import sync_api  # noqa: E402

from app.aggregation.registry import METHODS_BY_TASK  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not IN_CI and not Path(CHROMIUM).exists(),
        reason="needs Debian's chromium (apt-get install chromium)",
    ),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ADMIN = f"sl_ui-admin-{uuid.uuid4().hex}"
PROJECT = "ui-demo"
CLASSES = ["cat", "dog", "bird"]
SHOTS = os.environ.get("SOFTLABELS_SCREENSHOTS")


@pytest.fixture(scope="module")
def server(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("ui")
    with server_with_worker(server_url, tmp, "softlabels_ui", ADMIN) as live:
        yield live


@pytest.fixture(scope="module")
def world(server: LiveServer) -> dict[str, Any]:
    """80 items with features and gold, 6 good workers and a spammer; a read-only key."""
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"})
    r = http.post(
        "/v1/projects",
        json={"name": PROJECT, "classes": CLASSES, "description": "Browser-test project"},
    )
    assert r.status_code == 201, r.text
    rng = np.random.default_rng(3)
    n = 80
    gold = rng.integers(0, 3, n)
    x = rng.normal(0, 2, (3, 4))[gold] + rng.normal(0, 1, (n, 4))
    items = [
        {
            "id": f"img/{i:03d}.jpg",
            "features": x[i].tolist(),
            "gold": int(gold[i]),
            "meta": {"source": "test"},
        }
        for i in range(n)
    ]
    assert http.post(f"/v1/projects/{PROJECT}/items", json={"items": items}).status_code == 200
    votes = []
    for i in range(n):
        for w in rng.choice(7, size=int(rng.integers(2, 6)), replace=False):
            good = w < 6 and rng.random() < 0.85
            label = int(gold[i]) if good else int(rng.integers(3))
            votes.append({"item": f"img/{i:03d}.jpg", "worker": f"worker-{w}", "label": label})
    assert http.post(f"/v1/projects/{PROJECT}/votes", json={"votes": votes}).status_code == 200
    read = http.post(
        "/v1/keys", json={"label": "viewer", "scopes": ["read"], "projects": [PROJECT]}
    )
    assert read.status_code == 201, read.text
    return {"read_key": read.json()["key"], "http": http}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Session:
    """A browser context that records every request it makes."""

    def __init__(self, browser: Any, server: LiveServer) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.requests: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def goto(self, path: str) -> Any:
        self.page.goto(self.server.url + path)
        self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        return self.page

    def paste_key(self, key: str) -> None:
        self.page.fill("#key-input", key)
        self.page.click("#key-form button[type=submit]")
        self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)

    def check_offline(self) -> None:
        own = (self.server.url + "/", "data:", "blob:")
        outside = [u for u in self.requests if not u.startswith(own)]
        assert not outside, f"requests left the server: {outside}"
        assert not self.errors, f"JavaScript errors: {self.errors}"


@pytest.fixture
def admin(browser: Any, server: LiveServer, world: dict) -> Iterator[Session]:
    s = Session(browser, server)
    s.goto("/")
    s.paste_key(ADMIN)
    yield s
    s.check_offline()
    s.context.close()


def test_root_leads_to_dashboard_and_asks_for_a_key(
    browser: Any, server: LiveServer, world: dict
) -> None:
    s = Session(browser, server)
    page = s.goto("/")
    assert page.url == f"{server.url}/ui/"
    assert "API key" in page.inner_text("#flash")
    s.paste_key(ADMIN)
    assert page.is_visible(f"#projects-table a:text('{PROJECT}')")
    # The key stays in this tab's sessionStorage: never in a cookie, the URL or the page.
    assert page.evaluate("sessionStorage.getItem('softlabels.key')") == ADMIN
    assert page.context.cookies() == []
    assert ADMIN not in page.content()
    s.shot("projects")
    s.check_offline()
    s.context.close()


def test_project_page(admin: Session) -> None:
    page = admin.goto(f"/ui/project?project={PROJECT}")
    cards = page.inner_text("#stat-cards")
    assert "Krippendorff" in cards and "Fleiss" in cards and "80" in cards
    assert page.locator("#histogram svg rect").count() >= 2
    assert page.locator("#uncertain-table tbody tr").count() == 10
    # The method picker changes what every view shows, and is kept in the links.
    page.select_option("#method-select", "majority")
    page.wait_for_selector("body[data-ready='1']")
    assert "method=majority" in page.url
    assert "(majority)" in page.inner_text("#stat-cards")
    assert "method=majority" in page.get_attribute("[data-nav=items]", "href")
    admin.shot("project")


def numbers(page: Any, column: int) -> list[float | None]:
    cells = page.locator(f"#items-table tbody tr td:nth-child({column})").all_inner_texts()
    return [None if c == "\u2013" else float(c) for c in cells]  # en dash: no value


def test_items_sort_page_and_open_an_item(admin: Session) -> None:
    page = admin.goto(f"/ui/items?project={PROJECT}")
    assert page.locator("#items-table tbody tr").count() == 50
    assert page.locator("#items-table tbody tr svg.mini").count() == 50
    ent = [v for v in numbers(page, 5) if v is not None]
    assert ent == sorted(ent, reverse=True)  # default: most uncertain first
    admin.shot("items")
    page.click("#items-table th[data-sort=votes]")
    page.wait_for_selector("body[data-items-loaded='votes:desc:0']")
    votes = numbers(page, 2)
    assert votes == sorted(votes, reverse=True)
    page.click("#items-table th[data-sort=votes]")
    page.wait_for_selector("body[data-items-loaded='votes:asc:0']")
    votes = numbers(page, 2)
    assert votes == sorted(votes)
    page.click("#next-page")
    page.wait_for_selector("body[data-items-loaded='votes:asc:1']")
    assert page.locator("#items-table tbody tr").count() == 30
    page.click("#items-table th[data-sort=gold_disagreement]")
    page.wait_for_selector("body[data-items-loaded='gold_disagreement:desc:0']")
    dis = [v for v in numbers(page, 7) if v is not None]
    assert dis == sorted(dis, reverse=True)
    first = page.locator("#items-table tbody tr td:nth-child(1) a").first
    item = first.inner_text()
    first.click()
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#item-id") == item
    detail = admin.server  # the API says how many votes the item has
    n = httpx.get(
        f"{detail.url}/v1/projects/{PROJECT}/items/{quote(item, safe='')}",
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()["n_votes"]
    assert page.locator("#votes-table tbody tr").count() == n
    page.wait_for_function(
        "() => !document.querySelector('#methods-table tbody').innerText.includes('…')",
        timeout=60_000,
    )
    rows = page.locator("#methods-table tbody tr")
    assert rows.count() >= 8  # every count and worker-model method, side by side
    # crowdlab needs a training job with out-of-sample predictions: its row says so instead.
    crowdlab = page.locator('#methods-table tbody tr[data-method="crowdlab"]')
    assert "oos_folds" in crowdlab.inner_text()
    assert page.locator("#methods-table tbody svg.mini").count() == rows.count() - 1
    admin.shot("item")


def test_workers_and_a_worker(admin: Session) -> None:
    page = admin.goto(f"/ui/workers?project={PROJECT}")
    assert page.locator("#workers-table tbody tr").count() == 7
    assert "dawid-skene" in page.inner_text("#skill-note")
    admin.shot("workers")
    page.click("#workers-table a:text('worker-3')")
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#worker-id") == "worker-3"
    assert page.locator("#heatmap svg rect").count() == len(CLASSES) ** 2
    assert page.locator("#class-accuracy svg rect").count() == len(CLASSES)
    admin.shot("worker")


def test_routing_and_exports(admin: Session) -> None:
    page = admin.goto(f"/ui/routing?project={PROJECT}")
    assert page.locator("#routing-table tbody tr").count() == 50
    page.select_option("#routing-form select[name=strategy]", "fewest-votes")
    page.fill("#routing-form input[name=limit]", "5")
    page.click("#routing-form button")
    page.wait_for_function("() => document.querySelectorAll('#routing-table tbody tr').length == 5")
    page = admin.goto(f"/ui/exports?project={PROJECT}")
    with page.expect_download() as dl:
        page.click("button[data-export='normalized:csv']")
    text = Path(dl.value.path()).read_text()
    assert text.splitlines()[0].startswith("item") and len(text.splitlines()) == 81


def wait_status(page: Any, statuses: str, timeout: float = 180_000) -> str:
    page.wait_for_function(
        f"() => /{statuses}/.test(document.querySelector('#job-status').textContent)",
        timeout=timeout,
    )
    return str(page.inner_text("#job-status"))


def test_start_a_training_job_and_watch_it_finish(admin: Session) -> None:
    page = admin.goto(f"/ui/jobs?project={PROJECT}")
    # The form reports the API's own validation messages next to the field.
    page.fill("#job-form input[name=epochs]", "0")
    page.click("#job-form button[type=submit]")
    page.wait_for_selector("#job-form .field-error")
    assert "epochs" in page.inner_text("#job-form [data-errors]")
    assert page.locator("#job-form input[name=epochs].invalid").count() == 1
    page.fill("#job-form input[name=epochs]", "12")
    page.fill("#job-form input[name='model.hidden']", "16")
    page.click("#job-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/job\?.*id=\d+.*"))
    page.wait_for_selector("body[data-ready='1']")
    assert wait_status(page, "succeeded|failed|cancelled") == "succeeded"
    assert page.locator("#loss-chart svg polyline").count() == 2
    assert page.locator("#metric-chart svg polyline").count() >= 2
    assert "accuracy" in page.inner_text("#job-cards")
    assert page.is_visible("#reliability-section")  # from metrics.reliability
    assert page.locator("#reliability svg polyline").count() == 2  # diagonal and the model
    assert page.is_visible("#job-download")
    admin.shot("job")
    # A second job, then compare the two.
    page = admin.goto(f"/ui/jobs?project={PROJECT}")
    page.select_option("#job-form select[name=loss]", "hard-ce")
    page.fill("#job-form input[name=epochs]", "8")
    page.click("#job-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/job\?.*"))
    page.wait_for_selector("body[data-ready='1']")
    assert wait_status(page, "succeeded|failed|cancelled") == "succeeded"
    page = admin.goto(f"/ui/jobs?project={PROJECT}")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs-table tbody tr')]"
        ".every(r => r.dataset.status === 'succeeded')"
    )
    boxes = page.locator("#jobs-table tbody input[type=checkbox]")
    assert boxes.count() == 2
    admin.shot("jobs")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("#compare-button")
    page.wait_for_selector("body[data-ready='1']")
    table = page.inner_text("#compare-table")
    assert "hard-ce" in table and "soft-ce" in table and "test.accuracy" in table
    assert page.locator("#compare-loss svg polyline").count() == 2
    admin.shot("compare")


def test_admin_manages_keys(admin: Session) -> None:
    page = admin.goto("/ui/")
    assert page.is_visible("#admin-link") and page.is_visible("#create-project")
    page = admin.goto("/ui/keys")
    page.fill("#key-create-form input[name=label]", "labeling-tool")
    page.fill("#key-create-form input[name=projects]", PROJECT)
    page.click("#key-create-form button[type=submit]")
    page.wait_for_selector("#new-key:not(.hidden)")
    assert re.search(r"sl_\S+", page.inner_text("#new-key"))
    page.wait_for_selector("#keys-table td:text('labeling-tool')")
    # A bad request shows the service's message at the field.
    page.fill("#key-create-form input[name=label]", "bad")
    page.check("#key-create-form input[value=admin]")
    page.click("#key-create-form button[type=submit]")
    page.wait_for_selector("#key-create-form [data-errors]:has-text('admin key')")


def test_read_only_key_sees_no_admin_controls(
    browser: Any, server: LiveServer, world: dict
) -> None:
    s = Session(browser, server)
    s.goto("/")
    s.paste_key(world["read_key"])
    page = s.page
    # The key covers one project: the list is refused, so the page offers to open it by name.
    assert page.is_visible("#open-project")
    assert not page.is_visible("#admin-link") and not page.is_visible("#create-project")
    page.fill("#open-project input[name=name]", PROJECT)
    page.click("#open-project button")
    page.wait_for_selector("body[data-ready='1']")
    assert "80" in page.inner_text("#stat-cards")
    assert not page.is_visible("[data-nav=jobs]")  # no train scope: no training views
    assert not page.is_visible("#admin-link")
    page = s.goto("/ui/keys")
    assert page.is_visible("#not-admin") and not page.is_visible("#keys-admin")
    s.check_offline()
    s.context.close()


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_work_offline(browser: Any, server: LiveServer, path: str) -> None:
    s = Session(browser, server)
    s.page.goto(server.url + path)
    if path == "/docs":
        s.page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        assert s.page.locator(".opblock").count() > 20
    else:
        s.page.wait_for_selector(".api-content h2:has-text('Get Items')", timeout=30_000)
    if path == "/docs":
        s.shot("docs")
    s.check_offline()
    s.context.close()


def test_no_auth_server_needs_no_key(browser: Any, live_server: LiveServer) -> None:
    """`softlabels serve --no-auth` (loopback only): the dashboard works without a key."""
    s = Session(browser, live_server)
    page = s.goto("/ui/")
    assert "auth off" in page.inner_text("#key-desc")
    assert not page.is_visible("#key-form") and page.is_visible("#projects-table")
    assert page.is_hidden("#flash")
    s.check_offline()
    s.context.close()


@pytest.mark.parametrize("task_type", ["multi_label", "ordinal"])
def test_an_item_of_another_task_type(admin: Session, world: dict, task_type: str) -> None:
    """The picker offers the project's own methods, and the item page shows its votes (a set
    of classes, or a level) and every method of its type side by side."""
    http, name = world["http"], f"ui-{task_type}"
    classes = ["sports", "politics", "tech"] if task_type == "multi_label" else ["1", "2", "3"]
    r = http.post("/v1/projects", json={"name": name, "classes": classes, "task_type": task_type})
    assert r.status_code == 201, r.text
    answers = [["sports", "tech"], [], ["tech"]] if task_type == "multi_label" else ["1", "3", "3"]
    votes = [{"item": "t/1", "worker": f"w{j}", "label": a} for j, a in enumerate(answers)]
    assert http.post(f"/v1/projects/{name}/votes", json={"votes": votes}).status_code == 200
    page = admin.goto(f"/ui/item?project={name}&id=t/1")
    offered = page.locator("#method-select option").all_inner_texts()
    assert sorted(offered) == sorted(METHODS_BY_TASK[task_type])
    shown = page.locator("#votes-table tbody tr td:nth-child(2)").all_inner_texts()
    if task_type == "multi_label":
        assert sorted(shown) == ["(none apply)", "sports, tech", "tech"]
    else:
        assert sorted(shown) == ["1", "3", "3"]
    page.wait_for_function(
        "() => !document.querySelector('#methods-table tbody').innerText.includes('…')",
        timeout=60_000,
    )
    rows = page.locator("#methods-table tbody tr")
    assert rows.count() == len(offered)
    assert page.locator("#methods-table tbody svg.mini").count() == rows.count()
    if task_type == "ordinal":
        # mean · median · sd of the normalized row: levels 1, 3, 3 -> mean 2.33, median 3
        normalized = page.locator('#methods-table tbody tr[data-method="normalized"]').inner_text()
        assert "2.33 · 3 · 0.94" in normalized
    admin.shot(f"item-{task_type}")
    # The worker page: a multi-label worker's per-class sensitivity and specificity, a scale
    # worker's confusion over the levels.
    page = admin.goto(f"/ui/worker?project={name}&id=w0")
    page.wait_for_selector("#heatmap svg", timeout=60_000)
    heading = page.locator("#confusion-source").locator("xpath=..").inner_text()
    if task_type == "multi_label":
        assert heading.startswith("Sensitivity per class")
        assert "Specificity" in page.locator("#class-accuracy").locator("xpath=..").inner_text()
    else:
        assert heading.startswith("Confusion matrix")
    admin.shot(f"worker-{task_type}")
    # The job form offers the losses that train the type (a softmax loss would be a 422).
    page = admin.goto(f"/ui/jobs?project={name}")
    losses = page.locator("#job-form select[name=loss] option").all_inner_texts()
    assert losses == (
        ["soft-bce", "hard-bce"]
        if task_type == "multi_label"
        else ["soft-ce", "hard-ce", "squared-emd"]
    )
