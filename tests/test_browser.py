"""The Counterfactual Machine as a web app: Voila serves it, headless Chromium changes the task.

A scratch project holds a ``ci`` profile with a random-weight conditional model and a
synthetic study table (``test_widgets.write_tiny_profile``), so the test needs no
pipeline outputs. The demo notebook is written from its Jupytext source with
``profile = "ci"`` injected (``sematlas.widgets.serve.write_demo_notebook``), Voila
serves it on a free localhost port, and Debian's Chromium, driven by Playwright, loads
it, picks another task and waits for the image to change. The before/after
screenshots and Voila's log are kept in ``tests/artifacts/``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from test_widgets import write_tiny_profile

from sematlas.widgets.serve import voila_command, write_demo_notebook

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MISSING = [name for name in ("voila", "playwright") if importlib.util.find_spec(name) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
    ),
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (pip install -r requirements.txt)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_server(port: int, process: subprocess.Popen, log: Path, timeout: float = 40.0) -> None:
    """Until Voila listens (the page itself is only rendered, running the notebook, when requested)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Voila exited with code {process.returncode}; its log:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"Voila did not listen on port {port} within {timeout:.0f} s; its log:\n{log.read_text()}")


def test_changing_the_task_in_the_browser_redraws_the_map(project: Path) -> None:
    from playwright.sync_api import sync_playwright

    write_tiny_profile(project, "ci")
    notebook = write_demo_notebook(
        "counterfactual_machine",
        "ci",
        project / "notebooks" / "executed" / "ci" / "demos" / "counterfactual_machine.ipynb",
        source_root=ROOT,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "voila.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "SEMATLAS_ROOT": str(project), "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(
            voila_command(notebook, port, ["--Voila.ip=127.0.0.1", "--show_tracebacks=True"]),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=project,
        )
    try:
        wait_for_server(port, process, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(url, timeout=60_000)
                image = page.locator("img.sematlas-image")
                image.wait_for(state="visible", timeout=45_000)
                page.wait_for_function("document.querySelector('img.sematlas-image').naturalWidth > 0")
                assert "profile <b>ci</b>" in page.content() or "profile ci" in page.inner_text("body")
                before_src = image.get_attribute("src")
                before = image.screenshot(path=str(ARTIFACTS / "counterfactual_before.png"))

                task = page.locator(".sematlas-task select")
                assert task.input_value() == "working_memory"  # the demo opens on a working-memory study
                task.select_option("emotion")
                page.wait_for_function(
                    "src => { const img = document.querySelector('img.sematlas-image');"
                    " return img.src !== src && img.complete && img.naturalWidth > 0; }",
                    arg=before_src,
                    timeout=20_000,
                )
                after = image.screenshot(path=str(ARTIFACTS / "counterfactual_after.png"))
                page.screenshot(path=str(ARTIFACTS / "counterfactual_page.png"), full_page=True)
                assert "redraw after task" in page.inner_text("body")
            finally:
                browser.close()
        assert before != after, "the rendered image did not change when the task changed"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
