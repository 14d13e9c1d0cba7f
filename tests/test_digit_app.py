"""serve.py's endpoints for people, over real HTTP: POST /digit with an image, GET /model, and
POST /feedback into a collection (size cap, no path from the request, de-duplicated)."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from conftest import SERVE_PY, register_tiny_model, running

pytestmark = pytest.mark.server

CAP = 3  # corrections the test server's collection takes


@pytest.fixture(scope="module")
def collecting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """serve.py with a collection folder (capped at CAP) and a 1 MB body limit."""
    root = tmp_path_factory.mktemp("collecting")
    uri = register_tiny_model(root)
    folder = root / "nested" / "feedback"
    command = [sys.executable, SERVE_PY, "--model", "models:/digits@champion", "--port", "{port}"]
    command += ["--max-body-mb", "1", "--collect", str(folder), "--collect-max", str(CAP)]
    with running(command, uri) as url:
        yield url, folder


def png_of(draw_on) -> bytes:
    image = Image.new("L", (200, 200), 255)
    draw_on(ImageDraw.Draw(image))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


SEVEN = png_of(lambda draw: draw.line([(50, 40), (150, 40), (90, 170)], fill=0, width=14))


def post_image(url: str, content: bytes, kind: str = "image/png") -> requests.Response:
    return requests.post(f"{url}/digit", data=content, headers={"Content-Type": kind}, timeout=60)


def test_an_image_gets_the_digit_its_probabilities_the_model_and_what_it_saw(collecting):
    url, _ = collecting
    answer = post_image(url, SEVEN)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["digit"] == int(np.argmax(reply["probabilities"]))
    assert len(reply["probabilities"]) == 10 and abs(sum(reply["probabilities"]) - 1) < 1e-3
    assert reply["model"] == {"name": "digits", "version": "1", "uri": "models:/digits@champion"}
    seen = np.array(reply["image"])
    assert seen.shape == (28, 28) and seen.max() == 255 and seen[0].max() == 0


def test_a_multipart_form_upload_reads_as_the_same_bytes(collecting):
    url, _ = collecting
    form = requests.post(f"{url}/digit", files={"photo": ("seven.png", SEVEN)}, timeout=60)
    assert form.status_code == 200, form.text
    assert form.json() == post_image(url, SEVEN).json()


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000), 1).save(buffer, "PNG")
    return buffer.getvalue()


SECRET = b"SECRET-4711"
BAD_UPLOADS = {
    "not an image": (b"%PDF-1.7 " + SECRET, "image/png", 422, "not an image (PNG, JPEG"),
    "empty": (b"", "image/png", 422, "the image is empty"),
    "too large": (SECRET * 100_000, "image/jpeg", 413, "over this server's limit"),
    "decompression bomb": (bomb(), "image/png", 422, "10000x10000 pixels is more than"),
    "two digits": (
        png_of(lambda draw: [draw.line([(x, 50), (x, 150)], fill=0, width=12) for x in (40, 160)]),
        "image/png",
        422,
        "2 digits side by side found",
    ),
    "no digit": (png_of(lambda draw: None), "image/png", 422, "no digit found"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_a_bad_upload_gets_one_short_line_and_the_server_serves_on(collecting, case):
    url, _ = collecting
    content, kind, status, says = BAD_UPLOADS[case]
    answer = post_image(url, content, kind)
    assert answer.status_code == status, answer.text
    message = answer.json()["message"]
    assert says in message and len(message) <= 300 and "\n" not in message
    assert SECRET.decode() not in answer.text
    assert post_image(url, SEVEN).status_code == 200


def test_a_form_without_a_file_is_told_to_attach_one(collecting):
    url, _ = collecting
    answer = requests.post(f"{url}/digit", files={"note": (None, "hello")}, timeout=60)
    assert answer.request.headers["Content-Type"].startswith("multipart/form-data")
    assert answer.status_code == 400
    assert answer.json()["message"] == "the form holds no file: attach one image"


def test_the_model_card_names_the_version_and_alias(collecting):
    url, _ = collecting
    card = requests.get(f"{url}/model", timeout=30).json()
    assert card == {
        "name": "digits",
        "version": "1",
        "alias": "champion",
        "uri": "models:/digits@champion",
        "run_url": None,  # a sqlite store has no UI to link to
        "collecting": True,
    }


def correct(url: str, image: list, label: object, **extra: object) -> requests.Response:
    body = {"image": image, "label": label, **extra}
    return requests.post(f"{url}/feedback", json=body, timeout=60)


def files_under(folder: Path) -> set[str]:
    return {path.name for path in folder.rglob("*") if path.is_file()}


def test_corrections_are_stored_once_in_the_folder_and_capped(collecting):
    url, folder = collecting
    seen = post_image(url, SEVEN).json()["image"]
    first = correct(url, seen, 7, name="../../escaped", path="/tmp/escaped.png")
    assert first.status_code == 200 and first.json()["stored"] is True
    assert correct(url, seen, 7).json()["stored"] is False  # the same image: kept once
    (record,) = folder.glob("*.json")
    assert json.loads(record.read_text())["label"] == 7
    assert json.loads(record.read_text())["model"] == {"name": "digits", "version": "1"}
    with Image.open(record.with_suffix(".png")) as stored:
        assert np.array_equal(np.asarray(stored), np.array(seen, np.uint8))
    # Nothing named by the request, nothing outside the folder.
    assert files_under(folder.parent) == files_under(folder)
    assert not Path("/tmp/escaped.png").exists()
    for shift in range(1, CAP):
        assert correct(url, np.roll(seen, shift, axis=1).tolist(), 1).json()["stored"] is True
    full = correct(url, np.roll(seen, CAP, axis=1).tolist(), 1)
    assert full.status_code == 507 and f"holds {CAP} corrections" in full.json()["message"]
    assert len(list(folder.glob("*.json"))) == len(list(folder.glob("*.png"))) == CAP


@pytest.mark.parametrize(
    ("image", "label", "says"),
    [
        ([[0] * 28] * 28, "../../7", '"label" must be the right digit'),
        ([[0] * 28] * 28, 10, '"label" must be the right digit'),
        ([[0] * 28] * 27, 3, "28 rows of 28 numbers"),
        ([[300] * 28] * 28, 3, "whole numbers 0..255"),
        ("../../etc/passwd", 3, "28 rows of 28 numbers"),
    ],
)
def test_a_bad_correction_is_refused_and_writes_nothing(collecting, image, label, says):
    url, folder = collecting
    before = files_under(folder) if folder.exists() else set()
    answer = correct(url, image, label)
    assert answer.status_code == 400 and says in answer.json()["message"]
    assert (files_under(folder) if folder.exists() else set()) == before
