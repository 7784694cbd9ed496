// Attachments in the composer: the paperclip (file picker), drag and drop onto the composer, and
// paste. Each file is uploaded at once (POST /api/attachments) and becomes a chip holding a hidden
// attachment_ids input, so the form sends the ids. The server decides what a file is; a refusal
// shows its sentence under the composer. No inline handlers: all wired here by delegation.
(() => {
  "use strict";

  const $ = (selector, root = document) => root.querySelector(selector);
  const bar = () => $("#attach-bar");
  const chips = () => $("#attach-chips");
  let pending = 0;

  const { say, csrfToken } = window.Switchboard;  // static/js/app.js

  function sizeText(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1048576) return `${Math.round(bytes / 1024)} KB`;
    return `${(bytes / 1048576).toFixed(1)} MB`;
  }

  function makeChip(name) {
    const chip = document.createElement("li");
    chip.className = "attachment-chip uploading";
    const label = document.createElement("span");
    label.className = "attachment-name";
    label.textContent = name;
    const size = document.createElement("span");
    size.className = "attachment-size";
    size.textContent = "uploading…";
    chip.append(label, size);
    chips().append(chip);
    return chip;
  }

  function finishChip(chip, attachment) {
    chip.classList.remove("uploading");
    chip.dataset.attachmentId = attachment.id;
    chip.querySelector(".attachment-name").textContent = attachment.filename;
    chip.querySelector(".attachment-size").textContent = sizeText(attachment.size);
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "attachment_ids";
    input.value = attachment.id;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "attachment-remove";
    remove.setAttribute("aria-label", `Remove ${attachment.filename}`);
    remove.textContent = "×";
    chip.append(input, remove);
  }

  async function upload(file) {
    const box = bar();
    const form = box.closest("form");
    const maxBytes = Number(box.dataset.maxBytes || 0);
    const maxFiles = Number(box.dataset.maxFiles || 0);
    const name = file.name || "pasted file";
    if (maxFiles && chips().children.length >= maxFiles) {
      say(`A message can carry at most ${maxFiles} files; ${name} was not added.`);
      return;
    }
    if (maxBytes && file.size > maxBytes) {
      say(`${name} is larger than ${sizeText(maxBytes)}, the limit for one file.`);
      return;
    }
    const chip = makeChip(name);
    const body = new FormData();
    body.append("file", file, name);
    for (const field of ["agent_id", "model_id"]) {
      const value = form && form.elements[field] ? form.elements[field].value : "";
      if (value) body.append(field, value);
    }
    pending += 1;
    try {
      const response = await fetch(box.dataset.uploadUrl, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      });
      const data = await response.json().catch(() => null);
      if (!response.ok || !data) {
        chip.remove();
        say((data && data.message) || `${name} could not be attached (HTTP ${response.status}).`);
        return;
      }
      finishChip(chip, data);
    } catch {
      chip.remove();
      say(`${name} could not be uploaded: the connection failed. Try again.`);
    } finally {
      pending -= 1;
    }
  }

  function addFiles(files) {
    if (!files || !files.length || !bar()) return;
    say("");
    for (const file of files) upload(file);
  }

  document.addEventListener("click", (event) => {
    const target = event.target;
    if (!target.closest) return;
    if (target.closest("#attach-button")) {
      $("#attach-input").click();
      return;
    }
    const remove = target.closest(".attachment-remove");
    if (!remove) return;
    const chip = remove.closest(".attachment-chip");
    const id = chip.dataset.attachmentId;
    chip.remove();
    // An unsent upload is deleted at once; one shared with a sent message stays (409 is fine).
    if (id) fetch(`/api/attachments/${encodeURIComponent(id)}`, {
      method: "DELETE",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken() },
    }).catch(() => {});
  });

  document.addEventListener("change", (event) => {
    if (event.target.id !== "attach-input") return;
    addFiles(event.target.files);
    event.target.value = "";
  });

  // Drag and drop anywhere on the composer.
  const dropZone = (event) => event.target.closest && event.target.closest("#composer-form");
  const carriesFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  document.addEventListener("dragover", (event) => {
    const zone = dropZone(event);
    if (!zone || !carriesFiles(event)) return;
    event.preventDefault();
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    const zone = dropZone(event);
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    const zone = dropZone(event);
    if (!zone) return;
    zone.classList.remove("dragging");
    if (!event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });

  // Pasted files (a screenshot, a copied file); pasted text stays text.
  document.addEventListener("paste", (event) => {
    if (event.target.id !== "composer-input" || !event.clipboardData) return;
    const files = event.clipboardData.files;
    if (!files || !files.length) return;
    event.preventDefault();
    addFiles(files);
  });

  // Not while a file is still uploading: its id would be missing from the message.
  document.addEventListener("htmx:config:request", (event) => {
    if (event.target.id !== "composer-form" || !pending) return;
    event.preventDefault();
    say("Wait a moment: a file is still uploading.");
  });

  // A sent message takes its files with it.
  document.addEventListener("htmx:after:request", (event) => {
    const ctx = event.detail && event.detail.ctx;
    if (event.target.id !== "composer-form" || !ctx || !ctx.response || ctx.response.status >= 400) return;
    const list = chips();
    if (list) list.replaceChildren();
  });
})();
