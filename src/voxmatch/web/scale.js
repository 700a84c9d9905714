// What a score means: the verbal scale of likelihood ratios, the colour of a cell, a sentence.
//
// Scores are calibrated log-likelihood ratios (natural logarithm): LLR = ln(LR), where LR is how
// many times more likely the recordings are if it is the same speaker than if not. The words
// are the verbal scale of the ENFSI guideline for evaluative reporting in forensic science
// (2015), applied on both sides of 0 (docs/web.md).

const LN10 = Math.log(10);

/** Lower bounds of |LR| (as log10) and their words, strongest first. */
export const VERBAL_SCALE = [
  { log10: 6, words: "extremely strong support" },
  { log10: 4, words: "very strong support" },
  { log10: 3, words: "strong support" },
  { log10: 2, words: "moderately strong support" },
  { log10: 1, words: "moderate support" },
  { log10: Math.log10(2), words: "weak support" },
];

/** |LLR| at which the colour scale saturates: an LR of a million, "extremely strong". */
export const SATURATION_LLR = 6 * LN10;

export function verbal(llr) {
  const strength = Math.abs(llr) / LN10;
  const step = VERBAL_SCALE.find((entry) => strength >= entry.log10);
  if (!step) return "inconclusive";
  return `${step.words} for ${llr > 0 ? "the same speaker" : "different speakers"}`;
}

/** "150", "2.7", "12,000", "3.4 million": a likelihood ratio as a person says it. */
export function aboutTimes(ratio) {
  if (ratio < 10) return ratio.toFixed(1);
  if (ratio >= 1e15) return "more than a thousand trillion";
  const names = [
    [1e12, "trillion"],
    [1e9, "billion"],
    [1e6, "million"],
  ];
  for (const [size, name] of names) {
    if (ratio >= size) return `${Number((ratio / size).toPrecision(2))} ${name}`;
  }
  return Number(ratio.toPrecision(2)).toLocaleString("en");
}

/** The sentence shown on hover or tap. */
export function meaning(llr) {
  const ratio = Math.exp(Math.abs(llr));
  if (ratio < 2) {
    return `The recordings are about as likely either way (${ratio.toFixed(1)} times): no real evidence for or against the same speaker.`;
  }
  return llr > 0
    ? `The recordings are about ${aboutTimes(ratio)} times more likely if it is the same speaker than if they are different speakers.`
    : `The recordings are about ${aboutTimes(ratio)} times more likely if they are different speakers than if it is the same speaker.`;
}

// Diverging: blue for different speakers, white at 0, red for the same speaker.
const NEGATIVE = [33, 102, 172];
const NEUTRAL = [247, 247, 247];
const POSITIVE = [178, 24, 43];

export function colour(llr) {
  const t = Math.max(-1, Math.min(1, llr / SATURATION_LLR));
  const end = t < 0 ? NEGATIVE : POSITIVE;
  const weight = Math.abs(t);
  const mixed = NEUTRAL.map((value, i) => Math.round(value + (end[i] - value) * weight));
  return {
    background: `rgb(${mixed.join(",")})`,
    text: weight > 0.55 ? "#fff" : "#1b1f24",
  };
}

export function formatLlr(llr) {
  const rounded = llr.toFixed(1);
  return llr > 0 && rounded !== "0.0" ? `+${rounded}` : rounded === "-0.0" ? "0.0" : rounded;
}
