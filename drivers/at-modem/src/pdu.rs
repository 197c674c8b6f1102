//! TS 23.040 PDUs.
