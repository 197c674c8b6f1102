//! Tocsin's speech: renders a warning to 8 kHz audio.
