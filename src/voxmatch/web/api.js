// The page's only way to the server: the public REST API, with the API key when it asks for one.

const KEY_STORAGE = "voxmatch-api-key";
const FINISHED = new Set(["done", "rejected", "failed"]);
const POLL_PAUSE_MS = 300;

export const EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction";
export const COMPARISON = "/api/technology/speaker-identification-voiceprint-comparison";

/** An SPE4 error body, or a network failure, as an Error whose message is for a person. */
export class ApiError extends Error {
  constructor(status, body) {
    super(describeError(body, status));
    this.status = status;
    this.body = body;
  }
}

/** The SPE4 message, with the first detail's when it says more. */
export function describeError(body, status) {
  if (!body || typeof body.message !== "string") {
    return status ? `The server answered ${status}.` : "The server could not be reached.";
  }
  const detail = Array.isArray(body.detail) && body.detail.length ? body.detail[0] : null;
  if (detail && detail.message && !body.message.includes(detail.message)) {
    const sentence = capitalise(detail.message);
    return `${body.message} ${/[.!?]$/.test(sentence) ? sentence : `${sentence}.`}`;
  }
  return body.message;
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

let askForKey = null;
let pendingKey = null;

/** `prompt(reason)` resolves to the key a person typed; called when the server answers 401. */
export function onKeyNeeded(prompt) {
  askForKey = prompt;
}

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

async function newKey(reason) {
  // Several requests refused at once share one question.
  if (!pendingKey) {
    pendingKey = askForKey(reason).finally(() => {
      pendingKey = null;
    });
  }
  const key = await pendingKey;
  sessionStorage.setItem(KEY_STORAGE, key);
}

/** fetch() on the API: the key sent as `x-api-key`, a 401 asks for one and tries again, any
 * other error status is thrown as an ApiError. */
export async function request(path, { method = "GET", json, body, accept } = {}) {
  for (;;) {
    const headers = {};
    const key = storedKey();
    if (key) headers["x-api-key"] = key;
    let payload = body;
    if (json !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(json);
    }
    if (accept) headers.accept = accept;
    let response;
    try {
      response = await fetch(path, { method, headers, body: payload });
    } catch {
      throw new ApiError(0, null);
    }
    if (response.status === 401 && askForKey) {
      const refusal = await readJson(response);
      await newKey(describeError(refusal, 401));
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await readJson(response));
    return response;
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function sendJson(method, path, json) {
  const response = await request(path, { method, json });
  return response.status === 204 ? null : response.json();
}

/** Start a task (POST answering 202) and poll it to its end. `onState(state, taskId, location)`
 * is called on each change; resolves to the final task body. */
export async function runTask(path, init, onState) {
  const accepted = await (await request(path, { method: "POST", ...init })).json();
  const taskId = accepted.task.task_id;
  const location = `${path}/${taskId}`;
  let state = accepted.task.state;
  onState(state, taskId, location);
  for (;;) {
    // The server holds a poll of an unfinished task a moment before it answers; the pause here
    // keeps a page with many files from asking more often than that.
    const body = await getJson(location);
    if (body.task.state !== state) {
      state = body.task.state;
      onState(state, taskId, location);
    }
    if (FINISHED.has(state)) return { ...body, location };
    await new Promise((resolve) => setTimeout(resolve, POLL_PAUSE_MS));
  }
}

/** The SPE4 message of a rejected or failed task. */
export function taskError(body) {
  return body.error ? describeError(body.error) : `The task ended ${body.task.state}.`;
}

const PARALLEL_EXTRACTIONS = 4;
let extracting = 0;
const waitingFiles = [];

/** Extract the voiceprints of one file: resolves to the task body, result included. At most
 * PARALLEL_EXTRACTIONS run at once: a person dropping a hundred files should not fill the
 * server's queue (its other clients would be refused) nor be refused themselves. */
export async function extract(file, onState) {
  if (extracting >= PARALLEL_EXTRACTIONS) {
    await new Promise((resolve) => waitingFiles.push(resolve));
  }
  extracting += 1;
  try {
    onState("uploading", null, null);
    const form = new FormData();
    form.append("file", file, file.name);
    return await runTask(EXTRACTION, { body: form }, onState);
  } finally {
    extracting -= 1;
    const next = waitingFiles.shift();
    if (next) next();
  }
}
