"""Drives Debian's Chromium with Playwright for the browser tests, in a process of its own.

The tests run in an eventlet-patched interpreter (tests/conftest.py), where Playwright's
sync API hangs (its greenlet/asyncio loop and eventlet's hub do not mix: closing the
browser never returns). So this script runs in a clean interpreter and takes commands
as JSON lines on stdin, one answer per line on stdout:

    {"op": "new_page", "viewport": [390, 844]}          -> {"ok": true}
    {"op": "act", "locator": {"role": "button", "name": "Aanmelden"}, "action": "click"}
    {"op": "expect", "locator": {"label": "Gebruikersnaam"}, "assertion": "to_be_focused"}
    {"op": "screenshot", "path": "..."}
    -> {"ok": true, "value": ...} or {"ok": false, "kind": "AssertionError", "error": "..."}

Never a browser download: the system's Chromium, by its path.
"""
import json
import re
import sys
import traceback

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
ACTIONS = {"click", "fill", "press", "focus", "inner_text", "input_value", "get_attribute", "count",
           "is_visible", "type"}


def decode(value):
    """{"re": pattern, "flags": "i"} -> a compiled regex; lists and dicts recursively."""
    if isinstance(value, dict) and set(value) <= {"re", "flags"} and "re" in value:
        return re.compile(value["re"], re.IGNORECASE if "i" in value.get("flags", "") else 0)
    if isinstance(value, list):
        return [decode(item) for item in value]
    if isinstance(value, dict):
        return {key: decode(item) for key, item in value.items()}
    return value


class Driver:
    def __init__(self, executable):
        from playwright.sync_api import sync_playwright
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        self.context = self.page = None
        self.requests, self.errors = [], []

    # -- commands ------------------------------------------------------------------------

    def new_page(self, viewport=None, base_url=None):
        self.close_page()
        width, height = viewport or (1280, 860)
        self.context = self.browser.new_context(viewport={"width": width, "height": height},
                                                base_url=base_url, locale="nl-BE")
        self.context.grant_permissions(["clipboard-read", "clipboard-write"])
        self.page = self.context.new_page()
        self.page.set_default_timeout(5000)
        self.requests, self.errors = [], []
        self.page.on("request", lambda request: self.requests.append(
            {"method": request.method, "url": request.url}))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(
            f"console: {message.text}"))
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on("requestfailed", lambda request: self.errors.append(
            f"requestfailed: {request.method} {request.url} {request.failure}"))
        return {"version": self.browser.version}

    def close_page(self):
        if self.context is not None:
            self.context.close()
        self.context = self.page = None

    def goto(self, url):
        response = self.page.goto(url)
        return {"status": response.status if response else None}

    def reload(self):
        self.page.reload()

    def act(self, locator, action, args=()):
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action}")
        return getattr(self.locate(locator), action)(*decode(list(args)))

    def expect(self, assertion, locator=None, args=(), kwargs=None, negate=False):
        from playwright.sync_api import expect
        subject = expect(self.page if locator is None else self.locate(locator))
        check = getattr(subject, ("not_" if negate else "") + assertion)
        check(*decode(list(args)), **decode(kwargs or {}))

    def paste(self, locator, text):
        """A real paste: the text on the clipboard, then Ctrl+V in the field."""
        target = self.locate(locator)
        self.page.evaluate("text => navigator.clipboard.writeText(text)", text)
        target.focus()
        self.page.keyboard.press("Control+V")

    def screenshot(self, path, full_page=False):
        self.page.screenshot(path=path, full_page=full_page)
        return path

    def evaluate(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def focused(self):
        return self.page.evaluate("""() => {
            const el = document.activeElement;
            return el ? {tag: el.tagName.toLowerCase(), id: el.id, text: (el.textContent || "").trim()} : null;
        }""")

    def requests_seen(self):
        return self.requests

    def errors_seen(self, clear=False):
        seen = list(self.errors)
        if clear:
            self.errors.clear()
        return seen

    # -- plumbing ----------------------------------------------------------------------

    def locate(self, spec):
        spec = decode(spec)
        page = self.page
        if "role" in spec:
            found = page.get_by_role(spec["role"], name=spec.get("name"), exact=spec.get("exact", True))
        elif "label" in spec:
            found = page.get_by_label(spec["label"], exact=spec.get("exact", True))
        elif "text" in spec:
            found = page.get_by_text(spec["text"], exact=spec.get("exact", False))
        elif "css" in spec:
            found = page.locator(spec["css"])
        else:
            raise ValueError(f"unknown locator {spec}")
        return found.first if spec.get("first") else found

    def close(self):
        self.close_page()
        self.browser.close()
        self.playwright.stop()


COMMANDS = {"new_page": "new_page", "close_page": "close_page", "goto": "goto", "reload": "reload",
            "act": "act", "expect": "expect", "paste": "paste", "screenshot": "screenshot",
            "evaluate": "evaluate", "focused": "focused", "requests": "requests_seen", "errors": "errors_seen"}


def answer(payload):
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def failure(exc):
    kind = "AssertionError" if isinstance(exc, AssertionError) or type(exc).__name__ == "TimeoutError" \
        else type(exc).__name__
    return {"ok": False, "kind": kind, "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(limit=6)}


def main():
    executable = sys.argv[1]
    try:
        driver = Driver(executable)
    except Exception as exc:  # report why the browser did not start, then stop
        answer(failure(exc))
        return 1
    answer({"ok": True, "value": {"version": driver.browser.version}})
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        try:
            value = getattr(driver, COMMANDS[op])(**command)
            answer({"ok": True, "value": value})
        except Exception as exc:  # every failure goes back to the test, which raises it
            answer(failure(exc))
    driver.close()
    answer({"ok": True, "value": "bye"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
