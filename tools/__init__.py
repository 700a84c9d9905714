"""Developer tools: calibration, generated docs and the real speech they share (not shipped)."""
