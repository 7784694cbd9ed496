// Switchboard's own behaviour; htmx does the rest. No inline handlers anywhere (strict CSP):
// everything is wired here by event delegation, so it survives htmx swaps.
(() => {
  "use strict";

  const $ = (selector, root = document) => root.querySelector(selector);
  const composerForm = () => $("#composer-form");
  const composerInput = () => $("#composer-input");
  const stopButton = () => $('#composer-actions [data-action="stop"]');

  // The sentence under the composer (#composer-error); "" clears it.
  function say(message) {
    const box = $("#composer-error");
    if (!box) return;
    box.replaceChildren();
    if (message) {
      const p = document.createElement("p");
      p.className = "form-error";
      p.textContent = message;
      box.append(p);
    }
  }

  // The CSRF token for fetch() writes: the header htmx sends (set on <body>), else the meta tag.
  function csrfToken() {
    try {
      const headers = JSON.parse(document.body.getAttribute("hx-headers:inherited") || "{}");
      if (headers["X-CSRFToken"]) return headers["X-CSRFToken"];
    } catch { /* fall back to the meta tag */ }
    const meta = $('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // The page's one home for what the other scripts share (they load after this one, deferred in
  // order: templates/base.html): window.Switchboard.say(message) and window.Switchboard.csrfToken().
  window.Switchboard = Object.freeze({ say, csrfToken });

  // Empty and over-long messages get a sentence under the composer instead of a request.
  function problemWith(text, input) {
    const withFiles = input.form && input.form.querySelector('input[name="attachment_ids"]');
    if (!text.trim() && !withFiles) return "Write a message before sending.";
    const limit = Number(input.dataset.maxChars || 0);
    if (limit && text.length > limit) {
      return `The message is ${text.length.toLocaleString("en")} characters long; the limit is ${limit.toLocaleString("en")}.`;
    }
    return null;
  }

  // Why Send does nothing while a reply is live: an open approval request (composer_waiting.html)
  // says what is awaited.
  function busySentence() {
    const waiting = (document.getElementById("composer-waiting")?.textContent || "").trim();
    return waiting ? `${waiting} Approve or reject it, or press Esc to stop the reply.`
      : "A reply is still being written. Press Esc to stop it, or wait for it to finish.";
  }

  document.addEventListener("htmx:config:request", (event) => {
    const form = composerForm();
    if (!form || event.target !== form) return;
    const input = composerInput();
    if (stopButton()) {  // Send stays Send while a reply is live (aria-disabled): it says why
      event.preventDefault();
      say(busySentence());
      return;
    }
    const problem = problemWith(input.value, input);
    if (problem) {
      event.preventDefault();
      say(problem);
      input.focus();
      return;
    }
    say("");
    form.dataset.sent = input.value;
  });

  // A sent message leaves the box (unless the person already typed something new).
  document.addEventListener("htmx:after:request", (event) => {
    const form = composerForm();
    const ctx = event.detail && event.detail.ctx;
    if (!form || event.target !== form || !ctx || !ctx.response) return;
    const input = composerInput();
    if (ctx.response.status < 400 && input && input.value === form.dataset.sent) input.value = "";
  });

  // Esc stops a reply from the composer or the page, never from a control with its own Esc
  // meaning; an open menu takes Esc first (static/js/attention.js, which marks it handled).
  const OWN_ESCAPE = "select, details, dialog, [role=menu], [role=listbox], [role=dialog], [role=combobox], [contenteditable]";
  function escapeMayStop(target) {
    if (!target || !target.closest || target === composerInput()) return true;
    return !target.closest(OWN_ESCAPE) && !target.matches("input, textarea");
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      if (event.defaultPrevented) return;
      if (document.body.classList.contains("sidebar-open")) {
        $(".sidebar-toggle").click();
        return;
      }
      const stop = stopButton();
      if (stop && escapeMayStop(event.target)) {
        event.preventDefault();
        stop.click();
      }
      return;
    }
    const input = composerInput();
    if (event.target !== input || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (stopButton()) {
      say(busySentence());
      return;
    }
    composerForm().requestSubmit();
  });

  // Copy buttons of code blocks (added by the server after sanitizing).
  document.addEventListener("click", async (event) => {
    const button = event.target.closest && event.target.closest(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("pre");
    if (!code) return;
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Press Ctrl+C";
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });

  // The sidebar is a drawer on narrow screens.
  document.addEventListener("click", (event) => {
    const toggle = event.target.closest && event.target.closest(".sidebar-toggle");
    if (!toggle) return;
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("sidebar-open", open);
  });

  // Follow a streaming reply while the person is at the bottom of the conversation.
  let stickToBottom = true;
  const messages = () => $("#messages");
  document.addEventListener("htmx:before:swap", () => {
    const box = messages();
    if (box) stickToBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  });
  document.addEventListener("htmx:after:swap", () => {
    const box = messages();
    if (box && stickToBottom) box.scrollTop = box.scrollHeight;
  });
  function scrollOnLoad() {
    const box = messages();
    if (box) box.scrollTop = box.scrollHeight;
  }

  // A status change mid-reply swaps only the chip (reply_delta.html), but the reply's article
  // carries the status too (data-status, class status-*), which styles and scripts read: the
  // stall notice stays quiet while the agent awaits approval (progress.js), the attention marks
  // count live replies (attention.js).
  function syncStatus(chip) {
    const turn = chip.closest(".turn");
    const status = chip.dataset.status;
    if (!turn || !status || turn.dataset.status === status) return;
    turn.classList.remove(`status-${turn.dataset.status}`);
    turn.classList.add(`status-${status}`);
    turn.dataset.status = status;
  }
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType === 1 && node.matches(".turn-head .chip[data-status]")) syncStatus(node);
      }
    }
  }).observe(document.documentElement, {subtree: true, childList: true});

  // The reply stream: a discreet "reconnecting" state while hx-sse retries.
  function streamState(element, reconnecting) {
    if (!element || !element.classList || !element.classList.contains("reply-stream")) return;
    element.classList.toggle("reconnecting", reconnecting);
    element.textContent = reconnecting ? "Connection lost. Reconnecting…" : "";
  }
  document.addEventListener("htmx:sse:before:connection", (event) => {
    const connection = event.detail && event.detail.connection;
    if (connection && connection.attempt > 0) streamState(event.target, true);
  });
  document.addEventListener("htmx:sse:after:connection", (event) => streamState(event.target, false));
  document.addEventListener("htmx:sse:error", (event) => {
    const status = event.detail && event.detail.status;
    if (status === 401) {  // the login expired while reconnecting
      location.assign("/login?next=" + encodeURIComponent(location.pathname));
      return;
    }
    if (status === 404) {  // the reply or the session is gone: stop retrying
      event.target.remove();
      return;
    }
    streamState(event.target, true);
  });

  // A request that never got an answer (server down, network gone).
  document.addEventListener("htmx:error", (event) => {
    const ctx = event.detail && event.detail.ctx;
    if (!ctx || ctx.response) return;
    const flash = $("#flash");
    if (!flash) return;
    const p = document.createElement("div");
    p.className = "error-banner";
    p.setAttribute("role", "alert");
    p.textContent = "Switchboard could not be reached. Check your connection and try again.";
    flash.replaceChildren(p);
  });

  // Banners in #flash go away on their own after a while, or when clicked.
  document.addEventListener("htmx:after:swap", () => {
    const flash = $("#flash");
    if (flash && flash.firstElementChild) {
      clearTimeout(flash._timer);
      flash._timer = setTimeout(() => flash.replaceChildren(), 8000);
    }
  });
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest("#flash .error-banner")) $("#flash").replaceChildren();
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", scrollOnLoad);
  else scrollOnLoad();
})();
