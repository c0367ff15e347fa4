"""cvprep serve: the API through FastAPI's TestClient (good, drawn, hostile uploads, and the
server still answering after them), the byte limit at the ASGI level, the missing extra,
packaging of the page, and the page itself in a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("httpx2")
pytest.importorskip("tensorflow")

from fastapi.testclient import TestClient

import cvprep
import cvprep.serve
from cvprep.cli import cli
from cvprep.io import encode_image
from cvprep.serve.app import BodyLimit, create_app
from cvprep.serve.service import PredictionService
from cvprep.training import predict
from cvprep.training.evaluate import predictions_as_dicts
from tests.conftest import ROOT, huge_png, jpeg_bytes

MAX_BYTES, MAX_PIXELS = 300_000, 2_000_000
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def service(tiny_run) -> PredictionService:
    run, _ = tiny_run
    return PredictionService(run, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def client(service) -> TestClient:
    return TestClient(create_app(service))


def photo_path(tiny_run) -> Path:
    return sorted((tiny_run[1] / "test" / "round").iterdir())[0]


def drawing() -> bytes:
    """What the page's canvas sends: an opaque RGBA PNG, a white stroke on black."""
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[..., 3] = 255
    canvas[60:220, 130:150, :3] = 255
    return encode_image(canvas, "png")


def test_a_photo_gets_what_predict_json_prints(client, tiny_run):
    photo = photo_path(tiny_run)
    response = client.post("/predict?name=photo.png", content=photo.read_bytes())
    assert response.status_code == 200
    (expected,) = predictions_as_dicts(predict(tiny_run[0], [photo]))
    expected["path"] = "photo.png"
    body = response.json()
    assert body.keys() == expected.keys()  # heatmap and steps only when asked for
    assert body["label"] == expected["label"]
    assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)


def test_heatmap_and_steps_on_request_and_a_form_upload(client, tiny_run):
    photo = photo_path(tiny_run)
    response = client.post(
        "/predict?explain=true&steps=true",
        files={"file": ("round.png", photo.read_bytes(), "image/png")},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["path"] == "round.png"
    assert body["heatmap"].startswith("data:image/jpeg;base64,")
    assert [s["name"] for s in body["steps"]] == ["network input: 48×48 (stretch)"]
    step = cvprep.read_image(__import__("base64").b64decode(body["steps"][0]["image"][22:]))
    assert step.shape == (48, 48, 3)


def test_hostile_uploads_get_a_4xx_and_the_server_keeps_serving(client, tiny_run):
    photo = photo_path(tiny_run).read_bytes()
    big_jpeg = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (700, 700, 3), np.uint8))
    assert len(big_jpeg) > MAX_BYTES + 64 * 1024  # refused by the middleware, unread
    cases = [
        ("text", b"GET / HTTP/1.1\r\n" * 20, 415, "[not_image]"),
        ("empty", b"", 400, "[empty]"),
        ("corrupt", b"\xff\xd8\xff\xe0" + b"garbage" * 50, 422, "["),
        ("truncated", jpeg_bytes(cvprep.read_image(photo_path(tiny_run)))[:300], 422, "["),
        ("bytes", big_jpeg, 413, f"over the limit of {MAX_BYTES} bytes"),
        ("just_over", b"x" * (MAX_BYTES + 1), 413, f"over the limit of {MAX_BYTES} bytes"),
        ("pixels", huge_png(2000, 1001), 413, "[too_large]"),
    ]
    for name, payload, status, message in cases:
        response = client.post(f"/predict?name={name}", content=payload)
        assert response.status_code == status, name
        body = response.json()
        assert body["path"] == name and message in body["error"] and body["label"] == "", name
        form = client.post("/predict", files={"file": (name, payload, "application/x-evil")})
        assert form.status_code == status, name
    drawn = client.post("/predict?name=drawing.png", content=drawing())
    assert drawn.status_code == 200 and drawn.json()["label"] in ("angular", "round")
    assert client.post("/predict", content=photo).status_code == 200


def test_the_byte_limit_stops_reading_the_body(service):
    """A body without Content-Length (chunked) is read only up to the limit."""
    chunks, sent = [b"x" * 1000] * 1000, []

    async def receive():
        index = len([m for m in sent if m == "chunk"])
        sent.append("chunk")
        return {"type": "http.request", "body": chunks[index], "more_body": True}

    async def send(message):
        sent.append(message)

    app = BodyLimit(create_app(service), limit=10_000, max_bytes=10_000)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "scheme": "http",
        "query_string": b"name=stream",
        "headers": [(b"content-type", b"image/jpeg")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "http_version": "1.1",
    }
    asyncio.run(app(scope, receive, send))
    assert sent.count("chunk") == 11  # 11 × 1000 bytes: over the limit, and no further
    start = next(m for m in sent if isinstance(m, dict) and m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent if isinstance(m, dict))
    assert json.loads(body)["path"] == "stream"


def test_the_page_is_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert client.get("/docs").status_code == 404  # FastAPI's docs page loads a CDN
    info = client.get("/info").json()
    assert info["classes"] == ["angular", "round"] and info["max_bytes"] == MAX_BYTES


def test_serve_without_the_extra_says_what_to_install(tiny_run, monkeypatch):
    monkeypatch.setitem(cvprep.serve.REQUIRED, "cvprep_no_such_module", "uvicorn")
    result = CliRunner().invoke(cli, ["serve", str(tiny_run[0])])
    assert result.exit_code == 1
    assert 'pip install "cvprep[serve]"' in result.output and "Traceback" not in result.output
    assert CliRunner().invoke(cli, ["serve", str(tiny_run[0]), "--port", "70000"]).exit_code == 2


@pytest.mark.slow
def test_the_wheel_ships_the_page(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
    skip = (".*", "build", "*.egg-info", "__pycache__", "tests", "benchmarks", "sample_images")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skip))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            "-q",
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("cvprep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cvprep/serve/static/index.html" in names and "cvprep/cli/serve_commands.py" in names


# --------------------------------------------------------------------------- real browser
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tiny_run, tmp_path):
    """``cvprep serve`` in a subprocess, as a user starts it; its address once it answers."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "cvprep", "serve", str(tiny_run[0]), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/info", timeout=2)
            break
        except OSError:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMEDRIVER).is_file() and Path(CHROMIUM).is_file()):
        pytest.skip("no Chromium and chromedriver (Debian packages chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def act(driver, action) -> None:
    """Run a page action after marking the page, so that a wait sees its own answer."""
    driver.execute_script("document.body.dataset.state = 'test-waiting'")
    action()


def wait_for_state(driver, *states: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-state") in states
    )
    return driver.find_element("tag name", "body").get_attribute("data-state")


@pytest.mark.slow
def test_the_page_predicts_an_upload_and_a_drawing_in_chromium(server, tiny_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    driver = browser(tmp_path)
    try:
        driver.get(server + "/")
        assert wait_for_state(driver, "ready") == "ready"
        pick = driver.find_element("id", "file")
        act(driver, lambda: pick.send_keys(str(photo_path(tiny_run))))
        assert wait_for_state(driver, "done", "error") == "done"
        assert driver.find_element("id", "label").text in ("angular", "round")
        assert float(driver.find_element("id", "probability").text) >= 0.5
        captions = [e.text for e in driver.find_elements("css selector", "figcaption")]
        assert captions[0] == "upload" and captions[-1].startswith("heatmap of")
        assert all(
            driver.execute_script("return arguments[0].naturalWidth", image) > 0
            for image in driver.find_elements("css selector", "#pictures img")
        )

        bad = tmp_path / "not-a-photo.jpg"
        bad.write_bytes(b"just text")
        act(driver, lambda: pick.send_keys(str(bad)))
        assert wait_for_state(driver, "done", "error") == "error"
        assert "[not_image]" in driver.find_element("id", "error").text

        canvas = driver.find_element("id", "canvas")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        stroke = ActionChains(driver).move_to_element_with_offset(canvas, -40, -80)
        stroke.click_and_hold().move_by_offset(20, 60).move_by_offset(30, 80).release().perform()
        act(driver, driver.find_element("id", "send-drawing").click)
        assert wait_for_state(driver, "done", "error") == "done"
        assert driver.find_element("id", "source").text == "(drawing.png)"
        assert driver.find_element("id", "label").text in ("angular", "round")
    finally:
        driver.quit()
