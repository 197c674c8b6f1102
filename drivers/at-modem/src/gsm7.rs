//! GSM 03.38 default alphabet.
