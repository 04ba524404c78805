"""The test side of the browser driver (driver.py): a Chromium in a clean interpreter, and
a small page API over its JSON-lines protocol.

Locators are found the way people and assistive technology find things: by role and
accessible name, by label; `css` only for what has no name (the number to pick).
"""
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = os.environ.get("MYCEPA_CHROMIUM", "/usr/bin/chromium")
DRIVER = Path(__file__).with_name("driver.py")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
COMMAND_TIMEOUT = 30        # seconds; every Playwright call in the driver has its own, shorter


def role(kind, name=None, **extra):
    return {"role": kind, **({"name": name} if name is not None else {}), **extra}


def label(text):
    return {"label": text}


def text(value, exact=False):
    return {"text": value, "exact": exact}


def css(selector):
    return {"css": selector}


def regex(pattern, ignore_case=False):
    return {"re": pattern, "flags": "i" if ignore_case else ""}


class DriverError(RuntimeError):
    pass


class BrowserProcess:
    """One Chromium for the test session, driven through driver.py."""

    def __init__(self, log_path):
        if not Path(CHROMIUM).is_file():
            raise DriverError(
                f"Chromium is not installed at {CHROMIUM}: the browser tests need Debian's chromium package. "
                "Run scripts/install-browser.sh (as root it installs it; otherwise it says what to install).")
        self.log = open(log_path, "ab")
        # A clean interpreter: no eventlet patching, nothing of the test process.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
        self.process = subprocess.Popen([sys.executable, str(DRIVER), CHROMIUM], cwd=ROOT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.buffer = b""
        self.version = self._reply(timeout=60)["version"]

    def call(self, op, **arguments):
        if self.process.poll() is not None:
            raise DriverError(f"the browser driver exited ({self.process.returncode}); see {self.log.name}")
        self.process.stdin.write((json.dumps({"op": op, **arguments}) + "\n").encode())
        self.process.stdin.flush()
        return self._reply(COMMAND_TIMEOUT)

    def _reply(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DriverError(f"no answer from the browser driver in {timeout}s; see {self.log.name}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise DriverError(f"the browser driver stopped; see {self.log.name}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer = json.loads(line)
        if answer["ok"]:
            return answer["value"]
        if answer["kind"] == "AssertionError":
            raise AssertionError(answer["error"])
        raise DriverError(answer["error"] + "\n" + answer.get("trace", ""))

    def close(self):
        try:
            if self.process.poll() is None:
                self.process.stdin.write(b'{"op": "quit"}\n')
                self.process.stdin.flush()
                self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self.log.close()


class Page:
    """A fresh browser context (own cookies and storage) with one page."""

    def __init__(self, browser, base_url, viewport=None):
        self.browser, self.base_url = browser, base_url
        browser.call("new_page", viewport=viewport, base_url=base_url)

    def goto(self, path="/"):
        return self.browser.call("goto", url=self.base_url + path)

    def reload(self):
        self.browser.call("reload")

    def click(self, locator):
        self.browser.call("act", locator=locator, action="click")

    def fill(self, locator, value):
        self.browser.call("act", locator=locator, action="fill", args=[value])

    def press(self, locator, key):
        self.browser.call("act", locator=locator, action="press", args=[key])

    def paste(self, locator, value):
        self.browser.call("paste", locator=locator, text=value)

    def text_of(self, locator):
        return self.browser.call("act", locator=locator, action="inner_text")

    def value_of(self, locator):
        return self.browser.call("act", locator=locator, action="input_value")

    def attribute(self, locator, name):
        return self.browser.call("act", locator=locator, action="get_attribute", args=[name])

    def count(self, locator):
        return self.browser.call("act", locator=locator, action="count")

    def expect(self, locator, assertion, *args, negate=False, **kwargs):
        self.browser.call("expect", locator=locator, assertion=assertion, args=list(args), kwargs=kwargs,
                          negate=negate)

    def expect_visible(self, locator, timeout=5000):
        self.expect(locator, "to_be_visible", timeout=timeout)

    def expect_hidden(self, locator, timeout=5000):
        self.expect(locator, "to_be_hidden", timeout=timeout)

    def expect_text(self, locator, expected, timeout=5000):
        self.expect(locator, "to_contain_text", expected, timeout=timeout)

    def expect_focused(self, locator, timeout=5000):
        self.expect(locator, "to_be_focused", timeout=timeout)

    def expect_page(self, assertion, *args, **kwargs):
        self.browser.call("expect", locator=None, assertion=assertion, args=list(args), kwargs=kwargs)

    def evaluate(self, expression, arg=None):
        return self.browser.call("evaluate", expression=expression, arg=arg)

    def focused(self):
        return self.browser.call("focused")

    def requests(self):
        return self.browser.call("requests")

    def errors(self, clear=False):
        """Script errors, CSP violations and failed requests seen so far (`clear`: and forget them)."""
        return self.browser.call("errors", clear=clear)

    def screenshot(self, name, full_page=True):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.browser.call("screenshot", path=str(path), full_page=full_page)
        return path

    def close(self):
        self.browser.call("close_page")
