// Waveforms of a file's channels with the detected speech over them.
//
// The browser decodes the file itself (the server sends back voiceprints, not audio) and keeps
// only PEAKS points per channel. wavesurfer.js draws them with its regions plugin when the
// server could provide it; otherwise a plain canvas of the page's own does.

const PEAKS = 800;
const LARGEST_DECODED_BYTES = 64 * 1024 * 1024;
const SPEECH_COLOUR = "rgba(230, 126, 34, 0.32)";
const WAVE_COLOUR = "#5b7186";

let library = null;
let loading = null;

/** Load wavesurfer.js if the server has it; resolves to a message for the page when not. */
export function loadLibrary() {
  loading = loading || importLibrary();
  return loading;
}

async function importLibrary() {
  try {
    const status = await (await fetch("/web/vendor.json")).json();
    if (!status.wavesurfer.available) return status.wavesurfer.message;
    const [core, regions] = await Promise.all([
      import("/web/vendor/wavesurfer.esm.js"),
      import("/web/vendor/regions.esm.js"),
    ]);
    library = { WaveSurfer: core.default, Regions: regions.default };
    return null;
  } catch {
    return "the waveform library could not be loaded";
  }
}

let decoding = Promise.resolve();

/** Per channel: {peaks: Float32Array, duration} of the file, or null when the browser cannot
 * decode it (or it is too large to decode here). Files are decoded one at a time: a decoded
 * file is all of its samples, and a hundred of them at once would not fit. */
export function channelPeaks(file) {
  const peaks = decoding.then(() => decodedPeaks(file));
  decoding = peaks;
  return peaks;
}

async function decodedPeaks(file) {
  if (file.size > LARGEST_DECODED_BYTES) return null;
  try {
    const context = new OfflineAudioContext(1, 1, 16000);
    const audio = await context.decodeAudioData(await file.arrayBuffer());
    const channels = [];
    for (let channel = 0; channel < audio.numberOfChannels; channel += 1) {
      channels.push({ peaks: peaksOf(audio.getChannelData(channel)), duration: audio.duration });
    }
    return channels;
  } catch {
    return null;
  }
}

function peaksOf(samples) {
  const peaks = new Float32Array(PEAKS);
  const step = Math.max(1, Math.floor(samples.length / PEAKS));
  for (let i = 0; i < PEAKS; i += 1) {
    let high = 0;
    const end = Math.min(samples.length, (i + 1) * step);
    for (let j = i * step; j < end; j += 1) {
      const value = Math.abs(samples[j]);
      if (value > high) high = value;
    }
    peaks[i] = high;
  }
  return peaks;
}

/** Draw one channel into `container`: its waveform when known, the speech segments over it
 * (once the library is loaded or known to be missing). */
export async function drawChannel(container, channel, segments) {
  await loadLibrary();
  const duration = channel ? channel.duration : Math.max(1, ...segments.map((s) => s[1]));
  if (library && channel) {
    const view = library.WaveSurfer.create({
      container,
      height: 56,
      waveColor: WAVE_COLOUR,
      progressColor: WAVE_COLOUR,
      cursorWidth: 0,
      interact: false,
      normalize: true,
      barWidth: 2,
      barGap: 1,
      barRadius: 1,
      peaks: [channel.peaks],
      duration,
    });
    const regions = view.registerPlugin(library.Regions.create());
    const mark = () => {
      for (const [start, end] of segments) {
        regions.addRegion({ start, end, color: SPEECH_COLOUR, drag: false, resize: false });
      }
    };
    if (view.getDuration() > 0) mark();
    else view.once("ready", mark);
    return;
  }
  drawCanvas(container, channel, segments, duration);
}

function drawCanvas(container, channel, segments, duration) {
  const canvas = document.createElement("canvas");
  canvas.className = "fallback-wave";
  container.append(canvas);
  const paint = () => {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, container.clientWidth);
    const height = 56;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const pen = canvas.getContext("2d");
    pen.scale(ratio, ratio);
    pen.clearRect(0, 0, width, height);
    pen.fillStyle = SPEECH_COLOUR;
    for (const [start, end] of segments) {
      const x = (start / duration) * width;
      pen.fillRect(x, 0, Math.max(1, ((end - start) / duration) * width), height);
    }
    if (!channel) return;
    const top = Math.max(...channel.peaks, 1e-9);
    pen.fillStyle = WAVE_COLOUR;
    const bar = width / channel.peaks.length;
    channel.peaks.forEach((peak, i) => {
      const h = Math.max(1, (peak / top) * (height - 4));
      pen.fillRect(i * bar, (height - h) / 2, Math.max(1, bar - 0.5), h);
    });
  };
  paint();
  new ResizeObserver(paint).observe(container);
}
