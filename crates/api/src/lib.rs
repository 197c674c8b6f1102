//! tocsin-api
