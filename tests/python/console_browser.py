"""Drives the web console in a real browser (Debian's chromium through
chromedriver, with selenium) against live edgeserve servers, checking each
view against the API it shows, and saves screenshots.

    python3 console_browser.py BASE AUTH_BASE AUTH_KEY SCREENSHOT_DIR

BASE serves linear, digits, minilm, recommender, gpt2 and `broken` (a model
that fails to load); AUTH_BASE serves linear and requires AUTH_KEY.
Prints "console ok" when every check passed.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE, AUTH_BASE, AUTH_KEY, SHOTS = sys.argv[1:5]
# A guard against a hung page, far above what any step takes.
GUARD_S = 60


def api(base, path, body=None, key=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="GET" if body is None else "POST")
    request.add_header("content-type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"{}")


def browser(profile):
    """A headless chromium whose profile lives in `profile`, a folder the caller removes."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(GUARD_S)
    return driver


def wait(driver, condition, what):
    try:
        return WebDriverWait(driver, GUARD_S, poll_frequency=0.1).until(lambda d: condition(d))
    except Exception as e:
        errors = [el.text for el in driver.find_elements(By.CSS_SELECTOR, ".error")]
        raise AssertionError(f"waiting for {what}: {e!r}; errors on the page: {errors}") from None


def css(driver, selector):
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def shot(driver, name, anchor=None):
    """Saves the window as SHOTS/name.png, scrolled to `anchor` (a selector) when given."""
    if anchor:
        driver.execute_script("document.querySelector(arguments[0]).scrollIntoView(); window.scrollBy(0, -70)", anchor)
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def go(driver, hash_):
    driver.get(f"{BASE}/console/#/{hash_}")


def models_view(driver):
    driver.get(BASE + "/")
    assert driver.current_url.endswith("/console/"), f"/ redirects to the console, got {driver.current_url}"
    wait(driver, lambda d: css(d, "#models-table[data-loaded]"), "the models table")
    index = api(BASE, "/v2/repository/index", {})
    expected = {}
    for row in index:
        expected.setdefault(row["name"], row)
    rows = {tr.get_attribute("data-model"): tr for tr in driver.find_elements(By.CSS_SELECTOR, "#models-table tbody tr[data-model]")}
    assert set(rows) == set(expected), f"console lists {sorted(rows)}, the index {sorted(expected)}"
    for name, row in expected.items():
        assert rows[name].get_attribute("data-state") == row["state"], (name, row)
    broken = rows["broken"]
    assert "FAILED" in broken.find_element(By.CSS_SELECTOR, ".col-state").text
    error = broken.find_element(By.CSS_SELECTOR, ".load-error").get_attribute("data-reason")
    assert error and error == expected["broken"]["reason"], (error, expected["broken"])
    # The header names the server's default device as GET /v2 does, with
    # what it runs at (for the CPU, its kernels' SIMD level).
    device = api(BASE, "/v2")["device"]
    named = f"{device['kind']} · {device['name']} · {device['api']}"
    wait(driver, lambda d: named in css(d, "#node-info").text, f"the header naming {named!r}")
    # Device and instances come from each ready model's metadata.
    wait(driver, lambda d: css(d, 'tr[data-model="linear"] .col-instances').text == "2", "linear's instances")
    assert css(driver, 'tr[data-model="linear"] .col-device').text == "cpu"
    assert css(driver, 'tr[data-model="digits"] .tag').text == "digits"
    wait(driver, lambda d: css(d, 'tr[data-model="linear"] .col-weights').text.endswith("B"), "linear's weight bytes")
    shot(driver, "models")

    def state(name):
        return next(r["state"] for r in api(BASE, "/v2/repository/index", {}) if r["name"] == name)

    css(driver, 'tr[data-model="linear"] button[data-action="unload"]').click()
    wait(driver, lambda d: css(d, 'tr[data-model="linear"]').get_attribute("data-state") == "UNAVAILABLE", "linear unloaded in the view")
    assert state("linear") == "UNAVAILABLE"
    wait(driver, lambda d: css(d, 'tr[data-model="linear"] button[data-action="load"]'), "a load button").click()
    wait(driver, lambda d: css(d, 'tr[data-model="linear"]').get_attribute("data-state") == "READY", "linear loaded in the view")
    assert state("linear") == "READY"


def try_it(driver):
    go(driver, "models/linear")
    data = wait(driver, lambda d: css(d, 'textarea[data-input="x"]'), "the try-it form")
    data.clear()
    data.send_keys("1 2 3")
    css(driver, "#try-send").click()
    row = wait(driver, lambda d: css(d, 'tr[data-output="y"]'), "linear's output")
    y = json.loads(row.get_attribute("data-values"))
    assert all(abs(a - b) < 1e-6 for a, b in zip(y, [0.4, 0.5, 0.6])) and len(y) == 3, y
    assert "[3, 1]" in row.text
    # The curl snippet is a working command that gets the same answer.
    curl = css(driver, 'pre[data-snippet="curl"]').text
    answer = json.loads(subprocess.run(["bash", "-c", curl], check=True, capture_output=True, text=True).stdout)
    assert answer["outputs"][0]["data"] == y, (answer, y)
    python = css(driver, 'pre[data-snippet="python"]').text
    assert BASE in python
    compile(python, "the Python snippet", "exec")
    shot(driver, "try-it", "#try-result")

    # A request the server rejects renders its message.
    shape = css(driver, 'input[data-shape="x"]')
    shape.clear()
    shape.send_keys("2, 1")
    css(driver, "#try-send").click()
    error = wait(driver, lambda d: css(d, "#try-result .error"), "the server's error")
    assert "400" in error.text and "shape" in error.text.lower(), error.text


def draw(driver, canvas, strokes):
    """Pointer strokes, each a list of (x, y) in 0..1 of the canvas."""
    size = canvas.size["width"]
    for stroke in strokes:
        actions = ActionChains(driver, duration=10)
        x0, y0 = stroke[0]
        actions.move_to_element_with_offset(canvas, int((x0 - 0.5) * size), int((y0 - 0.5) * size)).click_and_hold()
        px, py = x0, y0
        for x, y in stroke[1:]:
            actions.move_by_offset(int((x - px) * size), int((y - py) * size))
            px, py = x, y
        actions.release().perform()


def classify_drawing(driver, strokes, name):
    css(driver, "#digit-clear").click()
    draw(driver, css(driver, "#digit-canvas"), strokes)
    result = wait(driver, lambda d: css(d, "#digit-result[data-label]"), "a classified digit")
    pixels = json.loads(result.get_attribute("data-pixels"))
    label = int(result.get_attribute("data-label"))
    assert len(pixels) == 64 and all(0 <= p <= 16 for p in pixels) and sum(pixels) > 0, pixels
    bars = driver.find_elements(By.CSS_SELECTOR, "#digit-result .bar-row")
    probabilities = [float(b.get_attribute("data-p")) for b in bars]
    assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-4, probabilities
    assert int(css(driver, "#digit-result .bars").get_attribute("data-top")) == label
    # The same 8x8 array through the API gets the same class.
    response = api(BASE, "/v2/models/digits/infer", {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}]})
    api_label = next(o for o in response["outputs"] if o["name"] == "label")["data"][0]
    assert api_label == label, (api_label, label)
    shot(driver, name, "#digits-widget")
    return label


def digits(driver):
    go(driver, "models/digits")
    wait(driver, lambda d: css(d, "#digit-canvas"), "the digit canvas")
    ring = [(0.5 + 0.22 * math.sin(2 * math.pi * t / 24), 0.5 - 0.38 * math.cos(2 * math.pi * t / 24)) for t in range(25)]
    one = classify_drawing(driver, [[(0.55, 0.12), (0.55, 0.3), (0.53, 0.5), (0.52, 0.7), (0.5, 0.88)]], "digits-1")
    zero = classify_drawing(driver, [ring], "digits")
    print(f"drawn 0 -> {zero}, drawn 1 -> {one}")
    assert (zero, one) == (0, 1), f"a drawn ring was classified {zero}, a drawn bar {one}"


def embeddings(driver):
    go(driver, "models/minilm")
    wait(driver, lambda d: css(d, "#embed-run"), "the embeddings widget").click()
    heatmap = wait(driver, lambda d: css(d, "#heatmap"), "the similarity heatmap")
    matrix = json.loads(heatmap.get_attribute("data-matrix"))
    sentences = [s for s in css(driver, "#sentences").get_attribute("value").split("\n") if s.strip()]
    response = api(BASE, "/v2/models/minilm/infer", {"inputs": [{"name": "text", "shape": [len(sentences)], "datatype": "BYTES", "data": sentences}], "outputs": [{"name": "embedding"}]})
    flat = response["outputs"][0]["data"]
    dim = len(flat) // len(sentences)
    rows = [flat[i * dim:(i + 1) * dim] for i in range(len(sentences))]
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            cos = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
            assert abs(cos - matrix[i][j]) < 1e-4, (i, j, cos, matrix[i][j])
    assert len(driver.find_elements(By.CSS_SELECTOR, "#heatmap .hm-cell")) == len(sentences) ** 2
    # Paraphrases are closer than unrelated sentences.
    assert matrix[0][1] > matrix[0][2] and matrix[2][3] > matrix[1][2], matrix
    shot(driver, "embeddings", "#embeddings-widget")


def recommender(driver):
    go(driver, "models/recommender")
    wait(driver, lambda d: css(d, "#rec-run"), "the recommender widget").click()
    wait(driver, lambda d: css(d, "#recommender-result tr[data-item]"), "ranked items")
    shown = [int(tr.get_attribute("data-item")) for tr in driver.find_elements(By.CSS_SELECTOR, "#recommender-result tr[data-item]")]
    response = api(BASE, "/v2/models/recommender/infer", {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [42]}], "parameters": {"k": 10}})
    items = next(o for o in response["outputs"] if o["name"] == "items")["data"]
    assert shown == items, (shown, items)
    shot(driver, "recommender", "#recommender-widget")


def generation(driver):
    go(driver, "models/gpt2")
    seed = wait(driver, lambda d: css(d, "#seed"), "the generation widget")
    seed.send_keys("7")
    css(driver, "#generate-run").click()
    output = wait(driver, lambda d: css(d, "#generated[data-done]"), "generated text")
    assert not output.find_elements(By.CSS_SELECTOR, ".error"), output.text
    text = css(driver, "#generated .completion").text
    params = {"max_tokens": 32, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 7}
    response = api(BASE, "/v2/models/gpt2/infer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Alice was beginning to get very tired"]}], "parameters": params})
    expected = next(o for o in response["outputs"] if o["name"] == "text")["data"][0]
    assert text.strip() == expected.strip(), (text, expected)
    # The widget reads /v2/models/gpt2/generate_stream: the text must arrive
    # in pieces, not in one answer at the end.
    steps = int(output.get_attribute("data-steps"))
    assert steps >= 2, f"generated text appeared in {steps} step(s); expected streaming"
    print(f"generation: {steps} steps")
    shot(driver, "generation", "#generation-widget")


def errors(driver):
    go(driver, "models/no-such-model")
    error = wait(driver, lambda d: css(d, ".error"), "an error for a missing model")
    assert "no-such-model" in error.text, error.text


def metrics(driver):
    go(driver, "metrics")
    wait(driver, lambda d: css(d, "#chart-inflight"), "the metrics charts")
    # Traffic while the page watches, over a few of its samples.
    for burst in range(4):
        samples = int(css(driver, "#charts").get_attribute("data-samples"))
        for i in range(5 + 5 * burst):
            api(BASE, "/v2/models/linear/infer", {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [i]}]})
        wait(driver, lambda d: int(css(d, "#charts").get_attribute("data-samples")) > samples, "the next sample")
    for chart in ["requests", "latency"]:
        wait(driver, lambda d: int(css(d, f"#chart-{chart}").get_attribute("data-points")) > 0, f"points on the {chart} chart")
        assert css(driver, f"#chart-{chart} canvas"), chart
    assert "success" in css(driver, "#chart-requests").text
    shot(driver, "metrics")


def phone(driver):
    driver.set_window_size(390, 844)
    go(driver, "models")
    wait(driver, lambda d: css(d, "#models-table[data-loaded]"), "the models table on a phone")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px screen"
    shot(driver, "models-phone")
    driver.set_window_size(1280, 900)


def auth(driver):
    driver.get(AUTH_BASE + "/console/")
    dialog = wait(driver, lambda d: css(d, "#key-dialog[open]"), "the API key prompt")
    assert "requires an API key" in dialog.text, dialog.text
    dialog.find_element(By.CSS_SELECTOR, "input").send_keys("wrong-key")
    css(driver, "#key-ok").click()
    dialog = wait(driver, lambda d: css(d, "#key-dialog[open]"), "the prompt again after a wrong key")
    assert "refused" in dialog.text, dialog.text
    dialog.find_element(By.CSS_SELECTOR, "input").send_keys(AUTH_KEY)
    css(driver, "#key-ok").click()
    wait(driver, lambda d: css(d, 'tr[data-model="linear"][data-state="READY"]'), "the models list with the key")
    assert driver.execute_script("return sessionStorage.getItem('edgeserve.apiKey')") == AUTH_KEY


def main():
    os.makedirs(SHOTS, exist_ok=True)
    # The profile is removed with the folder: one left per run filled CI's disk.
    with tempfile.TemporaryDirectory(prefix="edgeserve-chromium-", ignore_cleanup_errors=True) as profile:
        check_all(profile)
    print("console ok")


def check_all(profile):
    driver = browser(profile)
    try:
        for check in [models_view, try_it, digits, embeddings, recommender, generation, errors, metrics, phone, auth]:
            check(driver)
            print(f"{check.__name__}: ok")
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"] and "404" not in e["message"] and "400" not in e["message"]]
        assert not logs, f"console errors in the page: {logs}"
    except Exception:
        shot(driver, "failure")
        raise
    finally:
        driver.quit()


main()
