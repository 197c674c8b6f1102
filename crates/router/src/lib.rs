//! tocsin-router
