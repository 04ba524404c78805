"""Fixtures of the browser tests: one Chromium per session, a fresh context per test.

Chromium missing is a failure with the way to install it, never a skip: the page is
only tested when a real browser runs it.
"""
import re

import pytest

from tests.browser.harness import SCREENSHOTS, BrowserProcess, DriverError, Page

# What a browser prints that is not a fault of the page: the status of a refused API call
# (401 from /api/me means "not logged in"), and a long poll the page itself cancelled.
EXPECTED_NOISE = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d|net::ERR_ABORTED")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def browser_process(artifacts_dir):
    log_dir = artifacts_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    for stale in SCREENSHOTS.glob("FAILED-*.png"):     # from an earlier run
        stale.unlink()
    problem = None
    try:
        process = BrowserProcess(log_dir / "browser-driver.log")
    except DriverError as error:
        problem = str(error)
    if problem:
        pytest.fail(problem, pytrace=False)
    yield process
    process.close()


@pytest.fixture
def open_page(request, stack, browser_process):
    """open_page(viewport=(w, h)) -> a Page of a new browser context on the stack.
    At the end: no script error or CSP violation may have happened; a failed test leaves
    a screenshot of where it stopped."""
    pages = []

    def open_(viewport=None):
        if pages:
            pages[-1].close()
        page = Page(browser_process, stack.base_url, viewport=viewport)
        pages.append(page)
        return page

    yield open_
    if not pages:
        return
    page = pages[-1]
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        try:
            page.screenshot(f"FAILED-{request.node.name}")
        except (AssertionError, DriverError):
            pass
    problems = [line for line in page.errors() if not EXPECTED_NOISE.search(line)]
    page.close()
    assert not problems, "the page had errors:\n" + "\n".join(problems)


@pytest.fixture
def page(open_page):
    return open_page()
