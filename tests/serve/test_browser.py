"""The web chat page in a real headless Chromium, driven through chromedriver's WebDriver HTTP API.

Needs Debian's browser and driver: `apt-get install -y chromium chromium-driver`. Run with
`python -m pytest -m browser tests/serve/test_browser.py`. The test speaks the W3C WebDriver
protocol to chromedriver with httpx, so it needs no Selenium. Chromium starts with the flags that
turn off its background networking, component updates, sync and first-run tasks.
"""

import shutil
import subprocess
import time

import httpx
import pytest

from steel.serve.engine import Engine, GenerationWorker
from steel.serve.server import create_app

from serve_testing import RunningServer, free_port

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--lang=zh-CN",
]
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"


class WebDriver:
    """The few W3C WebDriver commands the test needs, sent to a chromedriver process."""

    def __init__(self, driver_url: str):
        self.http = httpx.Client(base_url=driver_url, timeout=60)
        options = {"binary": CHROMIUM, "args": CHROMIUM_FLAGS, "prefs": {"intl.accept_languages": "zh-CN"}}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        response = self.http.post("/session", json={"capabilities": capabilities})
        response.raise_for_status()
        self.session = f"/session/{response.json()['value']['sessionId']}"

    def command(self, method: str, path: str, body: dict | None = None):
        response = self.http.request(method, self.session + path, json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {method} {path} failed: {value}")
        return value

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self.command("POST", "/element", {"using": "css selector", "value": css})[ELEMENT_KEY]

    def text(self, css: str) -> str:
        return self.command("GET", f"/element/{self.find(css)}/text")

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/value", {"text": text})

    def script(self, source: str, *args):
        return self.command("POST", "/execute/sync", {"script": source, "args": list(args)})

    def wait_for(self, source: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.script(source)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {source}")

    def quit(self) -> None:
        self.http.delete(self.session)
        self.http.close()


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)")
    port = free_port()
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        driver_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(driver_url + "/status", timeout=2).json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        webdriver = WebDriver(driver_url)
        yield webdriver
        webdriver.quit()
    finally:
        driver.terminate()
        driver.wait(timeout=30)


@pytest.fixture(scope="module")
def page_url(loaded):
    # Each forward pass sleeps 50 ms, so the tokens of a reply reach the browser in separate
    # network reads and the page visibly grows, however fast the machine is.
    hook = loaded.model.register_forward_hook(lambda *_: time.sleep(0.05))
    worker = GenerationWorker(Engine(loaded.model, loaded.tokenizer, max_batch_size=2))
    try:
        with RunningServer(create_app(loaded, worker)) as server:
            yield server.base_url + "/"
    finally:
        hook.remove()


# Records every text the reply bubble shows, so the test can see it grow token by token.
RECORD_REPLY_TEXTS = """
window.replyTexts = [];
new MutationObserver(() => {
  const bubbles = document.querySelectorAll('.message.assistant');
  if (bubbles.length) window.replyTexts.push(bubbles[bubbles.length - 1].textContent);
}).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
"""


def test_page_streams_reply(browser, page_url):
    browser.get(page_url)
    browser.wait_for("return document.getElementById('model-name').textContent !== ''")

    # The browser's language is Chinese, so the page starts in Chinese.
    assert browser.text("#send") == "发送"
    assert browser.text("#new-chat") == "新对话"

    # Greedy decoding makes the tiny model's reply known in advance.
    browser.click("#settings-toggle")
    browser.script("const t = document.getElementById('temperature'); t.value = '0'; t.dispatchEvent(new Event('change'));")
    browser.script(RECORD_REPLY_TEXTS)
    browser.type("#input", "你好")
    browser.click("#send")

    reply = browser.wait_for(
        "const b = document.querySelector('.message.assistant[data-done=\"true\"]'); return b && b.textContent;"
    )
    assert reply == "你好，世界！"
    assert browser.text(".message.user") == "你好"
    texts = browser.script("return window.replyTexts;")
    # The reply appeared in several steps, each a prefix of the next: it was streamed.
    distinct = list(dict.fromkeys(text for text in texts if text))
    assert len(distinct) >= 3
    assert all(reply.startswith(text) for text in distinct)
    assert "\ufffd" not in "".join(distinct)


def test_language_switch_and_new_chat(browser, page_url):
    browser.get(page_url)
    browser.wait_for("return document.getElementById('model-name').textContent !== ''")
    browser.type("#input", "hello")
    browser.click("#send")
    browser.wait_for("return document.querySelector('.message.assistant[data-done=\"true\"]') !== null")

    browser.click("#lang-toggle")
    assert browser.text("#send") == "Send"
    assert browser.text("#new-chat") == "New chat"
    assert browser.script("return document.documentElement.lang") == "en"

    browser.click("#new-chat")
    assert browser.script("return document.querySelectorAll('.message').length") == 0

    # The choice persists across reloads.
    browser.get(page_url)
    assert browser.text("#send") == "Send"
    browser.script("localStorage.clear()")
