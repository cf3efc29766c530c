"""Frames per second on the play page, in a real headless Chromium, with the frame-rate cap off.

What a player sees: the page sends an action, the server steps the model one frame (KV cache),
encodes it as PNG and sends it back over the WebSocket, the page draws it and sends the next
action. The page's own frames/s counter (`#fps`, over its last frames) is read after a warm-up,
several times; the table gives the median of those readings, the server's own per-frame time
(`ms`, the model step alone) and its ratio to the first package.

    python benchmarks/play_page.py --dataset demo-project/datasets/<simulator dataset> \\
        demo-project/packages/<teacher> demo-project/packages/<student> [--seconds 20]

Needs Debian's chromium and chromium-driver (`make browser`) and selenium (the dev extra). Run it
on an otherwise idle machine: the browser, the server and the model share the CPU.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch


def serve(player) -> tuple[str, object, object]:
    from worldforge.play.server import serve_in_background

    try:
        return serve_in_background(player)
    except TimeoutError as error:
        raise SystemExit(str(error)) from None


def browser():
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs Debian's chromium and chromium-driver: make browser")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def wait_for(driver, script: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(f"return {script}")):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {script}")
        time.sleep(0.05)
    return value


def measure(driver, url: str, seconds: float, readings: int) -> tuple[list[float], float, int]:
    """The page's frames/s readings (uncapped, play mode, no key held: the noop action), the
    median of the server's step time (`#ms`, read with them) and the frames made."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url)
    wait_for(driver, "window.worldforge.info !== null")
    Select(driver.find_element(By.ID, "mode")).select_by_value("play")
    cap = driver.find_element(By.ID, "realtime")
    if cap.is_selected():
        cap.click()  # the frame-rate cap off: frames as fast as the model makes them
    driver.find_element(By.ID, "start").click()
    wait_for(driver, "window.worldforge.frames.length >= 8")  # warm-up: context, first steps
    values, step_ms = [], []
    for _ in range(readings):
        time.sleep(seconds / readings)
        values.append(float(driver.find_element(By.ID, "fps").text))
        step_ms.append(float(driver.find_element(By.ID, "ms").text))
    return values, statistics.median(step_ms), driver.execute_script("return window.worldforge.frames.length")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "packages", nargs="+", type=Path, help="model package folders (the first is the baseline)"
    )
    parser.add_argument(
        "--dataset", type=Path, required=True, help="the dataset the packages were trained on"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per package")
    parser.add_argument("--readings", type=int, default=5, help="frames/s readings per package")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from worldforge.play.session import Player

    driver = browser()
    rows = []
    try:
        for package in args.packages:
            player = Player.open(package, args.dataset, episodes=2, context_frames=4)
            url, server, thread = serve(player)
            try:
                values, step_ms, frames = measure(driver, url, args.seconds, args.readings)
            finally:
                server.should_exit = True
                thread.join(10)
            rows.append((package.name, statistics.median(values), min(values), max(values), step_ms, frames))
    finally:
        driver.quit()

    print(f"play page, headless Chromium, frame-rate cap off, torch threads {torch.get_num_threads()}")
    print(
        f"{'package':60s} {'frames/s':>9s} {'min':>6s} {'max':>6s} {'step ms':>8s} {'frames':>7s} {'ratio':>6s}"
    )
    base = rows[0][1]
    for name, median, low, high, step_ms, frames in rows:
        print(
            f"{name:60s} {median:9.1f} {low:6.1f} {high:6.1f} {step_ms:8.1f} {frames:7d} {median / base:6.2f}"
        )


if __name__ == "__main__":
    main()
