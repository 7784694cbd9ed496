// Attention: the sidebar's marks (running, needs approval, new reply), the count in the tab
// title, opt-in browser notifications, and menus that close on Esc and outside clicks.
// No inline handlers (strict CSP): wired here by event delegation, so it survives htmx swaps.
(() => {
  "use strict";

  const $ = (selector, root = document) => root.querySelector(selector);
  const sidebar = () => $("#session-list");
  const NOTIFY_KEY = "switchboard.notify";
  const TITLE_COUNT = /^\(\d+\) /;
  const LIVE = ["pending", "streaming", "planning", "executing", "awaiting_approval"];

  let marks = new Map();  // session id -> {id, title, state, label, reply_id, url}
  let known = null;  // "id|reply|state" keys of the last answer (null before the first)
  let timer = null;
  let inFlight = false;
  const seenPosted = new Set();  // "id|reply" already reported as seen

  function currentSession() {
    const match = location.pathname.match(/^\/chat\/([0-9a-f-]{36})$/);
    return match ? match[1] : null;
  }

  const looking = () => !document.hidden;

  // A reply of the chat on screen, ended while the person looks at it, is seen: never marked.
  function shown(mark) {
    return !(mark.state === "unseen" && mark.id === currentSession() && looking());
  }

  // ---- the sidebar's marks and the title ---------------------------------------------------------

  function markElement() {
    const box = document.createElement("span");
    box.className = "attention-mark";
    const icon = document.createElement("span");
    icon.className = "attention-icon";
    icon.setAttribute("aria-hidden", "true");
    const label = document.createElement("span");
    label.className = "attention-label";
    box.append(icon, label);
    return box;
  }

  function paintSidebar() {
    const nav = sidebar();
    if (!nav) return;
    for (const item of nav.querySelectorAll("li[data-session-id]")) {
      const mark = marks.get(item.dataset.sessionId);
      let element = item.querySelector(".attention-mark");
      if (!mark || !shown(mark)) {
        if (element) element.remove();
        continue;
      }
      if (!element) {
        element = markElement();
        item.querySelector(".session-title").after(element);
      }
      element.dataset.state = mark.state;
      element.querySelector(".attention-label").textContent = mark.label;
    }
  }

  function paintTitle() {
    const count = [...marks.values()].filter((m) => (m.state === "waiting" || m.state === "unseen") && shown(m)).length;
    const base = document.title.replace(TITLE_COUNT, "");
    const title = count ? `(${count}) ${base}` : base;
    if (document.title !== title) document.title = title;
  }

  function paint() {
    if (known === null) return;  // the server-rendered marks stand until the first answer
    paintSidebar();
    paintTitle();
  }

  // ---- asking the server ---------------------------------------------------------------------------

  function reportSeen(mark) {
    const key = `${mark.id}|${mark.reply_id}`;
    if (seenPosted.has(key)) return;
    seenPosted.add(key);
    fetch(`/api/chat/sessions/${encodeURIComponent(mark.id)}/seen`, {
      method: "POST",
      credentials: "same-origin",
      headers: {"X-CSRFToken": window.Switchboard.csrfToken(), Accept: "application/json"},
    }).then((response) => { if (!response.ok) seenPosted.delete(key); }, () => seenPosted.delete(key));
  }

  // Where focus was in the old sidebar, as a selector for the same control in the new one.
  function focusSelector(element) {
    const href = element.getAttribute("href");
    if (href) return `[href="${CSS.escape(href)}"]`;
    return element.classList.length ? [...element.classList].map((c) => `.${CSS.escape(c)}`).join("") : null;
  }

  // A marked chat the list does not show yet (started in another tab, or through the API): the
  // sidebar is fetched again, once per such set; keyboard focus stays on the same control.
  let reloadedFor = "";
  async function reloadSidebar() {
    const nav = sidebar();
    if (!nav || !nav.dataset.sidebarUrl) return;
    const listed = new Set([...nav.querySelectorAll("li[data-session-id]")].map((li) => li.dataset.sessionId));
    const missing = [...marks.keys()].filter((id) => !listed.has(id)).sort().join(",");
    if (!missing || missing === reloadedFor) return;
    reloadedFor = missing;
    const url = new URL(nav.dataset.sidebarUrl, location.href);
    const current = currentSession();
    if (current) url.searchParams.set("current", current);
    try {
      const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "text/html"}});
      if (!response.ok) return;
      const fresh = document.createRange().createContextualFragment(await response.text()).querySelector("#session-list");
      const old = sidebar();
      if (!fresh || !old) return;
      const focused = old.contains(document.activeElement) ? focusSelector(document.activeElement) : null;
      old.replaceWith(fresh);
      syncNotifyButton();
      paint();
      const again = focused && fresh.querySelector(focused);
      if (again) again.focus();
    } catch {
      reloadedFor = "";  // try again at the next answer
    }
  }

  function apply(data) {
    const next = new Map(data.sessions.map((m) => [m.id, m]));
    const keys = new Set(data.sessions.map((m) => `${m.id}|${m.reply_id}|${m.state}`));
    for (const mark of next.values()) {
      if (mark.state === "unseen" && mark.id === currentSession() && looking()) reportSeen(mark);
      const fresh = known !== null && !known.has(`${mark.id}|${mark.reply_id}|${mark.state}`);
      if (fresh && document.hidden && (mark.state === "unseen" || mark.state === "waiting")) notify(mark);
    }
    marks = next;
    known = keys;
    paint();
    reloadSidebar();
  }

  function pollSeconds() {
    const nav = sidebar();
    const seconds = nav ? Number(nav.dataset.attentionPoll) : 0;
    return seconds > 0 ? seconds : 5;
  }

  async function refresh() {
    const nav = sidebar();
    if (!nav || !nav.dataset.attentionUrl) return;
    clearTimeout(timer);
    if (inFlight) {
      timer = setTimeout(refresh, 300);
      return;
    }
    inFlight = true;
    try {
      const response = await fetch(nav.dataset.attentionUrl, {
        credentials: "same-origin",
        headers: {Accept: "application/json"},
      });
      if (response.status === 401) return;  // logged out: stop asking
      if (response.ok) apply(await response.json());
      timer = setTimeout(refresh, pollSeconds() * 1000);
    } catch {
      timer = setTimeout(refresh, pollSeconds() * 1000);  // the server is away: try again later
    } finally {
      inFlight = false;
    }
  }

  // Soon after a reply starts or ends on this page (its store lands within RUN_FLUSH_SECONDS).
  let soon = null;
  function refreshSoon() {
    clearTimeout(soon);
    soon = setTimeout(refresh, 400);
  }

  document.addEventListener("visibilitychange", () => {
    paint();  // the chat on screen stops (or starts) counting
    if (looking()) refresh();
  });

  // A reply on this page changed between live and ended, or a new one appeared.
  new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes") {
        const was = LIVE.includes(record.oldValue);
        const is = LIVE.includes(record.target.getAttribute("data-status"));
        if (was !== is) return refreshSoon();
      } else {
        for (const node of record.addedNodes) {
          if (node.nodeType === 1 && (node.matches(".turn-assistant") || node.querySelector(".turn-assistant"))) {
            return refreshSoon();
          }
        }
      }
    }
  }).observe(document.documentElement, {subtree: true, childList: true, attributes: true, attributeOldValue: true, attributeFilter: ["data-status"]});

  // htmx swapped the sidebar (out of band) or the page's <title>: paint the marks and count again.
  document.addEventListener("htmx:after:swap", () => {
    paint();
    syncNotifyButton();
  });

  // ---- notifications (opt-in) ---------------------------------------------------------------------

  const supported = () => "Notification" in window;
  const optedIn = () => {
    try {
      return localStorage.getItem(NOTIFY_KEY) === "on";
    } catch {
      return false;
    }
  };
  function remember(on) {
    try {
      localStorage.setItem(NOTIFY_KEY, on ? "on" : "off");
    } catch {
      // storage refused (private mode): the choice lasts for this page only
    }
  }
  const enabled = () => supported() && optedIn() && Notification.permission === "granted";

  function notify(mark) {
    if (!enabled()) return;
    const heading = mark.state === "waiting" ? "Needs your approval" : "Reply finished";
    const note = new Notification(`${heading}: ${mark.title}`, {
      body: mark.state === "waiting" ? "A reply is waiting for your approval." : "A reply has ended. Click to read it.",
      tag: `switchboard-${mark.id}-${mark.reply_id}`,
    });
    note.onclick = () => {
      window.focus();
      note.close();
      if (currentSession() !== mark.id) location.assign(mark.url);
    };
  }

  function syncNotifyButton() {
    const box = $(".attention-notify");
    if (!box) return;
    if (!supported()) return;  // stays hidden
    box.hidden = false;
    const button = $(".attention-notify-toggle", box);
    const note = $(".attention-notify-note", box);
    const on = enabled();
    button.setAttribute("aria-pressed", String(on));
    button.textContent = on ? "Notifications on" : "Notify me";
    if (Notification.permission === "denied") {
      note.textContent = "Notifications are blocked for this site; allow them in the browser's site settings.";
    } else {
      note.textContent = on
        ? "You are told when a reply ends or needs approval while this tab is hidden. Click to turn off."
        : "when a reply ends or needs approval while this tab is hidden";
    }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest && event.target.closest(".attention-notify-toggle");
    if (!button || !supported()) return;
    if (enabled()) {
      remember(false);
    } else {
      const permission = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
      remember(permission === "granted");
    }
    syncNotifyButton();
  });

  // ---- menus: Esc and outside clicks close them ----------------------------------------------------

  const MENUS = "details.session-menu, details.sessions-import, details.session-delete, details[data-menu]";

  function closeMenu(menu, focusSummary) {
    menu.open = false;
    const summary = menu.querySelector(":scope > summary");
    if (focusSummary && summary) summary.focus();
  }

  // Capture phase: before app.js's Esc (which then sees the key handled and stops nothing).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    const open = [...document.querySelectorAll(MENUS)].filter((menu) => menu.open);
    if (!open.length) return;
    const inner = event.target.closest && event.target.closest(MENUS);
    const menu = inner && inner.open ? inner : open[open.length - 1];
    event.preventDefault();
    closeMenu(menu, true);
  }, true);

  document.addEventListener("click", (event) => {
    for (const menu of document.querySelectorAll(MENUS)) {
      if (menu.open && !menu.contains(event.target)) closeMenu(menu, false);
    }
  }, true);

  // ---- Stop gone, focus kept: back to the composer rather than lost on <body> ----------------------

  let stopHadFocus = false;
  document.addEventListener("htmx:before:swap", () => {
    stopHadFocus = Boolean(document.activeElement && document.activeElement.id === "composer-stop");
  });
  document.addEventListener("htmx:after:swap", () => {
    if (!stopHadFocus || $("#composer-stop")) return;
    stopHadFocus = false;
    const active = document.activeElement;
    if (!active || active === document.body) {
      const input = $("#composer-input");
      if (input) input.focus();
    }
  });

  function start() {
    syncNotifyButton();
    paint();
    refresh();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
