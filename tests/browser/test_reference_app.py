"""What the README tells a person to do: the reference app `mycepa-app`, run as a command,
next to the login page in a real browser. Activate, log in with the app's code, save
the username, then log in with push approved by the app."""
import os
import secrets
import subprocess
import sys

import pytest

from clients.device import create_activation
from tests.browser.harness import css, role
from tests.browser.test_login_page import log_in_with_code, send_push
from tests.conftest import ROOT, TEST_ENV

pytestmark = pytest.mark.e2e


def mycepa_app(home, *arguments):
    finished = subprocess.run([sys.executable, "-m", "clients.app", *arguments], cwd=ROOT, capture_output=True,
                              text=True, timeout=60,
                              env={**os.environ, "MYCEPA_APP_HOME": str(home), "MYCEPA_APP_PIN": "2468"})
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_a_person_logs_in_both_ways_with_the_reference_app(stack, page, tmp_path):
    username = f"W{secrets.randbelow(10**8):08d}"
    activation = create_activation(stack.base_url, TEST_ENV["MYCEPA_ADMIN_TOKEN"], username)
    assert username in mycepa_app(tmp_path, "activate", activation["activation_uri"], "--name", "My phone")

    page.goto("/")
    log_in_with_code(page, username, mycepa_app(tmp_path, "code", "--plain").strip())
    page.expect_visible(role("heading", "Bewaar je gebruikersnaam"))
    page.click(role("button", "Bewaren"))
    page.expect_visible(role("button", "Afmelden"))
    page.click(role("button", "Afmelden"))
    page.expect_visible(role("heading", "Aanmelden met PUSH"))

    number = send_push(page)
    approved = mycepa_app(tmp_path, "approve", "--number", number, "--wait", "3")
    assert "Approved" in approved
    page.expect_visible(role("heading", "Welkom in MyCepa"), timeout=5000)
    page.expect_text(css("#home-username"), username)
    page.screenshot("18-logged-in-with-the-reference-app")
