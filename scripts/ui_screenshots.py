"""Screenshots of the dashboard's main pages into docs/screenshots, from a running service
(e.g. after `softlabels demo`). Needs playwright and Debian's chromium.

    python scripts/ui_screenshots.py http://127.0.0.1:8000 "$KEY" digits-demo
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def main(url: str, key: str, project: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/ui/")
        page.fill("#key-input", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("body[data-ready='1']")
        jobs = page.evaluate(
            f"""async () => (await (await fetch('/v1/projects/{project}/training-jobs',
                {{headers: {{Authorization: 'Bearer ' + sessionStorage.getItem('softlabels.key')}}}}
            )).json()).jobs.map(j => j.id)"""
        )
        q = f"project={project}&method=dawid-skene"
        shots = {
            "projects": "/ui/",
            "project": f"/ui/project?{q}",
            "items": f"/ui/items?{q}",
            "workers": f"/ui/workers?{q}",
            "routing": f"/ui/routing?{q}",
            "jobs": f"/ui/jobs?{q}",
        }
        if jobs:
            shots["job"] = f"/ui/job?{q}&id={jobs[-1]}"
            shots["compare"] = f"/ui/compare?{q}&ids={','.join(map(str, sorted(jobs)))}"
        for name, path in shots.items():
            page.goto(url + path)
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            page.wait_for_timeout(300)
            if name == "items":
                first = page.locator("#items-table tbody tr td a").first.inner_text()
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
                page.goto(f"{url}/ui/item?{q}&id={first}")
                page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                page.screenshot(path=str(OUT / "item.png"), full_page=True)
                continue
            if name == "workers":
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
                page.click("#workers-table tbody tr td a >> nth=0")
                page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                page.screenshot(path=str(OUT / "worker.png"), full_page=True)
                continue
            page.screenshot(path=str(OUT / f"{name}.png"), full_page=name != "routing")
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
