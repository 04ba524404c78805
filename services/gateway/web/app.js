/* MyCepa login page. Plain JavaScript: no framework, no build step, no external URL.
 *
 * It speaks only the gateway's JSON API (README, "API"): POST /api/login, GET /api/me,
 * POST /api/logout, POST/DELETE /api/remember, GET/POST /api/login/push and the long poll
 * GET /api/login/push/{id}?wait=10. Errors arrive as {error, message, fields} with a
 * status (and Retry-After for 423/429); the page explains them in the user's language,
 * never showing the server's English message.
 *
 * Screens: code (werkboeknummer + 10-digit code), remember ("Bewaar je gebruikersnaam"),
 * push (the saved user: "Stuur PUSH"), wait (the number to pick on the phone, a countdown),
 * home (logged in, "Afmelden").
 */
(function () {
  "use strict";

  var LANG_KEY = "mycepa.lang";
  var CODE_DIGITS = 10;
  var POLL_WAIT_SECONDS = 10;

  // -- words --------------------------------------------------------------------

  function duration(lang, seconds) {
    var s = Math.max(1, Math.ceil(seconds));
    if (s < 60) {
      if (lang === "en") return s === 1 ? "1 second" : s + " seconds";
      return s === 1 ? "1 seconde" : s + " seconden";
    }
    var m = Math.ceil(s / 60);
    if (lang === "en") return m === 1 ? "1 minute" : m + " minutes";
    return m === 1 ? "1 minuut" : m + " minuten";
  }

  var TEXT = {
    nl: {
      "lang.other": "English",
      "lang.otherCode": "en",
      "skip": "Naar de inhoud",
      "loading": "Even geduld…",
      "footer": "MyCepa – het portaal voor havenarbeiders",
      "title.loading": "MyCepa",
      "title.code": "Aanmelden",
      "title.remember": "Bewaar je gebruikersnaam",
      "title.push": "Aanmelden met PUSH",
      "title.wait": "Bevestig op je telefoon",
      "title.home": "Welkom",

      "code.title": "Aanmelden bij MyCepa",
      "code.lead": "Meld je aan met je werkboeknummer en een code uit de OTP-app.",
      "field.username": "Gebruikersnaam",
      "field.username.help": "Je gebruikersnaam is je werkboeknummer.",
      "field.password": "Wachtwoord",
      "field.password.help": "De code van 10 cijfers uit de OTP-app. Je mag de code plakken.",
      "button.login": "Aanmelden",
      "button.save": "Bewaren",
      "button.notNow": "Niet nu",
      "button.sendPush": "Stuur PUSH",
      "button.useCode": "Inloggen met code",
      "button.otherUser": "Andere gebruiker",
      "button.logout": "Afmelden",

      "remember.title": "Bewaar je gebruikersnaam",
      "remember.lead": "Dan meld je je in deze browser voortaan aan met PUSH: je bevestigt op je telefoon en hoeft geen code meer over te typen.",
      "remember.own": "Doe dit alleen op een toestel dat je niet met anderen deelt.",

      "push.title": "Aanmelden met PUSH",
      "push.userLabel": "Gebruikersnaam",
      "push.lead": "We sturen een melding naar de OTP-app op je telefoon. Daar bevestig je dat jij het bent.",

      "wait.title": "Bevestig op je telefoon",
      "wait.lead": "Open de melding in de OTP-app, tik op ‘Bevestig toegang’ en kies dit getal:",
      "wait.status": "Wachten op bevestiging…",
      "wait.countdown": function (p, lang) { return "Nog " + duration(lang, p.seconds) + " om te bevestigen."; },
      "wait.timeUp": "De tijd is om.",

      "home.title": "Welkom in MyCepa",
      "home.as": "Je bent aangemeld als",
      "home.lead": "Je kunt nu verder in het portaal.",
      "home.previous": function (p, lang) {
        return "Vorige aanmelding: " + when(lang, p.at) + (p.method === "push" ? " met PUSH" : " met een code") +
          (p.ip ? " vanaf " + p.ip : "") + ".";
      },
      "home.firstLogin": "Dit is je eerste aanmelding.",
      "home.activity": "Recente activiteit",
      "activity.item": function (p, lang) { return activityLine(lang, p); },

      "err.usernameEmpty": "Vul je gebruikersnaam in: dat is je werkboeknummer.",
      "err.codeEmpty": "Vul de code van 10 cijfers uit de OTP-app in.",
      "err.codeDigits": "De code bestaat alleen uit cijfers.",
      "err.codeLength": function (p) {
        return "De code heeft 10 cijfers; je hebt er " + p.count + " ingevuld.";
      },
      "err.invalidCredentials": "Je gebruikersnaam of code klopt niet. Controleer je werkboeknummer en gebruik een nieuwe code uit de OTP-app.",
      "err.lockedFor": function (p, lang) {
        return "Te veel mislukte pogingen: je account is tijdelijk vergrendeld. Probeer het over " +
          duration(lang, p.seconds) + " opnieuw met een nieuwe code.";
      },
      "err.lockedHard": "Aanmelden met een code is vergrendeld na te veel mislukte pogingen. Meld je aan met PUSH of vraag een beheerder om je account te ontgrendelen.",
      "err.lockOver": "De wachttijd is voorbij: je kunt het opnieuw proberen met een nieuwe code.",
      "err.throttled": function (p, lang) {
        return "Te veel pogingen na elkaar. Probeer het over " + duration(lang, p.seconds) + " opnieuw.";
      },
      "err.validation": "Controleer je gebruikersnaam en code.",
      "err.unavailable": "MyCepa is even niet bereikbaar. Probeer het zo opnieuw.",
      "err.network": "Geen verbinding met MyCepa. Controleer je internetverbinding en probeer het opnieuw.",
      "err.unexpected": "Er ging iets mis. Probeer het opnieuw.",
      "err.sessionGone": "Je sessie is verlopen. Meld je opnieuw aan.",

      "push.denied": "De aanmelding is geweigerd op je telefoon. Was jij dit toch? Stuur een nieuwe PUSH.",
      "push.expired": "De PUSH is verlopen: er is niet op tijd bevestigd. Stuur een nieuwe PUSH of meld je aan met een code.",
      "push.lost": "Deze aanmelding is niet meer geldig. Stuur een nieuwe PUSH.",
      "push.rateLimited": function (p, lang) {
        return "Je hebt te veel PUSH-berichten gevraagd. Probeer het over " + duration(lang, p.seconds) +
          " opnieuw, of meld je aan met een code.";
      },
      "push.retryNow": "Je kunt nu opnieuw een PUSH sturen.",
      "push.blocked": "Aanmelden met PUSH is geblokkeerd voor dit account na een gemelde fraudepoging. Meld je aan met een code of vraag een beheerder.",
      "push.noSavedUser": "Je bewaarde gebruikersnaam kan niet meer met PUSH aanmelden. Meld je aan met een code.",

      "notice.saved": "Je gebruikersnaam is bewaard. De volgende keer meld je je aan met PUSH.",
      "notice.loggedIn": "Je bent aangemeld.",
      "notice.loggedOut": "Je bent afgemeld.",
      "notice.forgotten": "Je gebruikersnaam is niet meer bewaard in deze browser."
    },
    en: {
      "lang.other": "Nederlands",
      "lang.otherCode": "nl",
      "skip": "Skip to content",
      "loading": "One moment…",
      "footer": "MyCepa – the port workers' portal",
      "title.loading": "MyCepa",
      "title.code": "Log in",
      "title.remember": "Save your username",
      "title.push": "Log in with PUSH",
      "title.wait": "Confirm on your phone",
      "title.home": "Welcome",

      "code.title": "Log in to MyCepa",
      "code.lead": "Log in with your werkboeknummer (workbook number) and a code from the OTP app.",
      "field.username": "Username",
      "field.username.help": "Your username is your werkboeknummer (workbook number).",
      "field.password": "Password",
      "field.password.help": "The 10-digit code from the OTP app. You may paste it.",
      "button.login": "Log in",
      "button.save": "Save",
      "button.notNow": "Not now",
      "button.sendPush": "Send PUSH",
      "button.useCode": "Log in with a code",
      "button.otherUser": "Another user",
      "button.logout": "Log out",

      "remember.title": "Save your username",
      "remember.lead": "From then on you log in with PUSH in this browser: you confirm on your phone and no longer type a code.",
      "remember.own": "Only do this on a device you do not share with others.",

      "push.title": "Log in with PUSH",
      "push.userLabel": "Username",
      "push.lead": "We send a notification to the OTP app on your phone. There you confirm that it is you.",

      "wait.title": "Confirm on your phone",
      "wait.lead": "Open the notification in the OTP app, tap ‘Bevestig toegang’ (confirm access) and pick this number:",
      "wait.status": "Waiting for your confirmation…",
      "wait.countdown": function (p, lang) { return duration(lang, p.seconds) + " left to confirm."; },
      "wait.timeUp": "Time is up.",

      "home.title": "Welcome to MyCepa",
      "home.as": "You are logged in as",
      "home.lead": "You can now continue to the portal.",
      "home.previous": function (p, lang) {
        return "Previous login: " + when(lang, p.at) + (p.method === "push" ? " with PUSH" : " with a code") +
          (p.ip ? " from " + p.ip : "") + ".";
      },
      "home.firstLogin": "This is your first login.",
      "home.activity": "Recent activity",
      "activity.item": function (p, lang) { return activityLine(lang, p); },

      "err.usernameEmpty": "Enter your username: your werkboeknummer.",
      "err.codeEmpty": "Enter the 10-digit code from the OTP app.",
      "err.codeDigits": "The code consists of digits only.",
      "err.codeLength": function (p) {
        return "The code has 10 digits; you entered " + p.count + ".";
      },
      "err.invalidCredentials": "Your username or code is not right. Check your werkboeknummer and use a new code from the OTP app.",
      "err.lockedFor": function (p, lang) {
        return "Too many failed attempts: your account is locked for a while. Try again in " +
          duration(lang, p.seconds) + " with a new code.";
      },
      "err.lockedHard": "Logging in with a code is locked after too many failed attempts. Log in with PUSH or ask an administrator to unlock your account.",
      "err.lockOver": "The waiting time is over: you can try again with a new code.",
      "err.throttled": function (p, lang) {
        return "Too many attempts in a row. Try again in " + duration(lang, p.seconds) + ".";
      },
      "err.validation": "Check your username and code.",
      "err.unavailable": "MyCepa cannot be reached right now. Try again in a moment.",
      "err.network": "No connection to MyCepa. Check your internet connection and try again.",
      "err.unexpected": "Something went wrong. Please try again.",
      "err.sessionGone": "Your session has expired. Please log in again.",

      "push.denied": "The login was denied on your phone. Was it you after all? Send a new PUSH.",
      "push.expired": "The PUSH has expired: it was not confirmed in time. Send a new PUSH or log in with a code.",
      "push.lost": "This login is no longer valid. Send a new PUSH.",
      "push.rateLimited": function (p, lang) {
        return "You asked for too many PUSH messages. Try again in " + duration(lang, p.seconds) +
          ", or log in with a code.";
      },
      "push.retryNow": "You can send a new PUSH now.",
      "push.blocked": "Logging in with PUSH is blocked for this account after a reported fraud attempt. Log in with a code or ask an administrator.",
      "push.noSavedUser": "Your saved username can no longer log in with PUSH. Log in with a code.",

      "notice.saved": "Your username is saved. Next time you log in with PUSH.",
      "notice.loggedIn": "You are logged in.",
      "notice.loggedOut": "You are logged out.",
      "notice.forgotten": "Your username is no longer saved in this browser."
    }
  };

  var lang = "nl";

  // What each event of the user's own activity (GET /api/me/activity) is called.
  var ACTIVITY = {
    nl: {
      "SessionStarted:code": "Aangemeld met een code", "SessionStarted:push": "Aangemeld met PUSH",
      "OtpRejected:invalid": "Foute code", "OtpRejected:replayed": "Een code werd opnieuw gebruikt",
      "OtpRejected:locked": "Code geweigerd: aanmelden met een code was vergrendeld",
      "AccessDenied:user": "PUSH geweigerd op je telefoon", "AccessDenied:wrong_number": "PUSH geweigerd: fout getal gekozen",
      "AccountLocked": "Aanmelden met een code vergrendeld na foute codes",
      "AccountUnlocked": "Ontgrendeld door een beheerder",
      "DeviceActivated": "Nieuwe OTP-app geactiveerd", "DeviceRevoked": "Een OTP-app werd verwijderd"
    },
    en: {
      "SessionStarted:code": "Logged in with a code", "SessionStarted:push": "Logged in with PUSH",
      "OtpRejected:invalid": "Wrong code", "OtpRejected:replayed": "A code was used again",
      "OtpRejected:locked": "Code refused: logging in with a code was locked",
      "AccessDenied:user": "PUSH denied on your phone", "AccessDenied:wrong_number": "PUSH denied: wrong number picked",
      "AccountLocked": "Logging in with a code locked after wrong codes",
      "AccountUnlocked": "Unlocked by an administrator",
      "DeviceActivated": "New OTP app activated", "DeviceRevoked": "An OTP app was removed"
    }
  };

  function when(lang, iso) {
    var moment = new Date(iso);
    if (isNaN(moment.getTime())) return iso;
    return new Intl.DateTimeFormat(lang === "en" ? "en-GB" : "nl-BE",
      { dateStyle: "medium", timeStyle: "short" }).format(moment);
  }

  function activityLine(lang, p) {
    var names = ACTIVITY[lang] || ACTIVITY.nl;
    var name = names[p.type + ":" + p.reason] || names[p.type] || p.type;
    return when(lang, p.at) + " – " + name + (p.ip ? " (" + p.ip + ")" : "");
  }

  function t(key, params) {
    var table = TEXT[lang] || TEXT.nl;
    var value = key in table ? table[key] : TEXT.nl[key];
    if (typeof value === "function") return value(params || {}, lang);
    return value === undefined ? key : value;
  }

  // An element showing the text of `key`: kept as data attributes, so a language switch
  // re-renders it (messages included) in the other language.
  function setText(el, key, params) {
    el.setAttribute("data-i18n", key);
    if (params) el.setAttribute("data-i18n-params", JSON.stringify(params));
    else el.removeAttribute("data-i18n-params");
    el.textContent = t(key, params);
  }

  function clearText(el) {
    el.removeAttribute("data-i18n");
    el.removeAttribute("data-i18n-params");
    el.textContent = "";
  }

  function render() {
    var nodes = document.querySelectorAll("[data-i18n]");
    for (var i = 0; i < nodes.length; i++) {
      var raw = nodes[i].getAttribute("data-i18n-params");
      nodes[i].textContent = t(nodes[i].getAttribute("data-i18n"), raw ? JSON.parse(raw) : null);
    }
    var switcher = $("lang-switch");
    switcher.textContent = t("lang.other");
    switcher.setAttribute("lang", t("lang.otherCode"));
    setTitle();
  }

  function setLanguage(next, store) {
    lang = TEXT[next] ? next : "nl";
    document.documentElement.setAttribute("lang", lang);
    if (store) {
      try { window.localStorage.setItem(LANG_KEY, lang); } catch (e) { /* private mode: not remembered */ }
    }
    render();
  }

  function storedLanguage() {
    try { return window.localStorage.getItem(LANG_KEY); } catch (e) { return null; }
  }

  // -- small helpers --------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function retryAfterSeconds(value) {
    if (!value) return null;
    var seconds = /^\d+$/.test(value.trim()) ? parseInt(value, 10) : Math.ceil((Date.parse(value) - Date.now()) / 1000);
    return isFinite(seconds) && seconds > 0 ? seconds : null;
  }

  // One JSON request: {status, data, retryAfter, date}. Throws only when the server
  // cannot be reached (or the request was aborted).
  function api(method, path, body, signal) {
    var init = { method: method, headers: { "Accept": "application/json" }, credentials: "same-origin",
                 cache: "no-store", signal: signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (response) {
      var result = { status: response.status, data: null, date: response.headers.get("Date"),
                     retryAfter: retryAfterSeconds(response.headers.get("Retry-After")) };
      if (response.status === 204) return result;
      return response.json().then(function (data) { result.data = data; return result; },
                                  function () { return result; });
    });
  }

  function setBusy(button, busy) {
    button.setAttribute("aria-disabled", busy ? "true" : "false");
  }

  function isBusy(button) { return button.getAttribute("aria-disabled") === "true"; }

  // -- notices ----------------------------------------------------------------------

  var noticeSeq = 0;

  // notice = [kind, key, params, after]: kind is error | warning | info | success; with
  // `after` = [seconds, kind, key] the notice changes once the waiting time is over.
  function showNotice(el, notice) {
    var seq = String(++noticeSeq);
    el.setAttribute("data-seq", seq);
    if (!notice) { clearText(el); el.className = "notice"; return; }
    el.className = "notice " + notice[0];
    setText(el, notice[1], notice[2]);
    var after = notice[3];
    if (after) {
      setTimeout(function () {
        if (el.getAttribute("data-seq") === seq) showNotice(el, [after[1], after[2]]);
      }, after[0] * 1000);
    }
  }

  function unavailableNotice(result) {
    if (result.status === 503 || result.status >= 500) return ["error", "err.unavailable"];
    if (result.status === 429 && result.retryAfter) return ["warning", "err.throttled", { seconds: result.retryAfter }];
    return ["error", "err.unexpected"];
  }

  // -- screens ----------------------------------------------------------------------

  var SCREENS = ["loading", "code", "remember", "push", "wait", "home"];
  var state = { screen: "loading", user: null, saved: null, push: null };

  function setTitle() {
    document.title = t("title." + state.screen) + (state.screen === "loading" ? "" : " – MyCepa");
  }

  // Show one screen, then its notice (so live regions announce it) and move the focus:
  // to `focus` or the screen's heading, so keyboard and screen-reader users land on it.
  function show(name, options) {
    options = options || {};
    if (name !== "wait") stopPush();
    SCREENS.forEach(function (screen) { $("screen-" + screen).hidden = screen !== name; });
    state.screen = name;
    setTitle();
    var noticeEl = $(name + "-notice");
    if (noticeEl) showNotice(noticeEl, options.notice || null);
    var target = options.focus || document.querySelector("#screen-" + name + " h1");
    if (target) target.focus();
  }

  // -- code login ---------------------------------------------------------------------

  var form, usernameInput, passwordInput, loginButton;

  function fieldError(input, key, params) {
    var el = $(input.id + "-error");
    if (key) {
      setText(el, key, params);
      input.setAttribute("aria-invalid", "true");
    } else {
      clearText(el);
      input.removeAttribute("aria-invalid");
    }
  }

  function cleanCode(value) { return value.replace(/[\s\u00a0-]+/g, ""); }

  function codeProblem(code) {
    if (!code) return ["err.codeEmpty"];
    if (!/^\d+$/.test(code)) return ["err.codeDigits"];
    if (code.length !== CODE_DIGITS) return ["err.codeLength", { count: code.length }];
    return null;
  }

  function showCode(options) {
    options = options || {};
    usernameInput.value = options.username || "";
    passwordInput.value = "";
    fieldError(usernameInput, null);
    fieldError(passwordInput, null);
    setBusy(loginButton, false);
    show("code", { notice: options.notice,
                   focus: usernameInput.value ? passwordInput : usernameInput });
  }

  function submitCode(event) {
    event.preventDefault();
    if (isBusy(loginButton)) return;
    var username = usernameInput.value.trim();
    var code = cleanCode(passwordInput.value);
    usernameInput.value = username;
    passwordInput.value = code;
    showNotice($("code-notice"), null);
    fieldError(usernameInput, username ? null : "err.usernameEmpty");
    var problem = codeProblem(code);
    fieldError(passwordInput, problem && problem[0], problem && problem[1]);
    if (!username || problem) {
      (username ? passwordInput : usernameInput).focus();
      return;
    }
    setBusy(loginButton, true);
    api("POST", "/api/login", { username: username, password: code }).then(function (result) {
      setBusy(loginButton, false);
      passwordInput.value = "";   // a code works once, right or wrong
      if (result.status === 200 && result.data) {
        state.user = result.data.username;
        if (result.data.offer_remember) show("remember");
        else showHome(state.user, ["success", "notice.loggedIn"]);
        return;
      }
      showNotice($("code-notice"), loginRefusal(result));
      passwordInput.focus();
    }, function () {
      setBusy(loginButton, false);
      showNotice($("code-notice"), ["error", "err.network"]);
    });
  }

  function loginRefusal(result) {
    if (result.status === 401) return ["error", "err.invalidCredentials"];
    if (result.status === 423) {
      if (!result.retryAfter) return ["error", "err.lockedHard"];
      return ["warning", "err.lockedFor", { seconds: result.retryAfter },
              [result.retryAfter, "info", "err.lockOver"]];
    }
    if (result.status === 400) return ["error", "err.validation"];
    return unavailableNotice(result);
  }

  // Pasting a code copied from the app ("Kopieer code"): spaces and dashes go.
  function pasteCode(event) {
    var data = event.clipboardData || window.clipboardData;
    if (!data) return;
    event.preventDefault();
    var text = cleanCode(data.getData("text") || "");
    var start = passwordInput.selectionStart, end = passwordInput.selectionEnd;
    if (typeof start === "number") passwordInput.setRangeText(text, start, end, "end");
    else passwordInput.value += text;
    passwordInput.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function typedCode() {
    // A shown hint disappears as soon as the code is right.
    if (passwordInput.getAttribute("aria-invalid") === "true" && !codeProblem(cleanCode(passwordInput.value))) {
      fieldError(passwordInput, null);
    }
  }

  function typedUsername() {
    if (usernameInput.getAttribute("aria-invalid") === "true" && usernameInput.value.trim()) {
      fieldError(usernameInput, null);
    }
  }

  // -- "Bewaar je gebruikersnaam" -------------------------------------------------------

  function saveUsername() {
    var button = $("remember-save");
    if (isBusy(button)) return;
    setBusy(button, true);
    api("POST", "/api/remember").then(function (result) {
      setBusy(button, false);
      if (result.status === 204) showHome(state.user, ["success", "notice.saved"]);
      else if (result.status === 401) showCode({ username: state.user, notice: ["warning", "err.sessionGone"] });
      else showNotice($("remember-notice"), unavailableNotice(result));
    }, function () {
      setBusy(button, false);
      showNotice($("remember-notice"), ["error", "err.network"]);
    });
  }

  // -- logged in ------------------------------------------------------------------------

  function showHome(username, notice) {
    state.user = username;
    $("home-username").textContent = username;
    show("home", { notice: notice });
    showHistory();
  }

  // "Vorige aanmelding" and "Recente activiteit": what the audit trail knows of this
  // user. Left out quietly when it cannot say (the user is logged in all the same).
  function showHistory() {
    var previous = $("home-previous"), section = $("home-activity-section"), list = $("home-activity");
    previous.hidden = true;
    section.hidden = true;
    api("GET", "/api/me").then(function (me) {
      if (me.status !== 200 || !me.data) return;
      var last = me.data.previous_login;
      if (last) setText(previous, "home.previous", { at: last.at, method: last.method, ip: last.ip });
      else setText(previous, "home.firstLogin");
      previous.hidden = false;
    }, function () {});
    api("GET", "/api/me/activity").then(function (result) {
      if (result.status !== 200 || !result.data || !result.data.events.length) return;
      while (list.firstChild) list.removeChild(list.firstChild);
      result.data.events.forEach(function (entry) {
        var item = document.createElement("li");
        setText(item, "activity.item", { type: entry.type, reason: entry.reason, at: entry.occurred_at,
                                         ip: entry.source ? entry.source.ip : null });
        list.appendChild(item);
      });
      section.hidden = false;
    }, function () {});
  }

  function logout() {
    var button = $("logout");
    if (isBusy(button)) return;
    setBusy(button, true);
    api("POST", "/api/logout").then(function () {
      setBusy(button, false);
      state.user = null;
      pushOrCode(["info", "notice.loggedOut"]);
    }, function () {
      setBusy(button, false);
      showNotice($("home-notice"), ["error", "err.network"]);
    });
  }

  // -- push login -----------------------------------------------------------------------

  function showPush(username, notice) {
    state.saved = username;
    $("push-username").textContent = username;
    setBusy($("push-send"), false);
    show("push", { notice: notice });
  }

  function sendPush() {
    var button = $("push-send");
    if (isBusy(button)) return;
    setBusy(button, true);
    showNotice($("push-notice"), null);
    api("POST", "/api/login/push").then(function (result) {
      setBusy(button, false);
      if (result.status === 202 && result.data) return startWaiting(result);
      if (result.status === 404) return showCode({ username: "", notice: ["warning", "push.noSavedUser"] });
      showNotice($("push-notice"), pushRefusal(result));
    }, function () {
      setBusy(button, false);
      showNotice($("push-notice"), ["error", "err.network"]);
    });
  }

  function pushRefusal(result) {
    var seconds = result.retryAfter;
    if (result.status === 429) {
      return ["warning", "push.rateLimited", { seconds: seconds || 60 }, [seconds || 60, "info", "push.retryNow"]];
    }
    if (result.status === 403) return ["error", "push.blocked"];
    return unavailableNotice(result);
  }

  // The time left, from the server's expires_at: measured against the server's Date
  // header when this computer's clock is clearly off, else against the local clock.
  function millisecondsLeft(result) {
    var expires = Date.parse(result.data.expires_at);
    var serverNow = result.date ? Date.parse(result.date) : NaN;
    var now = Date.now();
    if (isFinite(serverNow) && Math.abs(serverNow - now) > 2000) now = serverNow;
    var left = expires - now;
    return isFinite(left) ? Math.max(0, left) : 0;
  }

  function startWaiting(result) {
    stopPush();
    var total = millisecondsLeft(result);
    var attempt = { id: result.data.request_id, username: state.saved, total: total,
                    deadline: performance.now() + total, controller: new AbortController(),
                    timer: null, shown: null };
    $("push-number").textContent = result.data.number;
    show("wait");
    state.push = attempt;
    tick(attempt);
    attempt.timer = setInterval(function () { tick(attempt); }, 250);
    poll(attempt);
  }

  function tick(attempt) {
    var left = Math.max(0, attempt.deadline - performance.now());
    var seconds = Math.ceil(left / 1000);
    $("countdown-bar").value = attempt.total ? Math.round(100 * left / attempt.total) : 0;
    if (seconds === attempt.shown) return;
    attempt.shown = seconds;
    if (seconds > 0) setText($("countdown"), "wait.countdown", { seconds: seconds });
    else setText($("countdown"), "wait.timeUp");
  }

  function stopPush() {
    var attempt = state.push;
    if (!attempt) return;
    state.push = null;
    clearInterval(attempt.timer);
    attempt.controller.abort();
  }

  // Long poll until the phone answered or the request expired; the server wakes the
  // poll as soon as the answer arrives. Network trouble and 503 are retried, briefly.
  function poll(attempt) {
    var troubles = 0;
    function again() {
      if (state.push !== attempt) return;
      var asked = performance.now();
      api("GET", "/api/login/push/" + encodeURIComponent(attempt.id) + "?wait=" + POLL_WAIT_SECONDS,
          undefined, attempt.controller.signal).then(function (result) {
        if (state.push !== attempt) return;
        if (result.status === 200 && result.data && result.data.status === "pending") {
          troubles = 0;
          // A busy server answers "pending" at once instead of waiting: ask again in a
          // second rather than at once.
          return performance.now() - asked < 1000 ? sleep(1000).then(again) : again();
        }
        if (result.status === 200 && result.data) return finish(attempt, result.data.status);
        if (result.status === 404) return finish(attempt, "lost");
        troubled();
      }, function () {
        if (state.push === attempt) troubled();
      });
    }
    function troubled() {
      troubles += 1;
      if (troubles >= 5 && performance.now() > attempt.deadline) return finish(attempt, "trouble");
      sleep(1000).then(again);
    }
    again();
  }

  function finish(attempt, status) {
    stopPush();
    if (status === "approved") {
      api("GET", "/api/me").then(function (me) {
        if (me.status === 200 && me.data) showHome(me.data.username, ["success", "notice.loggedIn"]);
        else showPush(attempt.username, unavailableNotice(me));
      }, function () { showPush(attempt.username, ["error", "err.network"]); });
      return;
    }
    var notices = { denied: ["error", "push.denied"], expired: ["warning", "push.expired"],
                    lost: ["warning", "push.lost"] };
    showPush(attempt.username, notices[status] || ["error", "err.unavailable"]);
  }

  function useCode() {
    showCode({ username: state.saved || "" });
  }

  // "Andere gebruiker": this browser forgets the saved username.
  function otherUser() {
    var button = $("push-other-user");
    if (isBusy(button)) return;
    setBusy(button, true);
    api("DELETE", "/api/remember").then(function (result) {
      setBusy(button, false);
      if (result.status === 204) {
        state.saved = null;
        showCode({ username: "", notice: ["info", "notice.forgotten"] });
      } else {
        showNotice($("push-notice"), unavailableNotice(result));
      }
    }, function () {
      setBusy(button, false);
      showNotice($("push-notice"), ["error", "err.network"]);
    });
  }

  // -- start ----------------------------------------------------------------------------

  // The push screen when this browser saved a username that can still use push, else
  // the code screen.
  function pushOrCode(notice) {
    api("GET", "/api/login/push").then(function (saved) {
      if (saved.status === 200 && saved.data) showPush(saved.data.username, notice);
      else if (saved.status === 404) showCode({ notice: notice });
      else showCode({ notice: unavailableNotice(saved) });
    }, function () { showCode({ notice: ["error", "err.network"] }); });
  }

  function start() {
    form = $("code-form");
    usernameInput = $("username");
    passwordInput = $("password");
    loginButton = $("login-submit");

    setLanguage(storedLanguage() || "nl", false);
    $("lang-switch").addEventListener("click", function () { setLanguage(lang === "nl" ? "en" : "nl", true); });
    form.addEventListener("submit", submitCode);
    passwordInput.addEventListener("paste", pasteCode);
    passwordInput.addEventListener("input", typedCode);
    usernameInput.addEventListener("input", typedUsername);
    $("remember-save").addEventListener("click", saveUsername);
    $("remember-skip").addEventListener("click", function () { showHome(state.user, ["success", "notice.loggedIn"]); });
    $("logout").addEventListener("click", logout);
    $("push-send").addEventListener("click", sendPush);
    $("push-use-code").addEventListener("click", useCode);
    $("push-other-user").addEventListener("click", otherUser);
    $("wait-use-code").addEventListener("click", useCode);

    api("GET", "/api/me").then(function (me) {
      if (me.status === 200 && me.data) showHome(me.data.username);
      else pushOrCode(null);
    }, function () { showCode({ notice: ["error", "err.network"] }); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
