// Compare recordings: extract each file's voiceprints, then score all of them against all.

import { COMPARISON, extract, request, runTask, taskError } from "./api.js";
import { CONDITION_WORDS, download, dropZone, el, seconds, voiceprintHeader } from "./dom.js";
import { VERBAL_SCALE, colour, formatLlr, meaning, verbal } from "./scale.js";
import { track } from "./tasks.js";
import { channelPeaks, drawChannel } from "./waveform.js";

const FINISHED = new Set(["done", "rejected", "failed"]);
const sources = []; // files and pasted voiceprints, in the order they were given
let matrix = null; // {labels, scores, location} of the last comparison shown
let generation = 0; // which set of voiceprints the comparison in flight is for
let compared = ""; // the voiceprints of the matrix shown or being made, joined

export function initCompare() {
  dropZone(document.getElementById("compare-drop"), document.getElementById("audio-input"), addFiles);
  document.getElementById("paste-add").addEventListener("click", addPasted);
  document.getElementById("vp-input").addEventListener("change", async (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    for (const file of files) addVoiceprints((await file.text()).split(/\s+/), file.name);
  });
  document.getElementById("download-csv").addEventListener("click", downloadCsv);
  document.getElementById("download-npy").addEventListener("click", downloadNpy);
  document.getElementById("clear-all").addEventListener("click", clearAll);
  fillVerbalScale();
}

function addFiles(files) {
  for (const file of files) {
    const source = { kind: "file", file, state: "queued", channels: [], error: null, peaks: null };
    sources.push(source);
    const update = track("extraction", file.name, "queued");
    source.peaksReady = channelPeaks(file).then((peaks) => {
      source.peaks = peaks;
    });
    render();
    extract(file, (state, id) => {
      update(state, { id });
      // The final state is shown with the channels, below: a source is never done without them.
      if (FINISHED.has(state)) return;
      source.state = state;
      render();
    })
      .then(async (body) => {
        await source.peaksReady;
        if (body.task.state === "done") {
          source.channels = body.result.channels;
        } else {
          source.error = taskError(body);
          update(body.task.state, { message: source.error });
        }
        source.state = body.task.state;
        render();
        compareAll();
      })
      .catch((error) => {
        source.state = "failed";
        source.error = error.message;
        update("failed", { message: error.message });
        render();
        compareAll();
      });
  }
}

/** Start again with nothing: tasks still running finish on the server, unseen. */
function clearAll() {
  sources.length = 0;
  matrix = null;
  compared = "";
  generation += 1;
  document.getElementById("matrix-area").hidden = true;
  document.getElementById("matrix-status").textContent = "";
  render();
}

function addPasted() {
  const box = document.getElementById("paste-text");
  addVoiceprints(box.value.split(/\s+/), "pasted");
  box.value = "";
}

function addVoiceprints(texts, origin) {
  const found = texts.map((text) => text.trim()).filter(Boolean);
  found.forEach((voiceprint, index) => {
    const header = voiceprintHeader(voiceprint);
    sources.push({
      kind: "voiceprint",
      name: found.length > 1 ? `${origin} #${index + 1}` : origin,
      state: "done",
      channels: [
        {
          channel_number: 0,
          voiceprint,
          speech_length: header ? header.speechLength : null,
          condition: header ? header.condition : null,
        },
      ],
    });
  });
  render();
  compareAll();
}

/** One entry per voiceprint, in the order given: files (channel by channel), then pasted. */
function voiceprintEntries() {
  const entries = [];
  for (const source of sources) {
    for (const channel of source.channels) {
      const name = source.kind === "file" ? source.file.name : source.name;
      const label = source.channels.length > 1 ? `${name} · ch ${channel.channel_number}` : name;
      entries.push({ label, channel });
    }
  }
  return entries;
}

function render() {
  const list = document.getElementById("file-list");
  document.getElementById("files-head").hidden = sources.length === 0;
  const rows = [];
  let index = 0;
  for (const source of sources) {
    if (source.state !== "done" || !source.channels.length) {
      rows.push(pendingRow(source));
      continue;
    }
    // A row is made once and kept (its waveform drawn once); only its number follows the rows
    // before it, which may finish later.
    source.rows = source.rows || source.channels.map((channel, position) => channelRow(source, channel, position));
    for (const row of source.rows) {
      row.dataset.index = String(index);
      row.querySelector(".index").textContent = String(index + 1);
      rows.push(row);
      index += 1;
    }
  }
  list.replaceChildren(...rows);
}

function pendingRow(source) {
  const name = source.kind === "file" ? source.file.name : source.name;
  const words = {
    queued: "waiting for the files before it to be sent…",
    uploading: "uploading…",
    pending: "waiting in the queue…",
    running: "extracting the voiceprint…",
    done: "no channel",
  };
  return el(
    "li",
    { class: `file-row ${source.state}`, dataset: { testid: "file-row", state: source.state } },
    el(
      "div",
      { class: "file-head" },
      el("span", { class: "file-name" }, name),
      el("span", { class: `pill ${source.state}` }, source.state),
    ),
    source.error
      ? el("p", { class: "error", role: "alert" }, source.error)
      : el("p", { class: "hint" }, words[source.state] || ""),
  );
}

function channelRow(source, channel, position) {
  const name = source.kind === "file" ? source.file.name : source.name;
  const label = source.channels.length > 1 ? `${name} · channel ${channel.channel_number}` : name;
  const facts = [];
  if (channel.speech_length !== null && channel.speech_length !== undefined) {
    facts.push(`${seconds(channel.speech_length)} of speech`);
  }
  if (channel.condition) facts.push(CONDITION_WORDS[channel.condition] || channel.condition);
  if (channel.bandwidth_hz) facts.push(`up to ${(channel.bandwidth_hz / 1000).toFixed(1)} kHz`);
  const wave = el("div", { class: "wave", role: "img", "aria-label": `Waveform of ${label}, speech shaded` });
  const vpName = `${name.replace(/\.[^.]+$/, "")}${source.channels.length > 1 ? `-ch${channel.channel_number}` : ""}.vp`;
  const row = el(
    "li",
    {
      class: "file-row done",
      dataset: { testid: source.kind === "file" ? "file-row" : "voiceprint-row", state: "done" },
    },
    el(
      "div",
      { class: "file-head" },
      el("span", { class: "index", "aria-hidden": "true" }),
      el("span", { class: "file-name" }, label),
      el("span", { class: "pill done" }, "done"),
    ),
    el("p", { class: "facts" }, facts.join(" · ") || "voiceprint"),
    source.kind === "file" ? wave : null,
    el(
      "div",
      { class: "row-actions" },
      el("button", {
        type: "button",
        class: "secondary small",
        "aria-label": `Download the voiceprint of ${label}`,
        onclick: () => download(new Blob([`${channel.voiceprint}\n`], { type: "text/plain" }), vpName),
      }, "Download .vp"),
    ),
  );
  if (source.kind === "file") {
    const segments = channel.speech_segments || [];
    const peaks = source.peaks ? source.peaks[Math.min(position, source.peaks.length - 1)] : null;
    if (!source.peaks) wave.append(el("span", { class: "wave-note" }, "This browser cannot decode the file: only the speech is drawn."));
    requestAnimationFrame(() => drawChannel(wave, peaks, segments));
  }
  return row;
}

async function compareAll() {
  const entries = voiceprintEntries();
  const busy = sources.some((source) => ["queued", "uploading", "pending", "running"].includes(source.state));
  const area = document.getElementById("matrix-area");
  const status = document.getElementById("matrix-status");
  if (busy || entries.length < 2) {
    if (entries.length >= 2) status.textContent = "Waiting for the other recordings…";
    return;
  }
  const voiceprints = entries.map((entry) => entry.channel.voiceprint);
  // A file that gave no voiceprint leaves the matrix as it is.
  if (voiceprints.join(",") === compared) return;
  compared = voiceprints.join(",");
  generation += 1;
  const mine = generation;
  area.hidden = false;
  status.textContent = `Scoring ${entries.length} × ${entries.length} voiceprints…`;
  const update = track("comparison", `${entries.length} × ${entries.length} voiceprints`);
  try {
    const body = await runTask(
      COMPARISON,
      { json: { voiceprints_a: voiceprints, voiceprints_b: voiceprints } },
      (state, id) => update(state, { id }),
    );
    if (mine !== generation) return;
    if (body.task.state !== "done") {
      compared = "";
      const message = taskError(body);
      update(body.task.state, { message });
      status.textContent = message;
      return;
    }
    matrix = { labels: entries.map((entry) => entry.label), scores: body.result.scores, location: body.location };
    status.textContent = "";
    drawMatrix();
  } catch (error) {
    if (mine !== generation) return;
    compared = "";
    const message = nameVoiceprint(error, entries);
    update("failed", { message });
    status.textContent = message;
  }
}

/** A 422 about `["body", "voiceprints_a", i]` names the recording, not the index. */
function nameVoiceprint(error, entries) {
  const location = error.body && error.body.detail && error.body.detail[0] && error.body.detail[0].location;
  if (Array.isArray(location) && typeof location[2] === "number" && entries[location[2]]) {
    return `${entries[location[2]].label}: ${error.message}`;
  }
  return error.message;
}

function drawMatrix() {
  const table = document.getElementById("score-matrix");
  const { labels, scores } = matrix;
  const columns = scores.columns_count;
  const head = el(
    "tr",
    {},
    el("th", { scope: "col", class: "corner" }, el("span", { class: "visually-hidden" }, "recording")),
    ...labels.map((label, col) => el("th", { scope: "col", title: label }, el("span", { class: "index" }, String(col + 1)))),
  );
  const rows = [];
  for (let row = 0; row < scores.rows_count; row += 1) {
    const cells = [];
    for (let col = 0; col < columns; col += 1) {
      const llr = scores.values[row * columns + col];
      const { background, text } = colour(llr);
      const sameRecording = row === col;
      const describe = () => showReading(row, col, llr);
      cells.push(
        el(
          "td",
          {},
          el(
            "button",
            {
              type: "button",
              class: `cell${sameRecording ? " self" : ""}`,
              style: `background:${background};color:${text}`,
              dataset: { testid: "score-cell", row: String(row), col: String(col), llr: String(llr) },
              "aria-label": `${labels[row]} against ${labels[col]}: LLR ${formatLlr(llr)}, ${verbal(llr)}`,
              onmouseenter: describe,
              onfocus: describe,
              onclick: describe,
            },
            el("span", { class: "llr" }, formatLlr(llr)),
          ),
        ),
      );
    }
    rows.push(
      el(
        "tr",
        {},
        el("th", { scope: "row", class: "row-label" }, el("span", { class: "index" }, String(row + 1)), el("span", { class: "label-text" }, labels[row])),
        ...cells,
      ),
    );
  }
  table.replaceChildren(table.querySelector("caption"), el("thead", {}, head), el("tbody", {}, ...rows));
  const offDiagonal = bestPair();
  if (offDiagonal) showReading(offDiagonal.row, offDiagonal.col, offDiagonal.llr);
}

function bestPair() {
  const { scores } = matrix;
  let best = null;
  for (let row = 0; row < scores.rows_count; row += 1) {
    for (let col = 0; col < scores.columns_count; col += 1) {
      const llr = scores.values[row * scores.columns_count + col];
      if (row !== col && (!best || llr > best.llr)) best = { row, col, llr };
    }
  }
  return best;
}

function showReading(row, col, llr) {
  const { labels } = matrix;
  const reading = document.getElementById("reading");
  const swatch = colour(llr);
  const lines = [
    el("p", { class: "pair" }, el("strong", {}, labels[row]), " against ", el("strong", {}, labels[col])),
    el("p", { class: "big-llr", style: `background:${swatch.background};color:${swatch.text}` }, `LLR ${formatLlr(llr)}`),
    el("p", { class: "verbal" }, capitalised(verbal(llr))),
    el("p", { class: "sentence" }, meaning(llr)),
  ];
  if (row === col) lines.push(el("p", { class: "hint" }, "A voiceprint against itself: how high this recording can score."));
  reading.replaceChildren(...lines);
}

function capitalised(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function fillVerbalScale() {
  const body = document.querySelector("#verbal-scale tbody");
  const steps = [...VERBAL_SCALE].reverse();
  const rows = [
    el("tr", {}, el("td", {}, "1 to 2"), el("td", {}, "0 to 0.7"), el("td", {}, "inconclusive")),
  ];
  steps.forEach((step, i) => {
    const low = 10 ** step.log10;
    const next = steps[i + 1];
    const lr = next ? `${fmt(low)} to ${fmt(10 ** next.log10)}` : `${fmt(low)} and above`;
    const llr = next ? `${(step.log10 * Math.LN10).toFixed(1)} to ${(next.log10 * Math.LN10).toFixed(1)}` : `${(step.log10 * Math.LN10).toFixed(1)} and above`;
    const swatch = colour(step.log10 * Math.LN10 + 0.01);
    rows.push(
      el(
        "tr",
        {},
        el("td", {}, lr),
        el("td", {}, llr),
        el("td", {}, el("span", { class: "swatch", style: `background:${swatch.background}`, "aria-hidden": "true" }), step.words),
      ),
    );
  });
  body.replaceChildren(...rows);
}

function fmt(value) {
  return Math.round(value).toLocaleString("en");
}

function downloadCsv() {
  if (!matrix) return;
  const quote = (text) => `"${String(text).replaceAll('"', '""')}"`;
  const { labels, scores } = matrix;
  const lines = [["", ...labels].map(quote).join(",")];
  for (let row = 0; row < scores.rows_count; row += 1) {
    const values = scores.values.slice(row * scores.columns_count, (row + 1) * scores.columns_count);
    lines.push([quote(labels[row]), ...values.map(String)].join(","));
  }
  download(new Blob([`${lines.join("\n")}\n`], { type: "text/csv" }), "scores.csv");
}

async function downloadNpy() {
  if (!matrix) return;
  const status = document.getElementById("matrix-status");
  try {
    const response = await request(matrix.location, { accept: "application/x-npy" });
    download(await response.blob(), "scores.npy");
  } catch (error) {
    status.textContent = `The .npy file could not be had: ${error.message}`;
  }
}
