// Small helpers for building the page's elements.

/** el("td", {class: "x", dataset: {row: 1}}, "text", child): an element with attributes. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** Offer `blob` for download as `name`. */
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Make a drop zone of `zone` feed `onFiles` (its file input does the same). */
export function dropZone(zone, input, onFiles) {
  input.addEventListener("change", () => {
    if (input.files.length) onFiles([...input.files]);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFiles([...event.dataTransfer.files]);
  });
}

/** What a voiceprint's header says (docs/voiceprint-format.md): speech length and condition. */
export function voiceprintHeader(base64) {
  try {
    const bytes = Uint8Array.from(atob(base64.trim()), (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    const magic = String.fromCharCode(...bytes.slice(0, 4));
    if (magic !== "VXVP") return null;
    const version = view.getUint16(4, true);
    return {
      speechLength: view.getFloat32(8, true),
      condition: version >= 2 ? (bytes[44] === 1 ? "narrowband" : "wideband") : null,
    };
  } catch {
    return null;
  }
}

export function seconds(value) {
  return `${value.toFixed(1)} s`;
}

export const CONDITION_WORDS = { wideband: "wideband", narrowband: "telephone (narrowband)" };
