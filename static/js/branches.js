// Conversation control on the page: copy a message as markdown, close an edit form on Cancel.
// The raw markdown travels escaped in the button's data-copy attribute, never as HTML.
(() => {
  "use strict";

  function fallbackCopy(text) {
    const box = document.createElement("textarea");
    box.value = text;
    box.setAttribute("readonly", "");
    box.className = "copy-buffer";
    document.body.append(box);
    box.select();
    let done = false;
    try {
      done = document.execCommand("copy");
    } catch (error) {
      done = false;
    }
    box.remove();
    return done;
  }

  function tell(button, label) {
    const before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = label;
    window.setTimeout(() => {
      button.textContent = before;
    }, 1500);
  }

  async function copy(button) {
    const text = button.dataset.copy || "";
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard API");
      await navigator.clipboard.writeText(text);
      tell(button, "Copied");
    } catch (error) {
      tell(button, fallbackCopy(text) ? "Copied" : "Copy failed");
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    if (button.dataset.action === "copy") {
      event.preventDefault();
      copy(button);
    } else if (button.dataset.action === "cancel-edit") {
      const details = button.closest("details");
      if (details) details.open = false;
    }
  });

  // A send's answer (appended turns) can land after the session watcher has already morphed the
  // same turns in (a race older than branching): keep the first element of each id, the one that
  // oob updates reach, so a conversation never shows a turn twice.
  document.addEventListener("htmx:after:swap", () => {
    const seen = new Set();
    document.querySelectorAll("#messages > [id]").forEach((element) => {
      if (seen.has(element.id)) element.remove();
      else seen.add(element.id);
    });
  });

  // Opening an edit form puts the cursor at the end of the text.
  document.addEventListener(
    "toggle",
    (event) => {
      const details = event.target;
      if (!(details instanceof HTMLDetailsElement) || !details.open || !details.classList.contains("edit-message")) return;
      const box = details.querySelector("textarea");
      if (box) {
        box.focus();
        box.setSelectionRange(box.value.length, box.value.length);
      }
    },
    true,
  );
})();
