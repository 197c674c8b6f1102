//! tocsin-at-modem
