// The tasks this page started, and the server's queue (/api/system/status).

import { getJson } from "./api.js";
import { el } from "./dom.js";

const tasks = [];
const KIND_WORDS = { extraction: "voiceprint extraction", comparison: "comparison" };
const listeners = new Set();

/** Record a task of this page; returns a function to update its state (and error message). */
export function track(kind, what, state = "uploading") {
  const entry = { kind, what, state, message: "", started: new Date(), id: null };
  tasks.unshift(entry);
  changed();
  return (state, { id, message } = {}) => {
    entry.state = state;
    if (id) entry.id = id;
    if (message !== undefined) entry.message = message;
    changed();
  };
}

export function onTasksChanged(listener) {
  listeners.add(listener);
}

function changed() {
  for (const listener of listeners) listener();
  render();
}

export function activeCount() {
  return tasks.filter((task) => ["queued", "uploading", "pending", "running"].includes(task.state)).length;
}

function render() {
  const list = document.getElementById("task-list");
  list.replaceChildren(
    ...tasks.map((task) =>
      el(
        "li",
        { class: `task ${task.state}`, title: task.id || "" },
        el("span", { class: `pill ${task.state}` }, task.state),
        el(
          "span",
          { class: "task-what" },
          el("strong", {}, task.what),
          el("span", { class: "hint" }, ` ${KIND_WORDS[task.kind] || task.kind}`),
        ),
        el("time", { class: "hint", datetime: task.started.toISOString() }, task.started.toLocaleTimeString()),
        task.message ? el("p", { class: "error task-message" }, task.message) : null,
      ),
    ),
  );
  if (!tasks.length) list.append(el("li", { class: "task empty" }, "No task yet."));
  const badge = document.getElementById("tasks-badge");
  const active = activeCount();
  badge.hidden = active === 0;
  badge.textContent = String(active);
  badge.setAttribute("aria-label", `${active} running`);
}

export async function refreshStatus() {
  const box = document.getElementById("server-status");
  try {
    const status = await getJson("/api/system/status");
    const counts = status.tasks || {};
    const card = (label, value, note) =>
      el("div", { class: "card" }, el("span", { class: "card-value" }, String(value)), el("span", { class: "card-label" }, label), note ? el("span", { class: "hint" }, note) : null);
    box.replaceChildren(
      card("waiting", status.queue.waiting, `of ${status.queue.capacity} places`),
      card("running", status.queue.running, `${status.workers} workers`),
      ...["done", "rejected", "failed"].map((state) => card(state, counts[state] ?? 0, "finished, kept a while")),
    );
    document.getElementById("version").textContent = status.version;
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

render();
