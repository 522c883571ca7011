"""The console, as a user drives it: sign in (and the messages for keys that cannot), generate with the
built-in model and watch it run, cancel a queued job, browse the gallery and recall a picture's
parameters, paint a mask and inpaint, manage keys as an admin; in a desktop and a phone-sized window.
Results are checked through the API as well as on the page."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from browser_support import Console, Server
from PIL import Image, ImageChops

pytestmark = pytest.mark.xdist_group("console")

# Records, in the page, every value the progress bars take and every preview shown (a MutationObserver
# installed before the page's own scripts run).
RECORDER = """
window.__progress = [];
window.__previews = 0;
new MutationObserver((records) => {
  for (const r of records) {
    if (r.type === "attributes" && r.target.tagName === "PROGRESS") {
      window.__progress.push([Number(r.target.value), Number(r.target.max)]);
    }
    if (r.type === "attributes" && r.target.classList && r.target.classList.contains("preview")) {
      window.__previews += 1;
    }
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["value", "src"] });
"""


def wait_status(server: Server, gen_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        gen: dict[str, Any] = server.api("GET", f"/api/v1/generations/{gen_id}").json()["data"]
        if gen["status"] in statuses:
            return gen
        assert time.monotonic() < deadline, f"{gen_id} still {gen['status']}"
        time.sleep(0.1)


def create(server: Server, **body: Any) -> dict[str, Any]:
    r = server.api("POST", "/api/v1/generations", json={"prompt": "a red circle"} | body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def image_of(server: Server, url: str) -> Image.Image:
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200
    return Image.open(io.BytesIO(r.content)).convert("RGB")


def test_sign_in_and_the_messages_for_keys_that_cannot(console: Console, server: Server) -> None:
    page = console.page
    console.goto("/")
    page.wait_for_url("**/console/signin?next=*")

    page.fill("#key", "easel_sk_not_a_key")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "Invalid API key" in page.inner_text("#signin-error")

    revoked, revoked_id = server.create_key("gone", ["generations:read"])
    assert server.api("DELETE", f"/api/v1/admin/keys/{revoked_id}").status_code == 200
    page.fill("#key", revoked)
    page.click("#signin-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#signin-error').textContent.includes('revoked')")

    usage_only, _ = server.create_key("usage only", ["usage:read"])
    page.fill("#key", usage_only)
    page.click("#signin-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#signin-error').textContent.includes('may do nothing')"
    )
    assert page.url.endswith("/console/signin?next=%2Fconsole%2F")

    # A reader lands on the gallery; what it may not do is not offered, and the admin page says why.
    reader, reader_id = server.create_key("reader", ["images:read"])
    console.sign_in(reader)
    assert page.url.endswith("/console/gallery")
    visible = [a.inner_text() for a in page.query_selector_all("nav li:not([hidden]) a")]
    assert visible == ["Gallery"]
    assert page.is_hidden("#move-selected")
    console.loaded("/console/admin")
    assert page.is_visible("#admin-denied") and page.is_hidden("#admin")

    # A key revoked while in use sends the user back to sign in, with the reason.
    assert server.api("DELETE", f"/api/v1/admin/keys/{reader_id}").status_code == 200
    console.goto("/console/gallery")
    page.wait_for_url("**/console/signin?next=*")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "revoked" in page.inner_text("#signin-error")


def test_generate_watch_it_run_and_vary_it(console: Console, server: Server, shots: Path) -> None:
    page = console.page
    page.add_init_script(RECORDER)
    console.sign_in()
    assert page.url.endswith("/console/")
    page.fill("#prompt", "a red circle on a blue background")
    page.fill("#seed", "11")
    page.click("#advanced summary")
    page.fill("#steps", "60")
    page.fill("#previews", "3")
    page.click("#generate")
    card = page.wait_for_selector(".job[data-status=success]", timeout=90_000)
    gen_id = card.get_attribute("data-id")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.result img')].every((i) => i.complete && i.naturalWidth > 0)"
    )

    seen = page.evaluate("window.__progress")
    middle = [v for v, total in seen if total == 60 and 0 < v < 60]
    assert middle, f"the progress bar never showed a step between 0 and 60: {seen}"
    assert middle == sorted(middle), middle
    assert page.evaluate("window.__previews") >= 1, "no preview was shown while the job ran"

    gen = server.api("GET", f"/api/v1/generations/{gen_id}").json()["data"]
    assert (gen["status"], gen["seed"], gen["steps"], gen["model"]) == ("success", 11, 60, "easel-builtin")
    shown = page.get_attribute(".result img", "src")
    # The same image (its signed link may carry a later expiry than the one the page got).
    assert urlsplit(shown).path == urlsplit(gen["outputImages"][0]["storageUrl"]).path
    assert image_of(server, shown).size == (256, 256)
    page.screenshot(path=str(shots / "playground.png"), full_page=True)

    page.click("#seed-random")
    assert page.input_value("#seed") == ""
    page.click("#seed-reuse")
    assert page.input_value("#seed") == "11"

    page.click(".job[data-status=success] button:text('Same settings, new seed')")
    page.wait_for_function(
        "() => document.querySelectorAll('.job[data-status=success]').length === 2", timeout=90_000
    )
    again_id = page.get_attribute(".job >> nth=0", "data-id")
    again = server.api("GET", f"/api/v1/generations/{again_id}").json()["data"]
    assert again_id != gen_id and again["seed"] != 11 and again["steps"] == 60
    assert again["originalPrompt"] == gen["originalPrompt"]


def test_bad_input_is_named_on_the_form(console: Console, server: Server) -> None:
    page = console.page
    console.sign_in()
    page.fill("#prompt", "a red circle")
    page.fill("#customSize", "33x33")
    page.click("#generate")
    page.wait_for_selector("#form-error:not([hidden])")
    text = page.inner_text("#form-error")
    assert "size" in text and "multiple of 8" in text, text
    assert page.query_selector_all(".job") == []


def test_cancel_a_queued_job_and_retry_it(console: Console, server: Server) -> None:
    page = console.page
    running = create(server, steps=200, n=4, seed=1)
    wait_status(server, running["id"], {"processing"})
    queued = create(server, steps=4, seed=2, size="64x64")
    assert server.api("GET", f"/api/v1/generations/{queued['id']}").json()["data"]["status"] == "pending"

    console.sign_in(landing="body[data-ready=true]")
    console.loaded("/console/queue")
    row = f"#active li[data-id='{queued['id']}']"
    page.wait_for_selector(f"{row}[data-status=pending]")
    page.click(f"{row} button.cancel")
    page.wait_for_selector(f"#ended li[data-id='{queued['id']}'][data-status=canceled]")
    assert wait_status(server, queued["id"], {"canceled"})["status"] == "canceled"

    busy = f"#active li[data-id='{running['id']}']"
    page.wait_for_selector(f"{busy}[data-status=processing]")
    page.click(f"{busy} button.cancel")
    assert wait_status(server, running["id"], {"canceled", "success"})["status"] == "canceled"
    page.wait_for_selector(f"#ended li[data-id='{running['id']}'][data-status=canceled]")

    page.click(f"#ended li[data-id='{queued['id']}'] button.retry")
    assert wait_status(server, queued["id"], {"success", "failed"})["status"] == "success"
    page.wait_for_selector(f"li[data-id='{queued['id']}']", state="detached")


def test_gallery_folders_and_recall(console: Console, server: Server, shots: Path) -> None:
    page = console.page
    made = create(server, prompt="a blue square", seed=5, size="64x48", steps=12, guidance=5.5)
    gen = wait_status(server, made["id"], {"success"})
    image_id = gen["outputImageId"]

    console.sign_in()
    console.loaded("/console/gallery?model=easel-builtin")
    tile = f"#gallery li[data-image-id='{image_id}']"
    page.wait_for_selector(tile)
    page.check(f"{tile} input.select")
    page.fill("#move-target", "picks")
    page.click("#move-selected")
    page.wait_for_selector("#folders button[data-folder='picks']")
    assert server.api("GET", f"/api/v1/images/{image_id}").json()["data"]["folder"] == "picks"
    page.click("#folders button[data-folder='picks']")
    page.wait_for_function(
        f"() => document.querySelectorAll('#gallery li').length === 1 && !!document.querySelector(\"{tile}\")"
    )
    page.screenshot(path=str(shots / "gallery.png"), full_page=True)

    page.click(f"{tile} a")
    page.wait_for_url(f"**/console/images/{image_id}")
    page.wait_for_selector("body[data-loaded=true]")
    assert "a blue square" in page.inner_text("#detail-params")
    page.click("#recall")
    page.wait_for_url("**/console/?recall=*")
    page.wait_for_selector("body[data-loaded=true]")
    assert page.input_value("#prompt") == "a blue square"
    assert page.input_value("#seed") == "5"
    assert page.input_value("#customSize") == "64x48"
    assert page.input_value("#steps") == "12"
    assert float(page.input_value("#guidance")) == 5.5

    page.once("dialog", lambda d: d.accept())
    console.loaded("/console/gallery?folder=picks")
    page.click("#delete-folder")
    page.wait_for_selector("#folders button[data-folder='picks']", state="detached")
    assert server.api("GET", f"/api/v1/images/{image_id}").json()["data"]["folder"] is None


def test_paint_a_mask_and_inpaint(console: Console, server: Server, tmp_path: Path) -> None:
    page = console.page
    rng = random.Random(4)
    source = Image.new("RGB", (256, 256))
    source.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(256 * 256)])
    path = tmp_path / "source.png"
    source.save(path)

    console.sign_in()
    page.set_input_files("#source-file", str(path))
    page.wait_for_selector("#source-box:not([hidden])")
    page.check("#mask-on")
    box = page.locator("#mask-canvas").bounding_box()
    assert box and box["width"] > 100
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * (0.25 + 0.05 * i), y)
    page.mouse.up()
    page.fill("#prompt", "a red circle")
    page.fill("#seed", "3")
    page.click("#generate")
    card = page.wait_for_selector(".job[data-status=success]", timeout=90_000)

    gen = server.api("GET", f"/api/v1/generations/{card.get_attribute('data-id')}").json()["data"]
    assert gen["task"] == "inpaint", gen
    out = image_of(server, gen["outputImages"][0]["storageUrl"])
    assert out.size == source.size
    # Outside the painted stroke (top and bottom quarters) every pixel is the source's; inside it changed.
    for top in (0, 192):
        band = (0, top, 256, top + 64)
        assert ImageChops.difference(out.crop(band), source.crop(band)).getbbox() is None, band
    stroke = (80, 120, 176, 136)
    assert ImageChops.difference(out.crop(stroke), source.crop(stroke)).getbbox() is not None


def test_admin_creates_and_revokes_a_key(console: Console, server: Server, shots: Path) -> None:
    page = console.page
    console.sign_in()
    console.loaded("/console/admin")
    page.wait_for_selector("#usage-chart svg")
    assert len(page.query_selector_all("#usage-chart rect.bar")) >= 30
    page.fill("#key-name", "ci key")
    page.uncheck("#key-scopes input[value='images:write']")
    page.check("#key-scopes input[value='images:delete']")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#new-key:not([hidden])")
    plaintext = page.inner_text("#new-key-value").strip()
    assert plaintext.startswith("easel_sk_")

    me = server.api("GET", "/api/v1/me", headers={"Authorization": f"Bearer {plaintext}"}).json()["data"]
    assert me["keyName"] == "ci key"
    assert "images:write" not in me["scopes"] and "images:delete" in me["scopes"]
    row = f"#keys tr[data-key-id='{me['keyId']}']"
    page.wait_for_selector(f"{row}[data-state=active]")
    page.screenshot(path=str(shots / "admin.png"), full_page=True)

    page.once("dialog", lambda d: d.accept())
    page.click(f"{row} button.revoke")
    page.wait_for_selector(f"{row}[data-state=revoked]")
    r = server.api("GET", "/api/v1/me", headers={"Authorization": f"Bearer {plaintext}"})
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_a_phone_sized_window(phone: Console, server: Server, shots: Path) -> None:
    page = phone.page
    phone.sign_in()
    for path in ("/console/", "/console/gallery", "/console/queue", "/console/admin"):
        phone.loaded(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide in a 390 px window"
        if path == "/console/":
            page.screenshot(path=str(shots / "playground-phone.png"), full_page=True)
    # Keyboard: the first Tab reaches the skip link, which moves the focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
