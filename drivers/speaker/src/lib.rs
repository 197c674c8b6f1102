//! Tocsin's loudspeaker driver.
