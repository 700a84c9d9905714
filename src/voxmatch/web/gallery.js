// Search a gallery with a recording, and enrol it (as a new speaker or into an existing one).

import { extract, getJson, request, sendJson, taskError } from "./api.js";
import { CONDITION_WORDS, dropZone, el, seconds } from "./dom.js";
import { formatLlr, verbal } from "./scale.js";
import { track } from "./tasks.js";

const TOP_K = 10;
let probe = null; // {name, state, channel, error}

const select = () => document.getElementById("gallery-select");
const galleryPath = (name) => `/api/galleries/${encodeURIComponent(name)}`;

export function initGallery() {
  select().addEventListener("change", () => {
    showGalleryInfo();
    search();
  });
  document.getElementById("gallery-create").addEventListener("submit", createGallery);
  document.getElementById("enrol-form").addEventListener("submit", enrolById);
  document.getElementById("prior").addEventListener("change", search);
  dropZone(document.getElementById("gallery-drop"), document.getElementById("gallery-audio-input"), (files) => searchWith(files[0]));
}

/** Fill the gallery list (keeping the choice); called when the section is shown. */
export async function loadGalleries() {
  const info = document.getElementById("gallery-info");
  try {
    const { galleries } = await getJson("/api/galleries");
    const chosen = select().value;
    const options = galleries.map((gallery) =>
      el("option", { value: gallery.gallery }, `${gallery.gallery} (${gallery.speakers_count} speakers)`),
    );
    if (!options.length) options.push(el("option", { value: "" }, "(no gallery yet: create one)"));
    select().replaceChildren(...options);
    if (galleries.some((gallery) => gallery.gallery === chosen)) select().value = chosen;
    await showGalleryInfo();
  } catch (error) {
    info.textContent = error.message;
  }
}

async function showGalleryInfo() {
  const info = document.getElementById("gallery-info");
  const name = select().value;
  if (!name) {
    info.textContent = "";
    return;
  }
  try {
    const gallery = await getJson(galleryPath(name));
    info.textContent = `${gallery.speakers_count} speakers, ${gallery.voiceprints_count} recordings · model ${gallery.model}`;
  } catch (error) {
    info.textContent = error.message;
  }
}

async function createGallery(event) {
  event.preventDefault();
  const input = document.getElementById("gallery-name");
  const name = input.value.trim();
  const info = document.getElementById("gallery-info");
  try {
    await sendJson("PUT", galleryPath(name), {});
    input.value = "";
    await loadGalleries();
    select().value = name;
    await showGalleryInfo();
    search();
  } catch (error) {
    info.textContent = error.message;
  }
}

function searchWith(file) {
  probe = { name: file.name, state: "uploading", channel: null, error: null };
  document.getElementById("probe").hidden = false;
  document.querySelector("#search-results tbody").replaceChildren();
  document.getElementById("enrol-status").textContent = "";
  renderProbe();
  const update = track("extraction", file.name);
  extract(file, (state, id) => {
    probe.state = state;
    update(state, { id });
    renderProbe();
  })
    .then((body) => {
      if (body.task.state === "done") {
        // The first channel with speech is the one searched (a call's caller side, say).
        const channels = body.result.channels;
        probe.channel = channels.find((channel) => channel.speech_length > 0) || channels[0];
        probe.channels = channels.length;
      } else {
        probe.error = taskError(body);
        update(body.task.state, { message: probe.error });
      }
      probe.state = body.task.state;
      renderProbe();
      search();
    })
    .catch((error) => {
      probe.state = "failed";
      probe.error = error.message;
      update("failed", { message: error.message });
      renderProbe();
    });
}

function renderProbe() {
  const facts = [];
  if (probe.channel) {
    if (probe.channels > 1) facts.push(`channel ${probe.channel.channel_number} of ${probe.channels}`);
    facts.push(`${seconds(probe.channel.speech_length)} of speech`);
    if (probe.channel.condition) facts.push(CONDITION_WORDS[probe.channel.condition]);
  }
  document.getElementById("probe-list").replaceChildren(
    el(
      "li",
      { class: `file-row ${probe.state}`, dataset: { testid: "probe-row", state: probe.state } },
      el("div", { class: "file-head" }, el("span", { class: "file-name" }, probe.name), el("span", { class: `pill ${probe.state}` }, probe.state)),
      probe.error ? el("p", { class: "error", role: "alert" }, probe.error) : el("p", { class: "facts" }, facts.join(" · ") || "extracting the voiceprint…"),
    ),
  );
}

async function search() {
  const status = document.getElementById("search-status");
  const body = document.querySelector("#search-results tbody");
  const gallery = select().value;
  if (!probe || !probe.channel) return;
  if (!gallery) {
    status.textContent = "Create or pick a gallery to search it.";
    body.replaceChildren();
    return;
  }
  const prior = Number(document.getElementById("prior").value);
  const searched = probe;
  status.textContent = "Searching…";
  try {
    const answer = await sendJson("POST", `${galleryPath(gallery)}/search`, {
      voiceprints: [probe.channel.voiceprint],
      top_k: TOP_K,
      prior_in_gallery: prior,
    });
    // A newer recording or another gallery was chosen meanwhile: this answer is not wanted.
    if (select().value !== gallery || probe !== searched) return;
    const matches = answer.results[0].matches;
    status.textContent = matches.length ? "" : "The gallery has no speaker yet: enrol this recording below.";
    body.replaceChildren(...matches.map((match, rank) => resultRow(match, rank, gallery)));
  } catch (error) {
    if (probe === searched) status.textContent = error.message;
  }
}

function resultRow(match, rank, gallery) {
  return el(
    "tr",
    { dataset: { testid: "search-result", speakerId: match.speaker_id, llr: String(match.score) } },
    el("td", {}, String(rank + 1)),
    el(
      "th",
      { scope: "row", class: "speaker" },
      el("span", { class: "speaker-id" }, match.speaker_id),
      el("span", { class: "verbal-line" }, verbal(match.score)),
    ),
    el("td", { class: "num" }, formatLlr(match.score)),
    el("td", { class: "num" }, percent(match.probability)),
    el(
      "td",
      {},
      el("button", {
        type: "button",
        class: "secondary small",
        "aria-label": `Add this recording to speaker ${match.speaker_id}`,
        onclick: () => enrol(gallery, match.speaker_id, false),
      }, "Add recording"),
    ),
  );
}

function percent(probability) {
  if (probability >= 0.995) return `${(probability * 100).toFixed(1)} %`;
  if (probability < 0.001) return probability === 0 ? "0 %" : "< 0.1 %";
  return `${(probability * 100).toFixed(1)} %`;
}

async function enrolById(event) {
  event.preventDefault();
  const input = document.getElementById("speaker-id");
  const asNew = !event.submitter || event.submitter.value !== "add";
  if (await enrol(select().value, input.value.trim(), asNew)) input.value = "";
}

async function enrol(gallery, speakerId, asNew) {
  const status = document.getElementById("enrol-status");
  if (!probe || !probe.channel || !gallery) {
    status.textContent = gallery ? "The recording has no voiceprint yet." : "Create or pick a gallery first.";
    return false;
  }
  const path = `${galleryPath(gallery)}/speakers/${encodeURIComponent(speakerId)}`;
  try {
    // A PUT would replace a speaker of that id: a new speaker must be new.
    if (asNew && (await speakerExists(gallery, speakerId))) {
      status.textContent = `${gallery} already has a speaker ${speakerId}: add the recording to it, or choose another id.`;
      return false;
    }
    const json = { voiceprints: [probe.channel.voiceprint] };
    const answer = asNew
      ? await request(path, { method: "PUT", json })
      : await request(`${path}/voiceprints`, { method: "POST", json });
    const speaker = await answer.json();
    const replaced = asNew && answer.status === 200 ? " It replaced the speaker of that id." : "";
    status.textContent = `${probe.name} is enrolled in ${gallery} as ${speaker.speaker_id} (${speaker.voiceprints_count} recording${speaker.voiceprints_count === 1 ? "" : "s"}, ${seconds(speaker.speech_length)} of speech).${replaced}`;
    await loadGalleries();
    search();
    return true;
  } catch (error) {
    status.textContent = error.message;
    return false;
  }
}

const LISTED_SPEAKERS = 1000;

/** Whether the gallery has a speaker of that id, when it is small enough to list in one request
 * (asking for the speaker itself would log a 404 in the console when it does not exist);
 * null when it is larger: the PUT's answer says then whether a speaker was replaced. */
async function speakerExists(gallery, speakerId) {
  const info = await getJson(galleryPath(gallery));
  if (info.speakers_count > LISTED_SPEAKERS) return null;
  const listed = await getJson(`${galleryPath(gallery)}/speakers?offset=0&limit=${LISTED_SPEAKERS}`);
  return listed.speakers.some((speaker) => speaker.speaker_id === speakerId);
}
