// A live reply's progress line: "Working · 12 s", and "No output for 17 s" once its agent has been
// silent for data-stall-after seconds. The server gives every time (ISO UTC, its own clock in
// data-now), so a reload or another tab shows the same figures; this only keeps them counting.
// The timelines' open/folded state chosen by the person survives the stream's re-renders.
(() => {
  "use strict";

  const QUIET = new Set(["awaiting_approval"]); // waiting for a person: silence is expected
  const skews = new WeakMap(); // element -> {now, skew}: server clock minus this clock, in ms
  const chosen = new Map(); // timeline id -> open, as the person left it

  function format(seconds) {
    const s = Math.max(Math.floor(seconds), 0);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  function serverNow(el) {
    const given = el.dataset.now || "";
    let known = skews.get(el);
    if (!known || known.now !== given) {
      const parsed = Date.parse(given);
      known = { now: given, skew: Number.isNaN(parsed) ? 0 : parsed - Date.now() };
      skews.set(el, known);
    }
    return Date.now() + known.skew;
  }

  function update(el) {
    const started = Date.parse(el.dataset.started || "");
    if (Number.isNaN(started)) return;
    const now = serverNow(el);
    const elapsed = el.querySelector(".progress-elapsed");
    const working = `Working · ${format((now - started) / 1000)}`;
    if (elapsed && elapsed.textContent !== working) elapsed.textContent = working;
    const stall = el.querySelector(".progress-stall");
    if (!stall) return;
    const last = Date.parse(el.dataset.lastOutput || "");
    const after = Number(el.dataset.stallAfter || 0);
    const turn = el.closest(".turn");
    const silent = (now - (Number.isNaN(last) ? started : Math.max(last, started))) / 1000;
    const stalled = after > 0 && silent >= after && !(turn && QUIET.has(turn.dataset.status));
    const text = stalled ? `No output for ${format(silent)}` : "";
    if (stall.textContent !== text) stall.textContent = text;
    if (stall.hidden === stalled) stall.hidden = !stalled;
  }

  function restoreTimelines() {
    for (const [id, open] of chosen) {
      const details = document.getElementById(id);
      if (!details) chosen.delete(id);
      else if (details.open !== open) details.open = open;
    }
  }

  function tick() {
    document.querySelectorAll(".reply-progress").forEach(update);
  }

  // A person's click on a timeline's summary (not the stream's re-render) is what is remembered.
  document.addEventListener("click", (event) => {
    const summary = event.target.closest && event.target.closest(".reply-steps > summary");
    if (!summary) return;
    const details = summary.parentElement;
    setTimeout(() => chosen.set(details.id, details.open), 0);
  });

  // Re-renders (htmx swaps and morphs) bring new times and may fold a timeline: update at once.
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      tick();
      restoreTimelines();
    });
  }).observe(document.documentElement, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ["data-last-output", "data-now", "open"],
  });

  setInterval(tick, 1000);
  tick();
})();
