"""The login page in a real browser (Debian's Chromium, through Playwright) against the
running stack: the three services as processes, RabbitMQ, FerretDB.

The page is found the way people and assistive technology find it: fields by their
label, buttons by role and name. The phone is the reference device of clients.device,
answering from the test process while the page waits. Every screen is saved as a
screenshot in test-artifacts/screenshots/.
"""
import time

import pytest
import requests

from clients.device import answer_challenge, pending_challenges
from tests.browser.harness import css, label, regex, role, text
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.e2e

TTL = int(TEST_ENV["PUSH_REQUEST_TTL_SECONDS"])
NUMBER = css("#push-number")


# -- steps -------------------------------------------------------------------------------

def wrong_code(device):
    """A 10-digit code the device would not show around now."""
    valid = {device.code(step_offset=offset) for offset in (-1, 0, 1)}
    return next(code for code in ("0000000000", "1111111111", "2222222222") if code not in valid)


def log_in_with_code(page, username, code):
    page.fill(label("Gebruikersnaam"), username)
    page.fill(label("Wachtwoord"), code)
    page.click(role("button", "Aanmelden"))


def save_username_and_log_out(page, device):
    """Code login -> "Bewaren" -> landing -> "Afmelden": the push screen of a remembered user."""
    page.goto("/")
    log_in_with_code(page, device.username, device.code())
    page.expect_visible(role("heading", "Bewaar je gebruikersnaam"))
    page.click(role("button", "Bewaren"))
    page.expect_visible(role("button", "Afmelden"))
    page.click(role("button", "Afmelden"))
    page.expect_visible(role("heading", "Aanmelden met PUSH"))


def send_push(page):
    """"Stuur PUSH" -> the number the page asks to pick on the phone."""
    page.click(role("button", "Stuur PUSH"))
    page.expect_visible(role("heading", "Bevestig op je telefoon"))
    page.expect_text(NUMBER, regex(r"^\d\d$"))
    return page.text_of(NUMBER)


def the_challenge(device, number, timeout=5.0):
    """The device's challenge offering `number`, polled until the events delivered it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for challenge in pending_challenges(device):
            if number in challenge["number_choices"]:
                return challenge
        time.sleep(0.05)
    raise AssertionError(f"no challenge with {number} reached the device")


def api_posts(page, path):
    return [r for r in page.requests() if r["method"] == "POST" and r["url"].endswith(path)]


# -- the journeys of the guide -------------------------------------------------------------

def test_code_login_save_the_username_then_push_login_approved_by_the_phone(stack, make_user, page):
    device = make_user()
    page.goto("/")
    page.expect_page("to_have_title", "Aanmelden – MyCepa")
    assert page.evaluate("document.documentElement.lang") == "nl"
    page.expect_visible(role("heading", "Aanmelden bij MyCepa"))
    page.expect_text(css("#username-help"), "werkboeknummer")
    page.expect_focused(label("Gebruikersnaam"))
    assert page.attribute(label("Wachtwoord"), "inputmode") == "numeric"
    assert page.attribute(label("Wachtwoord"), "autocomplete") == "one-time-code"
    page.screenshot("01-code-login")

    # The code copied from the app ("Kopieer code") is pasted; spaces do not matter.
    page.fill(label("Gebruikersnaam"), device.username)
    code = device.code()
    page.paste(label("Wachtwoord"), f" {code[:5]} {code[5:]} ")
    assert page.value_of(label("Wachtwoord")) == code
    page.click(role("button", "Aanmelden"))

    page.expect_visible(role("heading", "Bewaar je gebruikersnaam"))
    page.expect_focused(role("heading", "Bewaar je gebruikersnaam"))
    page.expect_visible(role("button", "Niet nu"))
    page.screenshot("02-save-username-offer")
    page.click(role("button", "Bewaren"))

    page.expect_visible(role("heading", "Welkom in MyCepa"))
    page.expect_text(css("#home-username"), device.username)
    page.expect_text(role("status"), "bewaard")
    page.screenshot("03-logged-in")

    page.click(role("button", "Afmelden"))
    page.expect_visible(role("heading", "Aanmelden met PUSH"))
    page.expect_text(css("#push-username"), device.username)
    page.expect_text(role("alert"), "Je bent afgemeld.")
    page.expect_visible(role("button", "Inloggen met code"))
    page.expect_visible(role("button", "Andere gebruiker"))
    page.screenshot("04-push-login")

    number = send_push(page)
    page.expect_text(role("timer"), regex(r"Nog [1-4] seconden? om te bevestigen"))
    page.screenshot("05-push-waiting")
    challenge = the_challenge(device, number)
    assert challenge["username"] == device.username
    answer_challenge(device, challenge, "approve", number)

    page.expect_visible(role("heading", "Welkom in MyCepa"), timeout=5000)
    page.expect_text(css("#home-username"), device.username)
    page.screenshot("06-push-approved")
    # The page waited with the long poll, not by polling in a loop.
    polls = [r["url"] for r in page.requests() if "/api/login/push/lr_" in r["url"]]
    assert polls and all(url.endswith("?wait=10") for url in polls) and len(polls) <= 3, polls
    # The browser holds the session now: a reload lands on the logged-in page.
    page.reload()
    page.expect_visible(role("heading", "Welkom in MyCepa"))


def test_push_login_denied_on_the_phone_and_then_blocked_after_a_fraud_report(stack, make_user, page):
    device = make_user()
    save_username_and_log_out(page, device)

    number = send_push(page)
    answer_challenge(device, the_challenge(device, number), "deny", number)
    page.expect_visible(role("heading", "Aanmelden met PUSH"))
    page.expect_text(role("alert"), "De aanmelding is geweigerd op je telefoon.")
    page.screenshot("07-push-denied")

    # "Dit was ik niet": a deny reporting fraud blocks push for the account.
    number = send_push(page)
    answer_challenge(device, the_challenge(device, number), "deny", number, fraud=True)
    page.expect_text(role("alert"), "geweigerd")
    page.click(role("button", "Stuur PUSH"))
    page.expect_text(role("alert"), "geblokkeerd")
    page.expect_text(role("alert"), "vraag een beheerder")
    page.expect_visible(role("heading", "Aanmelden met PUSH"))
    page.screenshot("08-push-blocked-after-fraud-report")


def test_push_login_nobody_answers_and_it_expires(stack, make_user, page):
    device = make_user()
    save_username_and_log_out(page, device)

    send_push(page)
    page.expect_text(role("timer"), regex(rf"^Nog [{TTL - 1}{TTL}] seconden om te bevestigen\.$"))
    page.expect_text(role("timer"), regex(r"^Nog 1 seconde om te bevestigen\.$"), timeout=TTL * 1000)
    page.expect_visible(role("heading", "Aanmelden met PUSH"), timeout=5000)
    page.expect_text(role("alert"), "De PUSH is verlopen")
    page.expect_focused(role("heading", "Aanmelden met PUSH"))
    page.screenshot("09-push-expired")


def test_too_many_push_requests_say_how_long_to_wait(stack, make_user, page):
    device = make_user()
    save_username_and_log_out(page, device)
    # The same user's other browser uses up the 3 push requests of the window.
    other = requests.Session()
    assert other.post(f"{stack.base_url}/api/login", json={"username": device.username,
                      "password": device.code(step_offset=1)}, timeout=10).status_code == 200
    assert other.post(f"{stack.base_url}/api/remember", timeout=10).status_code == 204
    for _ in range(3):
        assert other.post(f"{stack.base_url}/api/login/push", timeout=10).status_code == 202

    page.click(role("button", "Stuur PUSH"))
    page.expect_text(role("alert"), regex(r"te veel PUSH-berichten gevraagd\. Probeer het over \d+ (minuut|minuten|"
                                          r"seconde|seconden) opnieuw"))
    page.expect_visible(role("button", "Inloggen met code"))
    page.screenshot("10-push-rate-limited")


# -- the code screen -------------------------------------------------------------------------

def test_a_code_of_the_wrong_length_is_explained_before_anything_is_sent(stack, page):
    page.goto("/")
    page.expect_focused(label("Gebruikersnaam"))
    page.fill(label("Gebruikersnaam"), "W1234567")
    page.fill(label("Wachtwoord"), "123 45")
    page.click(role("button", "Aanmelden"))
    page.expect_text(css("#password-error"), "De code heeft 10 cijfers; je hebt er 5 ingevuld.")
    assert page.attribute(label("Wachtwoord"), "aria-invalid") == "true"
    page.expect_focused(label("Wachtwoord"))
    # The hint is part of the field's description, so a screen reader reads it with the field.
    page.expect(label("Wachtwoord"), "to_have_accessible_description", regex("De code heeft 10 cijfers"))
    page.screenshot("11-code-wrong-length")

    page.fill(label("Wachtwoord"), "12345678901")
    page.press(label("Wachtwoord"), "Enter")
    page.expect_text(css("#password-error"), "je hebt er 11 ingevuld")
    page.fill(label("Wachtwoord"), "12345abcde")
    page.click(role("button", "Aanmelden"))
    page.expect_text(css("#password-error"), "De code bestaat alleen uit cijfers.")
    page.fill(label("Gebruikersnaam"), "")
    page.fill(label("Wachtwoord"), "")
    page.click(role("button", "Aanmelden"))
    page.expect_text(css("#username-error"), "werkboeknummer")
    page.expect_focused(label("Gebruikersnaam"))
    page.screenshot("12-code-empty-fields")
    # Typing a whole code takes the hint away.
    page.fill(label("Wachtwoord"), "1234567890")
    page.expect_hidden(css("#password-error"))
    assert api_posts(page, "/api/login") == []


def test_wrong_codes_then_the_lock_with_the_time_to_wait_then_the_hard_lock(stack, make_user, page):
    """Test settings: 3 free failures, then 1 s, 2 s, and the 6th failure locks for good."""
    device = make_user()
    page.goto("/")
    wrong = wrong_code(device)
    for _ in range(3):
        log_in_with_code(page, device.username, wrong)
        page.expect_text(role("alert"), "Je gebruikersnaam of code klopt niet.")
        page.expect_focused(label("Wachtwoord"))
    page.screenshot("13-code-wrong")

    log_in_with_code(page, device.username, wrong)                       # failure 4: locked 1 s
    page.expect_text(role("alert"), "je account is tijdelijk vergrendeld. Probeer het over 1 seconde opnieuw")
    page.screenshot("14-locked-for-a-while")
    page.expect_text(role("alert"), "De wachttijd is voorbij", timeout=4000)
    log_in_with_code(page, device.username, wrong)                       # failure 5: locked 2 s
    page.expect_text(role("alert"), "over 2 seconden opnieuw")
    page.expect_text(role("alert"), "De wachttijd is voorbij", timeout=5000)
    log_in_with_code(page, device.username, wrong)                       # failure 6: hard lock
    page.expect_text(role("alert"), "Meld je aan met PUSH of vraag een beheerder om je account te ontgrendelen.")
    page.screenshot("15-locked-ask-an-administrator")
    assert len(api_posts(page, "/api/login")) == 6


def test_english_on_a_switch_remembered_by_the_browser(stack, page):
    page.goto("/")
    page.click(role("button", "English"))
    page.expect_visible(label("Username"))
    page.expect_visible(label("Password"))
    page.expect_visible(role("button", "Log in"))
    page.expect_visible(role("heading", "Log in to MyCepa"))
    page.expect_focused(role("button", "Nederlands"))
    assert page.evaluate("document.documentElement.lang") == "en"
    page.expect_page("to_have_title", "Log in – MyCepa")
    page.fill(label("Username"), "W1234567")
    page.fill(label("Password"), "123")
    page.click(role("button", "Log in"))
    page.expect_text(css("#password-error"), "The code has 10 digits; you entered 3.")
    page.screenshot("16-code-login-english")

    page.reload()
    page.expect_visible(label("Username"))
    assert page.evaluate("document.documentElement.lang") == "en"
    # A message on screen follows the switch too.
    page.fill(label("Password"), "12")
    page.click(role("button", "Log in"))
    page.click(role("button", "Nederlands"))
    page.expect_text(css("#password-error"), "De code heeft 10 cijfers; je hebt er 2 ingevuld.")
    page.expect_visible(label("Gebruikersnaam"))
    assert page.evaluate("document.documentElement.lang") == "nl"


def test_log_in_with_a_code_instead_and_another_user_forgets_the_saved_username(stack, make_user, page):
    device = make_user()
    save_username_and_log_out(page, device)

    page.click(role("button", "Inloggen met code"))
    page.expect_visible(role("heading", "Aanmelden bij MyCepa"))
    assert page.value_of(label("Gebruikersnaam")) == device.username
    page.expect_focused(label("Wachtwoord"))

    page.reload()                                  # still saved: the push screen again
    page.expect_visible(role("heading", "Aanmelden met PUSH"))
    page.click(role("button", "Andere gebruiker"))
    page.expect_visible(role("heading", "Aanmelden bij MyCepa"))
    page.expect_text(role("alert"), "niet meer bewaard")
    assert page.value_of(label("Gebruikersnaam")) == ""
    page.screenshot("17-other-user")
    page.reload()
    page.expect_visible(role("heading", "Aanmelden bij MyCepa"))
    page.expect_hidden(role("button", "Stuur PUSH"))


def test_keyboard_only_code_login(stack, make_user, page):
    device = make_user()
    page.goto("/")
    page.expect_focused(label("Gebruikersnaam"))
    page.press(label("Gebruikersnaam"), "Shift+Tab")   # back to the language switch, then forward
    page.expect_focused(role("button", "English"))
    page.press(role("button", "English"), "Tab")
    page.expect_focused(label("Gebruikersnaam"))
    for character in device.username:
        page.press(label("Gebruikersnaam"), character)
    page.press(label("Gebruikersnaam"), "Tab")
    page.expect_focused(label("Wachtwoord"))
    for digit in device.code():
        page.press(label("Wachtwoord"), digit)
    page.press(label("Wachtwoord"), "Tab")
    page.expect_focused(role("button", "Aanmelden"))
    page.press(role("button", "Aanmelden"), "Enter")
    page.expect_focused(role("heading", "Bewaar je gebruikersnaam"))
    page.press(role("heading", "Bewaar je gebruikersnaam"), "Tab")
    page.expect_focused(role("button", "Bewaren"))
    page.press(role("button", "Bewaren"), "Tab")
    page.expect_focused(role("button", "Niet nu"))
    page.press(role("button", "Niet nu"), "Enter")
    page.expect_visible(role("heading", "Welkom in MyCepa"))
    page.expect_text(css("#home-username"), device.username)


# -- a phone -------------------------------------------------------------------------------

def test_on_a_phone_sized_screen(stack, make_user, open_page):
    device = make_user()
    page = open_page(viewport=(390, 844))
    page.goto("/")
    page.expect_visible(label("Gebruikersnaam"))
    page.screenshot("phone-01-code-login")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    log_in_with_code(page, device.username, device.code())
    page.expect_visible(role("button", "Bewaren"))
    page.screenshot("phone-02-save-username-offer")
    page.click(role("button", "Bewaren"))
    page.click(role("button", "Afmelden"))
    page.expect_visible(role("button", "Stuur PUSH"))
    page.screenshot("phone-03-push-login")
    number = send_push(page)
    page.screenshot("phone-04-push-waiting")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    answer_challenge(device, the_challenge(device, number), "approve", number)
    page.expect_visible(role("button", "Afmelden"))
    page.screenshot("phone-05-logged-in")
    # Buttons are big enough to tap.
    height = page.evaluate("document.getElementById('logout').getBoundingClientRect().height")
    assert height >= 44
    assert page.count(text("MyCepa – het portaal voor havenarbeiders")) == 1


def test_the_content_security_policy_holds_in_the_browser(stack, page):
    """An injected inline script or inline style does not run: only the gateway's files do."""
    page.goto("/")
    page.expect_visible(label("Gebruikersnaam"))
    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "window.injected = true";
        document.body.appendChild(script);
        const style = document.createElement("style");
        style.textContent = "body { display: none }";
        document.head.appendChild(style);
    }""")
    assert page.evaluate("window.injected === undefined") is True
    page.expect_visible(label("Gebruikersnaam"))
    refused = page.errors(clear=True)
    assert any("Content Security Policy" in line and "script" in line for line in refused), refused
    assert any("Content Security Policy" in line and "style" in line for line in refused), refused


def test_the_landing_page_shows_the_previous_login_and_recent_activity(stack, make_user, page):
    device = make_user()
    page.goto("/")
    page.fill(label("Gebruikersnaam"), device.username)
    page.fill(label("Wachtwoord"), "0000000000")
    page.click(role("button", "Aanmelden"))
    page.expect_text(role("alert"), "Je gebruikersnaam of code klopt niet")
    page.fill(label("Wachtwoord"), device.code())
    page.click(role("button", "Aanmelden"))
    page.click(role("button", "Niet nu"))
    page.expect_visible(role("heading", "Welkom in MyCepa"))
    page.expect_text(css("#home-previous"), "Dit is je eerste aanmelding.")

    # A second login: the first one is now the previous, and the trail shows what happened.
    page.click(role("button", "Afmelden"))
    page.expect_visible(role("heading", "Aanmelden bij MyCepa"))
    page.fill(label("Gebruikersnaam"), device.username)
    page.fill(label("Wachtwoord"), device.code(step_offset=1))
    page.click(role("button", "Aanmelden"))
    page.click(role("button", "Niet nu"))
    page.expect_visible(role("heading", "Welkom in MyCepa"))
    page.expect_text(css("#home-previous"), regex(r"^Vorige aanmelding: .+ met een code vanaf 127\.0\.0\.1\.$"))
    page.expect_visible(role("heading", "Recente activiteit"))
    page.expect_text(role("list"), "Foute code (127.0.0.1)")
    page.expect_text(role("list"), "Aangemeld met een code")
    page.expect_text(role("list"), "Nieuwe OTP-app geactiveerd")
    page.screenshot("18-previous-login-and-activity")

    page.click(role("button", "English"))
    page.expect_text(css("#home-previous"), regex(r"^Previous login: .+ with a code from 127\.0\.0\.1\.$"))
    page.expect_visible(role("heading", "Recent activity"))
    page.expect_text(role("list"), "Wrong code (127.0.0.1)")
    page.screenshot("19-previous-login-and-activity-english")
    page.click(role("button", "Nederlands"))
