"""The draw-a-digit page in real headless Chromium against a real serve.py (a small untrained
model: these tests check what the page does; test_pipeline_slow checks it reads a real 7)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from conftest import SERVE_PY, SEVEN_STROKES, draw_strokes, register_tiny_model, running

pytestmark = [pytest.mark.server, pytest.mark.browser]

DESKTOP, PHONE = {"width": 1100, "height": 760}, {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("site")
    uri = register_tiny_model(root)
    folder = root / "feedback"
    command = [sys.executable, SERVE_PY, "--model", "models:/digits@champion", "--port", "{port}"]
    with running([*command, "--collect", str(folder)], uri) as url:
        yield url, folder


@pytest.fixture
def page(chromium, site):
    url, _ = site
    context = chromium.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.goto(url)
    tab.wait_for_selector("#model:has-text('Model: digits, version 1, champion')")
    yield tab
    context.close()


def answered(page, what: str) -> None:
    """Wait until the page shows its answer to `what` (a number of strokes, or "photo")."""
    page.wait_for_selector(f"main[data-answers='{what}']")


def seen_ink(page) -> int:
    """How many of the 28x28 pixels shown as "what the model saw" are lit."""
    return page.evaluate(
        """() => {
          const data = document.getElementById('seen').getContext('2d')
            .getImageData(0, 0, 28, 28).data;
          let lit = 0;
          for (let i = 0; i < data.length; i += 4) if (data[i] > 0) lit++;
          return lit;
        }"""
    )


def test_two_strokes_get_an_answer_three_bars_and_the_image_the_model_saw(page, tmp_path):
    draw_strokes(page, SEVEN_STROKES)
    answered(page, "2")
    assert page.inner_text("#answer").strip() in list("0123456789")
    bars = page.locator("#bars li").all_inner_texts()
    assert len(bars) == 3 and all(text.strip().endswith("%") for text in bars)
    assert seen_ink(page) > 20
    page.screenshot(path=tmp_path / "desktop.png", full_page=True)


def test_undo_reads_what_is_left_and_clear_empties_the_answer(page):
    draw_strokes(page, SEVEN_STROKES)
    answered(page, "2")
    page.click("#undo")
    answered(page, "1")
    assert page.is_visible("#result")
    page.click("#clear")
    assert page.is_hidden("#result") and page.is_hidden("#error")


def photo_file(folder: Path) -> Path:
    image = Image.new("RGB", (640, 480), (200, 198, 190))
    ImageDraw.Draw(image).line([(280, 140), (360, 140), (300, 340)], fill=(40, 40, 60), width=16)
    path = folder / "photo.jpg"
    image.save(path, quality=85)
    return path


def test_a_photo_picked_from_disk_is_read(page, tmp_path):
    page.set_input_files("#file", str(photo_file(tmp_path)))
    answered(page, "photo")
    assert page.is_visible("#result") and page.is_hidden("#error")
    assert seen_ink(page) > 20


def test_a_file_that_is_not_an_image_gets_the_servers_one_line(page, tmp_path):
    (tmp_path / "notes.png").write_bytes(b"shopping list: milk")
    page.set_input_files("#file", str(tmp_path / "notes.png"))
    answered(page, "photo")
    error = page.inner_text("#error")
    assert error == "the image: not an image (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)"
    assert page.is_hidden("#result")


def test_a_correction_lands_in_the_collection_with_its_label(page, site):
    _, folder = site
    draw_strokes(page, SEVEN_STROKES)
    answered(page, "2")
    page.click("#fix button[data-digit='7']")
    page.wait_for_selector("#thanks:not([hidden])")
    assert page.inner_text("#thanks") in (
        "Thank you: stored as a 7.",
        "This image was already collected.",
    )
    labels = [json.loads(path.read_text())["label"] for path in folder.glob("*.json")]
    assert 7 in labels


def test_on_a_phone_sized_screen_the_page_fits_and_draws(chromium, site, tmp_path):
    url, _ = site
    context = chromium.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    tab = context.new_page()
    tab.goto(url)
    tab.wait_for_selector("#model:has-text('Model:')")
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    box = tab.locator("#pad").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    draw_strokes(tab, SEVEN_STROKES)
    answered(tab, "2")
    tab.screenshot(path=tmp_path / "phone.png", full_page=True)
    context.close()


def test_the_page_loads_nothing_from_outside(chromium, site):
    url, _ = site
    context = chromium.new_context()
    tab = context.new_page()
    requested: list[str] = []
    tab.on("request", lambda request: requested.append(request.url))
    tab.goto(url)
    tab.wait_for_selector("#model:has-text('Model:')")
    assert requested and all(address.startswith(url) for address in requested), requested
    context.close()
