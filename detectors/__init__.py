"""Pure, causal, per-sensor detectors. No I/O, no logging, no clock reads."""
