// The page: three sections behind a hash (#compare, #gallery, #tasks), the API key dialog.

import { onKeyNeeded } from "./api.js";
import { initCompare } from "./compare.js";
import { initGallery, loadGalleries } from "./gallery.js";
import { onTasksChanged, refreshStatus } from "./tasks.js";
import { loadLibrary } from "./waveform.js";

const SECTIONS = ["compare", "gallery", "tasks"];
const STATUS_EVERY_MS = 3000;
let statusTimer = null;

function show() {
  const wanted = location.hash.slice(1);
  const current = SECTIONS.includes(wanted) ? wanted : "compare";
  for (const name of SECTIONS) {
    document.getElementById(name).hidden = name !== current;
    const link = document.querySelector(`nav a[data-section="${name}"]`);
    if (name === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current === "gallery") loadGalleries();
  clearInterval(statusTimer);
  statusTimer = null;
  if (current === "tasks") {
    refreshStatus();
    // The queue changes under other clients too; asked again only while it is being looked at.
    statusTimer = setInterval(refreshStatus, STATUS_EVERY_MS);
  }
}

function askForKey(reason) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = reason;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(input.value.trim()),
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

async function start() {
  onKeyNeeded(askForKey);
  initCompare();
  initGallery();
  onTasksChanged(() => {
    if (!document.getElementById("tasks").hidden) refreshStatus();
  });
  window.addEventListener("hashchange", show);
  show();
  const problem = await loadLibrary();
  if (problem) {
    const notice = document.getElementById("library-notice");
    notice.textContent = `Waveforms are drawn plainly: ${problem}.`;
    notice.hidden = false;
  }
  fetch("/api/system/info")
    .then((response) => response.json())
    .then((info) => {
      document.getElementById("version").textContent = info.version;
    })
    .catch(() => {});
}

start();
