"""The studio's latency as a person meets it: click -> picture on the page, in headless chromium, on the CPU.

Starts `anime-avatar studio` on the project at --root (its own process, as a user would), opens the page in
Debian's chromium (Selenium + chromium-driver), uploads scikit-image's astronaut photo and times, for each
feed-forward method, the first click on "Make the avatar" and --repeats more, from the click to the avatar shown
(its image fetched by the browser); the same for "Generate". The reference, in this process: the library call the
click ends in (``Studio.avatar`` / ``Studio.generate`` on the same inputs), so the ratio is what the page adds.
With --screenshots DIR it saves one small PNG of each tab (studio-generate.png, studio-photo.png, studio-runs.png).

    OMP_NUM_THREADS=1 .venv/bin/python bench/studio.py --root . --json bench/reported/studio.json --screenshots docs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budgets import cpu_model  # noqa: E402  (bench/ is this script's directory)

from tests.conftest import free_port, stop, wait_http  # noqa: E402

FEED_FORWARD = ("translate (photo → anime GAN)", "attention network", "AdaIN")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def shown_src(driver, element_id: str) -> str | None:
    """The src of the image an image component shows, once the browser has loaded it (else None)."""
    return driver.execute_script(
        "const i = document.querySelector(`#${arguments[0]} img`);"
        "return i && i.complete && i.naturalWidth > 0 ? i.src : null;",
        element_id,
    )


def click_until_new_image(driver, button: str, image: str, timeout: float = 120.0) -> float:
    """Seconds from a click on ``button`` to a new picture loaded in ``image``."""
    from selenium.webdriver.common.by import By

    before = shown_src(driver, image)
    start = time.perf_counter()
    driver.find_element(By.ID, button).click()
    while time.perf_counter() - start < timeout:
        src = shown_src(driver, image)
        if src and src != before:
            return time.perf_counter() - start
        time.sleep(0.01)
    raise TimeoutError(f"no new picture in #{image} within {timeout:.0f} s of clicking #{button}")


def set_number(driver, selector: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value, Keys.TAB)
    time.sleep(0.3)


def choose(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    for element in driver.find_elements(By.CSS_SELECTOR, "#photo-method label"):
        if element.text.strip() == label:
            element.click()
            return
    raise ValueError(f"no method {label!r} on the page")


def tab(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == label).click()
    time.sleep(0.5)


def screenshot(driver, path: Path, width: int = 960) -> None:
    """A small PNG of the page as shown (resized, 128 colours)."""
    import io

    from PIL import Image

    size = driver.get_window_size()
    driver.set_window_size(1280, 1450)
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    driver.set_window_size(size["width"], size["height"])
    image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"screenshot {path} ({path.stat().st_size // 1024} KiB)")


def reference(root: Path, photo: Path, methods: list[str], style: Path, repeats: int) -> dict[str, float]:
    """Median seconds of the library calls behind the clicks, in this process (models loaded first)."""
    from anime_avatar.studio import Studio

    here = Path.cwd()
    studio = Studio(root, out=Path(tempfile.mkdtemp(prefix="studio-bench-")))
    try:
        studio.warm()
        times = {}
        for method in methods:
            studio.avatar(str(photo), method, str(style))  # loads the method's net
            runs = []
            for i in range(repeats):  # at the sizes the page's timed clicks use (it timed them at 256 px before)
                start = time.perf_counter()
                studio.avatar(str(photo), method, str(style), size=224 - 32 * (i % 2))
                runs.append(time.perf_counter() - start)
            times[method] = statistics.median(runs)
        runs = []
        for i in range(repeats):
            start = time.perf_counter()
            studio.generate(i, 16, 0.7)
            runs.append(time.perf_counter() - start)
        times["generate 16"] = statistics.median(runs)
        return times
    finally:
        os.chdir(here)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="the project the studio serves")
    parser.add_argument("--repeats", type=int, default=5, help="clicks after the first (default: 5)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save a PNG of each tab in DIR")
    args = parser.parse_args()
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from skimage import data

    from anime_avatar.data.synthetic import render_illustration

    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="studio-bench-files-"))
    photo = work / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    style = work / "style.png"  # the first of the page's style examples: a synthetic illustration
    render_illustration(7, 0, size=256).image.save(style)

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (work / "studio.log").open("w")
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "studio", "--port", str(port)], cwd=root,
                              env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    results: dict = {"threads": os.environ.get("OMP_NUM_THREADS", "default"), "cpu": cpu_model(),
                     "cores": os.cpu_count(), "load_average": os.getloadavg()[0]}  # fmt: skip
    driver = browser()
    try:
        wait_http(url, server, timeout=300)
        results["server_start_s"] = round(time.perf_counter() - started, 2)
        start = time.perf_counter()
        driver.get(url)
        WebDriverWait(driver, 60, poll_frequency=0.05).until(lambda d: d.find_elements(By.ID, "gen-button"))
        results["page_load_s"] = round(time.perf_counter() - start, 2)

        tab(driver, "Photo → avatar")
        driver.find_element(By.CSS_SELECTOR, "#photo-file input[type=file]").send_keys(str(photo))
        while not shown_src(driver, "photo-faces"):
            time.sleep(0.05)
        style_sent = False
        methods = []
        clicks: dict[str, dict[str, float]] = {}
        for method in FEED_FORWARD:
            choose(driver, method)
            if method != FEED_FORWARD[0] and not style_sent:
                driver.find_element(By.CSS_SELECTOR, "#photo-style input[type=file]").send_keys(str(style))
                WebDriverWait(driver, 60).until(lambda d: style.stem in d.find_element(By.ID, "photo-style").text)
                time.sleep(0.5)  # not timed: the upload is done before the click
                style_sent = True
            try:
                first = click_until_new_image(driver, "photo-button", "photo-avatar", timeout=60)
            except TimeoutError:
                status = driver.find_element(By.ID, "photo-status").text
                print(f"{method}: no avatar ({status})")
                continue
            if args.screenshots and method == FEED_FORWARD[0]:
                screenshot(driver, args.screenshots / "studio-photo.png")
            later = []
            for i in range(args.repeats):  # another size each time: the same picture would keep its address
                set_number(driver, "#photo-size input[type=number]", str(224 - 32 * (i % 2)))
                later.append(click_until_new_image(driver, "photo-button", "photo-avatar"))
            set_number(driver, "#photo-size input[type=number]", "256")
            clicks[method] = {"first_s": round(first, 3), "median_s": round(statistics.median(later), 3)}
            methods.append(method)
            print(f"{method}: first avatar {first:.2f} s after the click, then median {statistics.median(later):.2f} s")

        tab(driver, "Generate")
        first = click_until_new_image(driver, "gen-button", "gen-grid")
        driver.find_element(By.ID, "walk-button").click()
        later = []
        for i in range(args.repeats):
            set_number(driver, "#gen-seed input", str(i + 1))
            later.append(click_until_new_image(driver, "gen-button", "gen-grid"))
        clicks["generate 16"] = {"first_s": round(first, 3), "median_s": round(statistics.median(later), 3)}
        print(f"generate 16: first grid {first:.2f} s after the click, then median {statistics.median(later):.2f} s")
        if args.screenshots:
            time.sleep(1.0)
            screenshot(driver, args.screenshots / "studio-generate.png")
            tab(driver, "Runs")
            time.sleep(6.0)
            screenshot(driver, args.screenshots / "studio-runs.png")
    finally:
        driver.quit()
        stop(server)
        log.close()

    library = reference(root, photo, methods, style, args.repeats)
    for what, timing in clicks.items():
        timing["library_median_s"] = round(library[what], 3)
        timing["page_over_library"] = round(timing["median_s"] / library[what], 2)
        print(f"{what}: the library call alone {library[what]:.2f} s; the page takes "
              f"{timing['page_over_library']:.2f}x that")  # fmt: skip
    results["clicks"] = clicks
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"results in {args.json}")


if __name__ == "__main__":
    main()
