//! TS 23.040 SMS PDUs: SMS-SUBMIT, SMS-DELIVER and SMS-STATUS-REPORT, with concatenation.
//!
//! Both directions are here because both sides of the modem need them: the driver encodes
//! SUBMITs and decodes DELIVERs and STATUS-REPORTs; the simulator decodes SUBMITs and
//! encodes DELIVERs and STATUS-REPORTs.
//!
//! Layouts (hex; semi-octet numbers have their nibbles swapped and are F-padded):
//! - SMSC part: `len(octets incl. TOA)` `TOA` `digits`; `00` means "the stored SMSC".
//! - SUBMIT: `FO` `MR` `DA-len(digits)` `DA-TOA` `DA` `PID` `DCS` `[VP]` `UDL` `UD`.
//! - DELIVER: `FO` `OA-len` `OA-TOA` `OA` `PID` `DCS` `SCTS(7)` `UDL` `UD`.
//! - STATUS-REPORT: `FO` `MR` `RA-len` `RA-TOA` `RA` `SCTS(7)` `DT(7)` `ST`.
//!
//! Text goes as GSM 7-bit when every character fits the default alphabet, otherwise as
//! UCS2 (UTF-16BE). Long texts are split into concatenated parts that never cut an
//! extension-table escape pair or a UTF-16 surrogate pair in half.
//!
//! Device bytes are untrusted: every malformed input is a [`PduError`], never a panic.

use std::collections::HashMap;
use std::time::Duration;

use tocsin_core::{PhoneNumber, Timestamp};

use crate::gsm7;

/// Why a PDU could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// A character that is not a hexadecimal digit.
    #[error("invalid hex character at position {0}")]
    BadHex(usize),
    /// Hex text with an odd number of digits.
    #[error("hex text has an odd number of digits")]
    OddHex,
    /// The PDU ended inside the named field.
    #[error("PDU ends inside the {0} field")]
    Truncated(&'static str),
    /// The SMSC address length octet is out of range.
    #[error("SMSC address length {0} is out of range")]
    BadSmscLength(u8),
    /// An address longer than the 20 digits TS 23.040 allows.
    #[error("address of {0} semi-octets is longer than 20")]
    AddressTooLong(u8),
    /// An address to encode that is neither `+digits`, digits, nor short GSM-7 text.
    #[error("address {0:?} cannot be encoded")]
    BadAddress(String),
    /// TP-MTI 11, which TS 23.040 reserves.
    #[error("reserved message type indicator")]
    ReservedMti,
    /// The PDU is not the type the caller asked for.
    #[error("expected an {expected}, found another message type")]
    WrongType {
        /// The message type the caller wanted.
        expected: &'static str,
    },
    /// TP-UDL larger than one SMS can carry.
    #[error("user data length {udl} exceeds the maximum {max}")]
    UdlTooLong {
        /// The length the PDU claims.
        udl: u8,
        /// The most this coding allows.
        max: u8,
    },
    /// The user data is shorter than TP-UDL says.
    #[error("user data has {have} octets, TP-UDL needs {need}")]
    UserDataShort {
        /// Octets present.
        have: usize,
        /// Octets TP-UDL implies.
        need: usize,
    },
    /// The user data header is longer than the user data, or an element overruns it.
    #[error("malformed user data header")]
    BadUdh,
    /// UCS2 user data with an odd number of octets.
    #[error("UCS2 user data has an odd number of octets")]
    OddUcs2,
    /// The text would need more than 255 concatenated parts.
    #[error("text needs {0} parts; at most 255 are possible")]
    TooManyParts(usize),
    /// The octet count given with `AT+CMGS` does not match the PDU.
    #[error("AT+CMGS length {at_length} does not match a PDU of {total} octets")]
    LengthMismatch {
        /// The `<length>` of `AT+CMGS=<length>`.
        at_length: usize,
        /// Octets of PDU received.
        total: usize,
    },
}

// ---------------------------------------------------------------------------------------
// Hex

/// Uppercase hex, as modems print PDUs.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    out
}

/// Decodes hex (either case). Surrounding ASCII whitespace is ignored, because modem lines
/// often carry a trailing space or CR; whitespace inside is an error.
pub fn hex_decode(hex: &str) -> Result<Vec<u8>, PduError> {
    let lead = hex.len() - hex.trim_ascii_start().len();
    let bytes = hex.trim_ascii().as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(PduError::OddHex);
    }
    let nibble = |i: usize| -> Result<u8, PduError> {
        let c = bytes.get(i).copied().ok_or(PduError::OddHex)?;
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(PduError::BadHex(i + lead)),
        }
    };
    (0..bytes.len() / 2)
        .map(|i| Ok((nibble(2 * i)? << 4) | nibble(2 * i + 1)?))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Encoding SMS-SUBMIT

/// How one SMS-SUBMIT should be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Ask the network for a status report (TP-SRR), which is how Tocsin learns a warning
    /// reached the handset.
    pub status_report: bool,
    /// Relative validity period octet (TP-VP), e.g. 0xA7 = 24 h, 0xAA = 4 days; `None`
    /// leaves it to the SMSC.
    pub validity: Option<u8>,
    /// Concatenation reference shared by all parts of one long text. With an 8-bit
    /// reference only the low byte is used.
    pub concat_ref: u16,
    /// Use the 16-bit reference element (IEI 0x08) instead of the 8-bit one (IEI 0x00).
    pub ref16: bool,
}

impl Default for SubmitOptions {
    /// Status report on, 4 days validity, 8-bit reference 0: a warning should be tracked
    /// and may wait a while for a handset that is out of coverage.
    fn default() -> Self {
        SubmitOptions {
            status_report: true,
            validity: Some(0xAA),
            concat_ref: 0,
            ref16: false,
        }
    }
}

/// One encoded SMS-SUBMIT TPDU (no SMSC part), ready for `AT+CMGS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitPart {
    /// The TPDU octets, starting with the first octet (FO).
    pub tpdu: Vec<u8>,
}

impl SubmitPart {
    /// The `<length>` of `AT+CMGS=<length>`: TPDU octets, the SMSC part excluded.
    pub fn at_length(&self) -> usize {
        self.tpdu.len()
    }

    /// The hex to type after the `> ` prompt: `00` (use the SIM's stored SMSC) + TPDU.
    pub fn hex_with_default_smsc(&self) -> String {
        format!("00{}", hex_encode(&self.tpdu))
    }
}

/// Encodes a text to one person as one or more SMS-SUBMIT TPDUs. TP-MR is 0 (the modem
/// fills it in). See [`encode_submit_to`] for destinations that are not full numbers.
pub fn encode_submit(
    to: &PhoneNumber,
    text: &str,
    opts: &SubmitOptions,
) -> Result<Vec<SubmitPart>, PduError> {
    encode_submit_to(to.as_str(), text, opts)
}

/// Like [`encode_submit`] for any destination string: `+digits` goes as international
/// (TOA 0x91), bare digits (short codes, national numbers) as unknown type (TOA 0x81).
pub fn encode_submit_to(
    destination: &str,
    text: &str,
    opts: &SubmitOptions,
) -> Result<Vec<SubmitPart>, PduError> {
    if destination.is_empty() || !is_number(destination) {
        return Err(PduError::BadAddress(destination.to_owned()));
    }
    let address = encode_address(destination)?;
    let bodies = split_text(text, opts.concat_ref, opts.ref16)?;
    let mut parts = Vec::with_capacity(bodies.len());
    for body in bodies {
        let mut fo = 0x01; // MTI = SMS-SUBMIT
        if opts.validity.is_some() {
            fo |= 0x10; // VPF = relative
        }
        if opts.status_report {
            fo |= 0x20;
        }
        if body.has_udh {
            fo |= 0x40;
        }
        let mut tpdu = Vec::with_capacity(16 + address.len() + body.ud.len());
        tpdu.push(fo);
        tpdu.push(0x00); // TP-MR: the modem assigns it
        tpdu.extend_from_slice(&address);
        tpdu.push(0x00); // TP-PID
        tpdu.push(body.dcs);
        if let Some(vp) = opts.validity {
            tpdu.push(vp);
        }
        tpdu.push(body.udl);
        tpdu.extend_from_slice(&body.ud);
        parts.push(SubmitPart { tpdu });
    }
    Ok(parts)
}

/// How many parts a text needs with the given reference width, and in which alphabet.
/// Lets the driver and the router's budget count parts without encoding.
pub fn count_parts(text: &str, ref16: bool) -> Result<(Alphabet, usize), PduError> {
    let bodies = split_text(text, 0, ref16)?;
    let alphabet = match bodies.first().map(|b| b.dcs) {
        Some(0x08) => Alphabet::Ucs2,
        _ => Alphabet::Gsm7,
    };
    Ok((alphabet, bodies.len()))
}

/// The DCS, UDL and UD of one part.
struct Body {
    dcs: u8,
    udl: u8,
    ud: Vec<u8>,
    has_udh: bool,
}

/// The most octets of user data one SMS carries.
const MAX_UD_OCTETS: usize = 140;
/// The most septets of user data one SMS carries.
const MAX_SEPTETS: usize = 160;

/// Splits text into part bodies: GSM 7-bit when it fits, else UCS2.
fn split_text(text: &str, concat_ref: u16, ref16: bool) -> Result<Vec<Body>, PduError> {
    // The header each part of a long text carries (without the UDHL octet's content yet).
    let udh_len = if ref16 { 7 } else { 6 };
    let make_udh = |total: usize, seq: usize| -> Vec<u8> {
        let total = u8::try_from(total).unwrap_or(u8::MAX);
        let seq = u8::try_from(seq).unwrap_or(u8::MAX);
        let [hi, lo] = concat_ref.to_be_bytes();
        if ref16 {
            vec![0x06, 0x08, 0x04, hi, lo, total, seq]
        } else {
            vec![0x05, 0x00, 0x03, lo, total, seq]
        }
    };
    if let Some(septets) = gsm7::to_septets(text) {
        let header_bits = udh_len * 8;
        let fill = (7 - header_bits % 7) % 7;
        let header_septets = (header_bits + fill) / 7;
        let chunks = split_units(&septets, MAX_SEPTETS, MAX_SEPTETS - header_septets, |s| {
            s == gsm7::ESC
        })?;
        let total = chunks.len();
        let fill = u8::try_from(fill).unwrap_or(0);
        return Ok(chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                if total == 1 {
                    Body {
                        dcs: 0x00,
                        udl: u8::try_from(chunk.len()).unwrap_or(u8::MAX),
                        ud: gsm7::pack(chunk, 0),
                        has_udh: false,
                    }
                } else {
                    let mut ud = make_udh(total, i + 1);
                    ud.extend(gsm7::pack(chunk, fill));
                    Body {
                        dcs: 0x00,
                        udl: u8::try_from(header_septets + chunk.len()).unwrap_or(u8::MAX),
                        ud,
                        has_udh: true,
                    }
                }
            })
            .collect());
    }
    let units: Vec<u16> = text.encode_utf16().collect();
    let chunks = split_units(
        &units,
        MAX_UD_OCTETS / 2,
        (MAX_UD_OCTETS - udh_len) / 2,
        |u| (0xD800..=0xDBFF).contains(&u),
    )?;
    let total = chunks.len();
    Ok(chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut ud = if total == 1 {
                Vec::with_capacity(chunk.len() * 2)
            } else {
                make_udh(total, i + 1)
            };
            let has_udh = !ud.is_empty();
            for u in chunk.iter() {
                ud.extend_from_slice(&u.to_be_bytes());
            }
            Body {
                dcs: 0x08,
                udl: u8::try_from(ud.len()).unwrap_or(u8::MAX),
                ud,
                has_udh,
            }
        })
        .collect())
}

/// Cuts units into parts: one part if they fit `single`, else parts of at most
/// `per_part`, never ending a part on a unit for which `is_lead` holds (an ESC or a high
/// surrogate, whose partner must travel in the same part).
fn split_units<T: Copy>(
    units: &[T],
    single: usize,
    per_part: usize,
    is_lead: impl Fn(T) -> bool,
) -> Result<Vec<&[T]>, PduError> {
    if units.len() <= single {
        return Ok(vec![units]);
    }
    let mut parts = Vec::new();
    let mut rest = units;
    while !rest.is_empty() {
        let mut take = per_part.min(rest.len());
        if take < rest.len() && take > 1 && rest.get(take - 1).is_some_and(|&u| is_lead(u)) {
            take -= 1;
        }
        let (part, tail) = rest.split_at(take);
        parts.push(part);
        rest = tail;
        if parts.len() > 255 {
            // Count the rest roughly for the error message, without building it.
            let more = rest.len().div_ceil(per_part.max(1));
            return Err(PduError::TooManyParts(parts.len() + more));
        }
    }
    Ok(parts)
}

/// Whether an address string is `+digits` or digits (with `*` and `#` as GSM allows).
fn is_number(addr: &str) -> bool {
    let digits = addr.strip_prefix('+').unwrap_or(addr);
    !digits.is_empty()
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

/// Encodes an address field: `len` `TOA` `value`. `+digits` → TOA 0x91, digits → 0x81,
/// anything else up to 11 GSM-7 characters → alphanumeric (TOA 0xD0), as sender names
/// such as "Tocsin" arrive.
fn encode_address(addr: &str) -> Result<Vec<u8>, PduError> {
    let bad = || PduError::BadAddress(addr.to_owned());
    if is_number(addr) {
        let (toa, digits) = match addr.strip_prefix('+') {
            Some(d) => (0x91, d),
            None => (0x81, addr),
        };
        if digits.len() > 20 {
            return Err(bad());
        }
        let mut out = vec![u8::try_from(digits.len()).map_err(|_| bad())?, toa];
        out.extend(encode_semi_octets(digits));
        return Ok(out);
    }
    let septets = gsm7::to_septets(addr).ok_or_else(bad)?;
    if septets.is_empty() || septets.len() > 11 {
        return Err(bad());
    }
    let packed = gsm7::pack(&septets, 0);
    let semi_octets = (septets.len() * 7).div_ceil(4);
    let mut out = vec![u8::try_from(semi_octets).map_err(|_| bad())?, 0xD0];
    out.extend(packed);
    Ok(out)
}

/// Encodes an SMSC part: `00` for none, else `len` `TOA` `digits` (len counts TOA too).
fn encode_smsc(smsc: Option<&str>) -> Result<Vec<u8>, PduError> {
    let Some(smsc) = smsc.filter(|s| !s.is_empty()) else {
        return Ok(vec![0x00]);
    };
    if !is_number(smsc) {
        return Err(PduError::BadAddress(smsc.to_owned()));
    }
    let (toa, digits) = match smsc.strip_prefix('+') {
        Some(d) => (0x91, d),
        None => (0x81, smsc),
    };
    let octets = encode_semi_octets(digits);
    if octets.len() > 10 {
        return Err(PduError::BadAddress(smsc.to_owned()));
    }
    let mut out = vec![u8::try_from(octets.len() + 1).unwrap_or(0), toa];
    out.extend(octets);
    Ok(out)
}

/// Digits as swapped semi-octets, F-padded.
fn encode_semi_octets(digits: &str) -> Vec<u8> {
    let nibble = |b: u8| match b {
        b'*' => 0x0A,
        b'#' => 0x0B,
        d => d.wrapping_sub(b'0') & 0x0F,
    };
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => nibble(*a) | (nibble(*b) << 4),
            [a] => nibble(*a) | 0xF0,
            _ => 0xFF,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Encoding for the simulator: SMS-DELIVER and SMS-STATUS-REPORT

/// A PDU as a modem prints it: the SMSC part, then the TPDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmscPdu {
    /// The SMSC part including its length octet (`00` when absent).
    pub smsc: Vec<u8>,
    /// The TPDU.
    pub tpdu: Vec<u8>,
}

impl SmscPdu {
    /// SMSC part and TPDU together, as in `+CMT`, `+CDS` and `+CMGR` output.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.smsc.clone();
        out.extend_from_slice(&self.tpdu);
        out
    }

    /// [`Self::to_bytes`] as uppercase hex.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.to_bytes())
    }

    /// The `<length>` modems announce (`+CMT: ,<length>`, `+CDS: <length>`): TPDU octets.
    pub fn tpdu_len(&self) -> usize {
        self.tpdu.len()
    }
}

/// Encodes a text from `originator` as SMS-DELIVER PDUs, split into concatenated parts
/// (8-bit reference `concat_ref`) exactly like [`encode_submit`] splits. `smsc` is the
/// service centre that "delivered" it (e.g. `+8613800100500`), `None` for `00`.
/// The originator is `+digits`, digits or an alphanumeric sender name (≤ 11 GSM chars).
pub fn encode_deliver(
    smsc: Option<&str>,
    originator: &str,
    text: &str,
    scts: &Scts,
    concat_ref: u8,
) -> Result<Vec<SmscPdu>, PduError> {
    let smsc = encode_smsc(smsc)?;
    let address = encode_address(originator)?;
    let bodies = split_text(text, u16::from(concat_ref), false)?;
    let scts = scts.to_bytes();
    Ok(bodies
        .into_iter()
        .map(|body| {
            // MTI = DELIVER, MMS set (no more messages waiting).
            let fo = if body.has_udh { 0x44 } else { 0x04 };
            let mut tpdu = Vec::with_capacity(14 + address.len() + body.ud.len());
            tpdu.push(fo);
            tpdu.extend_from_slice(&address);
            tpdu.push(0x00); // PID
            tpdu.push(body.dcs);
            tpdu.extend_from_slice(&scts);
            tpdu.push(body.udl);
            tpdu.extend_from_slice(&body.ud);
            SmscPdu {
                smsc: smsc.clone(),
                tpdu,
            }
        })
        .collect())
}

/// Encodes an SMS-STATUS-REPORT for the part the network numbered `mr`: the SMSC
/// received it at `scts` and reached the final `status` (TP-ST) at `discharge`.
pub fn encode_status_report(
    smsc: Option<&str>,
    mr: u8,
    recipient: &str,
    scts: &Scts,
    discharge: &Scts,
    status: u8,
) -> Result<SmscPdu, PduError> {
    let smsc = encode_smsc(smsc)?;
    let address = encode_address(recipient)?;
    let mut tpdu = Vec::with_capacity(18 + address.len());
    tpdu.push(0x06); // MTI = STATUS-REPORT, MMS set
    tpdu.push(mr);
    tpdu.extend_from_slice(&address);
    tpdu.extend_from_slice(&scts.to_bytes());
    tpdu.extend_from_slice(&discharge.to_bytes());
    tpdu.push(status);
    Ok(SmscPdu { smsc, tpdu })
}

// ---------------------------------------------------------------------------------------
// Decoding

/// A decoded PDU: the SMSC part (if the caller said there was one) and the TPDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPdu {
    /// The SMSC address (`+digits` when international); `None` for `00` or when absent.
    pub smsc: Option<String>,
    /// The message itself.
    pub tpdu: Tpdu,
}

/// The three TPDU types Tocsin meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tpdu {
    /// Phone to network: what the driver sends (and the simulator receives).
    Submit(Submit),
    /// Network to phone: an inbound text, possibly a person's ack.
    Deliver(Deliver),
    /// Network to phone: what became of an earlier SUBMIT.
    StatusReport(StatusReport),
}

/// A decoded SMS-SUBMIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    /// TP-SRR: a status report was requested.
    pub status_report: bool,
    /// TP-MR, the message reference (0 when the modem is to assign it).
    pub mr: u8,
    /// TP-DA: `+digits` when international, digits otherwise, or an alphanumeric name.
    pub destination: String,
    /// TP-PID.
    pub pid: u8,
    /// TP-DCS.
    pub dcs: u8,
    /// The relative validity period octet; `None` when absent or not in relative form.
    pub validity: Option<u8>,
    /// The text and its concatenation header.
    pub user_data: UserData,
}

/// A decoded SMS-DELIVER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deliver {
    /// TP-OA: `+digits` when international, digits otherwise, or an alphanumeric name.
    pub originator: String,
    /// TP-PID.
    pub pid: u8,
    /// TP-DCS.
    pub dcs: u8,
    /// When the SMSC received it; `None` if the timestamp was not decimal digits.
    pub scts: Option<Scts>,
    /// The text and its concatenation header.
    pub user_data: UserData,
}

/// A decoded SMS-STATUS-REPORT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// TP-MR of the SUBMIT this report is about (the `+CMGS: <mr>` value).
    pub mr: u8,
    /// TP-RA, the recipient of that SUBMIT.
    pub recipient: String,
    /// When the SMSC received the SUBMIT.
    pub scts: Option<Scts>,
    /// When the SMSC reached `status` (TP-DT).
    pub discharge: Option<Scts>,
    /// TP-ST; see [`status_class`].
    pub status: u8,
}

/// User data decoded to text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserData {
    /// The text of this part. 8-bit data reads as Latin-1, one char per octet.
    pub text: String,
    /// The concatenation element, if this is one part of a longer text.
    pub concat: Option<Concat>,
    /// The raw octets, for 8-bit (binary or compressed) data only.
    pub binary: Option<Vec<u8>>,
}

/// The concatenation information element (IEI 0x00 or 0x08).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Concat {
    /// The reference shared by all parts (8-bit references widened).
    pub reference: u16,
    /// How many parts the text has (≥ 1).
    pub total: u8,
    /// This part's number, 1-based.
    pub seq: u8,
}

/// The alphabet a DCS selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alphabet {
    /// GSM 03.38 7-bit default alphabet.
    Gsm7,
    /// 8-bit data (also used for compressed text, which Tocsin does not decompress).
    Eight,
    /// UCS2 / UTF-16BE.
    Ucs2,
}

/// The alphabet of a TP-DCS per TS 23.038 §4. Reserved codings read as GSM 7-bit, as the
/// spec asks of receivers.
pub fn dcs_alphabet(dcs: u8) -> Alphabet {
    let by_bits = |bits: u8| match bits & 0x03 {
        0x01 => Alphabet::Eight,
        0x02 => Alphabet::Ucs2,
        _ => Alphabet::Gsm7,
    };
    match dcs >> 4 {
        // General data coding (and "marked for automatic deletion"): bit 5 = compressed.
        0x0..=0x7 => {
            if dcs & 0x20 != 0 {
                Alphabet::Eight
            } else {
                by_bits(dcs >> 2)
            }
        }
        // Message waiting indication, UCS2 group.
        0xE => Alphabet::Ucs2,
        // Data coding/message class: bit 2 chooses 8-bit.
        0xF => {
            if dcs & 0x04 != 0 {
                Alphabet::Eight
            } else {
                Alphabet::Gsm7
            }
        }
        _ => Alphabet::Gsm7,
    }
}

/// The meaning of a TP-ST value for the record of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// Received by the handset (0x00), or forwarded but unconfirmed (0x01).
    Delivered,
    /// Temporary error; the SMSC is still trying (0x20–0x3F).
    TemporaryRetrying,
    /// Permanent error; the SMSC gave up (0x40–0x5F, and 0x02–0x1F: "replaced" and
    /// reserved completion codes, which do not prove the warning was read).
    Permanent,
    /// Temporary error; the SMSC stopped trying (0x60–0x7F, and reserved 0x80–0xFF).
    TemporaryStopped,
}

/// Classifies TP-ST. Only 0x00 and 0x01 count as delivered: anything unknown is reported
/// as a failure the router can escalate, never as a false "delivered".
pub fn status_class(status: u8) -> StatusClass {
    match status {
        0x00 | 0x01 => StatusClass::Delivered,
        0x02..=0x1F => StatusClass::Permanent,
        0x20..=0x3F => StatusClass::TemporaryRetrying,
        0x40..=0x5F => StatusClass::Permanent,
        _ => StatusClass::TemporaryStopped,
    }
}

/// Decodes a PDU. `has_smsc` says whether it starts with an SMSC part, as PDUs from
/// `+CMT`, `+CDS`, `+CMGR` and `+CMGL` do. TP-MTI 00 reads as DELIVER, 01 as SUBMIT and
/// 10 as STATUS-REPORT (the network-to-phone meanings, plus SUBMIT for the simulator).
pub fn parse_pdu(bytes: &[u8], has_smsc: bool) -> Result<ParsedPdu, PduError> {
    let mut r = Reader::new(bytes);
    let smsc = if has_smsc { parse_smsc(&mut r)? } else { None };
    let tpdu = parse_tpdu(r.rest())?;
    Ok(ParsedPdu { smsc, tpdu })
}

/// Decodes a TPDU without an SMSC part.
pub fn parse_tpdu(bytes: &[u8]) -> Result<Tpdu, PduError> {
    let fo = bytes
        .first()
        .copied()
        .ok_or(PduError::Truncated("first octet"))?;
    match fo & 0x03 {
        0x00 => parse_deliver(bytes).map(Tpdu::Deliver),
        0x01 => parse_submit_tpdu(bytes).map(Tpdu::Submit),
        0x02 => parse_status_report(bytes).map(Tpdu::StatusReport),
        _ => Err(PduError::ReservedMti),
    }
}

/// Decodes an SMS-SUBMIT TPDU (no SMSC part).
pub fn parse_submit_tpdu(bytes: &[u8]) -> Result<Submit, PduError> {
    let mut r = Reader::new(bytes);
    let fo = r.u8("first octet")?;
    if fo & 0x03 != 0x01 {
        return Err(PduError::WrongType {
            expected: "SMS-SUBMIT",
        });
    }
    let mr = r.u8("TP-MR")?;
    let destination = parse_address(&mut r, "TP-DA")?;
    let pid = r.u8("TP-PID")?;
    let dcs = r.u8("TP-DCS")?;
    let validity = match (fo >> 3) & 0x03 {
        0x02 => Some(r.u8("TP-VP")?),
        0x00 => None,
        // Enhanced and absolute formats are 7 octets; skip them.
        _ => {
            r.take(7, "TP-VP")?;
            None
        }
    };
    let user_data = parse_user_data(&mut r, dcs, fo & 0x40 != 0)?;
    Ok(Submit {
        status_report: fo & 0x20 != 0,
        mr,
        destination,
        pid,
        dcs,
        validity,
        user_data,
    })
}

/// Decodes what a modem receives with `AT+CMGS=<at_length>`: the TPDU, preceded by an SMSC
/// part when the PDU is longer than `at_length` (the usual `00` prefix).
pub fn parse_cmgs_pdu(
    bytes: &[u8],
    at_length: usize,
) -> Result<(Option<String>, Submit), PduError> {
    let mismatch = PduError::LengthMismatch {
        at_length,
        total: bytes.len(),
    };
    let smsc_len = bytes.len().checked_sub(at_length).ok_or(mismatch.clone())?;
    let (smsc, tpdu) = if smsc_len == 0 {
        (None, bytes)
    } else {
        let declared = usize::from(bytes.first().copied().unwrap_or(0));
        if declared + 1 != smsc_len {
            return Err(mismatch);
        }
        let mut r = Reader::new(bytes);
        let smsc = parse_smsc(&mut r)?;
        (smsc, r.rest())
    };
    Ok((smsc, parse_submit_tpdu(tpdu)?))
}

fn parse_deliver(bytes: &[u8]) -> Result<Deliver, PduError> {
    let mut r = Reader::new(bytes);
    let fo = r.u8("first octet")?;
    let originator = parse_address(&mut r, "TP-OA")?;
    let pid = r.u8("TP-PID")?;
    let dcs = r.u8("TP-DCS")?;
    let scts = Scts::parse(r.take(7, "TP-SCTS")?);
    let user_data = parse_user_data(&mut r, dcs, fo & 0x40 != 0)?;
    Ok(Deliver {
        originator,
        pid,
        dcs,
        scts,
        user_data,
    })
}

fn parse_status_report(bytes: &[u8]) -> Result<StatusReport, PduError> {
    let mut r = Reader::new(bytes);
    r.u8("first octet")?;
    let mr = r.u8("TP-MR")?;
    let recipient = parse_address(&mut r, "TP-RA")?;
    let scts = Scts::parse(r.take(7, "TP-SCTS")?);
    let discharge = Scts::parse(r.take(7, "TP-DT")?);
    let status = r.u8("TP-ST")?;
    // TP-PI and optional fields may follow; nothing Tocsin needs is in them.
    Ok(StatusReport {
        mr,
        recipient,
        scts,
        discharge,
        status,
    })
}

/// A bounds-checked cursor over untrusted octets.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PduError> {
        let (&b, rest) = self.bytes.split_first().ok_or(PduError::Truncated(field))?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PduError> {
        if self.bytes.len() < n {
            return Err(PduError::Truncated(field));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes
    }
}

fn parse_smsc(r: &mut Reader<'_>) -> Result<Option<String>, PduError> {
    let len = r.u8("SMSC length")?;
    if len == 0 {
        return Ok(None);
    }
    // TS 27.005 allows up to 12 octets: the type octet and 11 of digits.
    if len > 12 {
        return Err(PduError::BadSmscLength(len));
    }
    let toa = r.u8("SMSC type")?;
    let digits = r.take(usize::from(len) - 1, "SMSC address")?;
    let text = decode_semi_octets(digits, digits.len() * 2);
    Ok(Some(with_toa(toa, text)))
}

fn parse_address(r: &mut Reader<'_>, field: &'static str) -> Result<String, PduError> {
    let len = r.u8(field)?;
    if len > 20 {
        return Err(PduError::AddressTooLong(len));
    }
    let toa = r.u8(field)?;
    let octets = r.take(usize::from(len).div_ceil(2), field)?;
    if toa & 0x70 == 0x50 {
        // Alphanumeric: GSM 7-bit packed; the length counts semi-octets.
        let septets = usize::from(len) * 4 / 7;
        return Ok(gsm7::from_septets(&gsm7::unpack(octets, septets, 0)));
    }
    Ok(with_toa(toa, decode_semi_octets(octets, usize::from(len))))
}

/// Prefixes `+` when the type of number is international.
fn with_toa(toa: u8, digits: String) -> String {
    if toa & 0x70 == 0x10 && !digits.is_empty() {
        format!("+{digits}")
    } else {
        digits
    }
}

/// Up to `count` semi-octet digits; an F nibble ends the number.
fn decode_semi_octets(octets: &[u8], count: usize) -> String {
    octets
        .iter()
        .flat_map(|&b| [b & 0x0F, b >> 4])
        .take(count)
        .take_while(|&n| n != 0x0F)
        .map(|n| match n {
            0..=9 => char::from(b'0' + n),
            0x0A => '*',
            0x0B => '#',
            0x0C => 'a',
            0x0D => 'b',
            _ => 'c',
        })
        .collect()
}

fn parse_user_data(r: &mut Reader<'_>, dcs: u8, udhi: bool) -> Result<UserData, PduError> {
    let udl = r.u8("TP-UDL")?;
    let ud = r.rest();
    let alphabet = dcs_alphabet(dcs);
    let need = match alphabet {
        Alphabet::Gsm7 => {
            if usize::from(udl) > MAX_SEPTETS {
                return Err(PduError::UdlTooLong { udl, max: 160 });
            }
            (usize::from(udl) * 7).div_ceil(8)
        }
        _ => {
            if usize::from(udl) > MAX_UD_OCTETS {
                return Err(PduError::UdlTooLong { udl, max: 140 });
            }
            usize::from(udl)
        }
    };
    // Trailing octets beyond TP-UDL (some modems pad) are ignored.
    let ud = ud.get(..need).ok_or(PduError::UserDataShort {
        have: ud.len(),
        need,
    })?;
    let (concat, header_len) = if udhi {
        let udhl = usize::from(*ud.first().ok_or(PduError::BadUdh)?);
        let header = ud.get(1..=udhl).ok_or(PduError::BadUdh)?;
        (parse_udh(header)?, udhl + 1)
    } else {
        (None, 0)
    };
    let body = ud.get(header_len..).unwrap_or(&[]);
    let (text, binary) = match alphabet {
        Alphabet::Gsm7 => {
            let header_bits = header_len * 8;
            let fill = (7 - header_bits % 7) % 7;
            let header_septets = (header_bits + fill) / 7;
            let count = usize::from(udl)
                .checked_sub(header_septets)
                .ok_or(PduError::BadUdh)?;
            let fill = u8::try_from(fill).unwrap_or(0);
            (gsm7::from_septets(&gsm7::unpack(body, count, fill)), None)
        }
        Alphabet::Ucs2 => {
            if !body.len().is_multiple_of(2) {
                return Err(PduError::OddUcs2);
            }
            let units: Vec<u16> = body
                .chunks_exact(2)
                .map(|p| match p {
                    [a, b] => u16::from_be_bytes([*a, *b]),
                    _ => 0xFFFD,
                })
                .collect();
            (String::from_utf16_lossy(&units), None)
        }
        Alphabet::Eight => (
            body.iter().map(|&b| char::from(b)).collect(),
            Some(body.to_vec()),
        ),
    };
    Ok(UserData {
        text,
        concat,
        binary,
    })
}

/// Walks the information elements; returns the concatenation element if there is a valid
/// one. Unknown elements are skipped; a concatenation element with total 0 or a sequence
/// outside 1..=total is ignored, as TS 23.040 §9.2.3.24.1 asks (the part reads alone).
fn parse_udh(mut header: &[u8]) -> Result<Option<Concat>, PduError> {
    let mut concat = None;
    while let Some((&iei, rest)) = header.split_first() {
        let (&len, rest) = rest.split_first().ok_or(PduError::BadUdh)?;
        let data = rest.get(..usize::from(len)).ok_or(PduError::BadUdh)?;
        header = rest.get(usize::from(len)..).unwrap_or(&[]);
        let found = match (iei, data) {
            (0x00, &[reference, total, seq]) => Some(Concat {
                reference: u16::from(reference),
                total,
                seq,
            }),
            (0x08, &[hi, lo, total, seq]) => Some(Concat {
                reference: u16::from_be_bytes([hi, lo]),
                total,
                seq,
            }),
            _ => None,
        };
        if let Some(c) = found.filter(|c| c.total >= 1 && (1..=c.total).contains(&c.seq)) {
            concat = Some(c);
        }
    }
    Ok(concat)
}

// ---------------------------------------------------------------------------------------
// Service-centre timestamps

/// A TP-SCTS / TP-DT timestamp: local civil time at the SMSC and its offset from UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scts {
    /// Full year; the PDU carries two digits, read as 2000–2099.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
    /// Offset from UTC in quarter hours (+08:00 is 32).
    pub tz_quarters: i8,
}

impl Scts {
    /// Decodes the 7 semi-octet fields; `None` unless there are 7 octets of decimal digits.
    /// Field ranges are not checked here (see [`Self::to_timestamp`]).
    pub fn parse(bytes: &[u8]) -> Option<Scts> {
        let &[y, mo, d, h, mi, s, tz] = bytes else {
            return None;
        };
        let field = |b: u8| -> Option<u8> {
            let (lo, hi) = (b & 0x0F, b >> 4);
            (lo <= 9 && hi <= 9).then_some(lo * 10 + hi)
        };
        // The sign is bit 3 of the tens digit (the low nibble); the tens digit is 0..=7.
        let tz_abs = i8::try_from((tz & 0x07) * 10 + (tz >> 4)).ok()?;
        if tz >> 4 > 9 {
            return None;
        }
        Some(Scts {
            year: 2000 + u16::from(field(y)?),
            month: field(mo)?,
            day: field(d)?,
            hour: field(h)?,
            minute: field(mi)?,
            second: field(s)?,
            tz_quarters: if tz & 0x08 != 0 { -tz_abs } else { tz_abs },
        })
    }

    /// The 7 octets of the PDU field (year modulo 100; offsets beyond ±79 quarters clamp).
    pub fn to_bytes(&self) -> [u8; 7] {
        let semi = |v: u8| {
            let v = v % 100;
            (v / 10) | ((v % 10) << 4)
        };
        let year = u8::try_from(self.year % 100).unwrap_or(0);
        let q = self.tz_quarters.unsigned_abs().min(79);
        let mut tz = semi(q);
        if self.tz_quarters < 0 {
            tz |= 0x08;
        }
        [
            semi(year),
            semi(self.month),
            semi(self.day),
            semi(self.hour),
            semi(self.minute),
            semi(self.second),
            tz,
        ]
    }

    /// The instant this names, in UTC milliseconds; `None` if a field is out of range.
    pub fn to_timestamp(&self) -> Option<Timestamp> {
        let valid = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(i64::from(self.year), self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && (-79..=79).contains(&self.tz_quarters);
        if !valid {
            return None;
        }
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        let local_secs = days * 86_400
            + i64::from(self.hour) * 3_600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        let utc_secs = local_secs - i64::from(self.tz_quarters) * 900;
        Some(Timestamp::from_millis(utc_secs * 1_000))
    }

    /// The SCTS a service centre `tz_quarters` from UTC would stamp at `at` (milliseconds
    /// truncated); `None` outside the years 2000–2099 the field can express.
    pub fn from_timestamp(at: Timestamp, tz_quarters: i8) -> Option<Scts> {
        let local_secs = at
            .as_millis()
            .div_euclid(1_000)
            .checked_add(i64::from(tz_quarters) * 900)?;
        let days = local_secs.div_euclid(86_400);
        let secs = local_secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if !(2000..=2099).contains(&year) {
            return None;
        }
        Some(Scts {
            year: u16::try_from(year).ok()?,
            month,
            day,
            hour: u8::try_from(secs / 3_600).ok()?,
            minute: u8::try_from(secs % 3_600 / 60).ok()?,
            second: u8::try_from(secs % 60).ok()?,
            tz_quarters,
        })
    }
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

// ---------------------------------------------------------------------------------------
// Reassembly of concatenated inbound SMS

/// Parts of one long text seen so far.
struct Group {
    /// Received parts by sequence number.
    parts: HashMap<u8, String>,
    /// When the first part arrived.
    first_seen: Timestamp,
    /// When the latest part arrived; the timeout runs from here.
    last_seen: Timestamp,
}

/// A concatenated text that never completed: what arrived is handed back so the driver can
/// report it (as unrecognized / partial) rather than let a reply vanish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    /// Who sent it.
    pub originator: String,
    /// Its concatenation reference.
    pub reference: u16,
    /// How many parts it should have had.
    pub total: u8,
    /// The parts that did arrive, by sequence number, in order.
    pub parts: Vec<(u8, String)>,
    /// When its first part arrived.
    pub first_seen: Timestamp,
}

impl Incomplete {
    /// The parts that arrived, in order, with `[…]` where parts are missing.
    pub fn partial_text(&self) -> String {
        let mut out = String::new();
        let mut next = 1u16;
        for (seq, text) in &self.parts {
            if u16::from(*seq) != next {
                out.push_str("[…]");
            }
            out.push_str(text);
            next = u16::from(*seq) + 1;
        }
        if next <= u16::from(self.total) {
            out.push_str("[…]");
        }
        out
    }
}

/// Reassembles concatenated inbound texts. Parts may come in any order and more than
/// once; groups are keyed by (originator, reference, total). Sans-IO: time is an argument.
pub struct Reassembler {
    groups: HashMap<(String, u16, u8), Group>,
    /// Groups pushed out by the bound, waiting to be returned by [`Self::expire`].
    evicted: Vec<(Incomplete, Timestamp)>,
    timeout: Duration,
    max_groups: usize,
    /// Evicted groups dropped because `expire` was not called for too long.
    lost: u64,
}

impl Default for Reassembler {
    /// 120 s timeout, at most 64 groups in flight.
    fn default() -> Self {
        Reassembler::new(
            Reassembler::DEFAULT_TIMEOUT,
            Reassembler::DEFAULT_MAX_GROUPS,
        )
    }
}

impl Reassembler {
    /// How long a group may wait for its next part by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
    /// How many incomplete groups are held by default.
    pub const DEFAULT_MAX_GROUPS: usize = 64;

    /// A reassembler that gives up on a group `timeout` after its latest part and holds at
    /// most `max_groups` (at least 1) incomplete groups, evicting the oldest.
    pub fn new(timeout: Duration, max_groups: usize) -> Self {
        Reassembler {
            groups: HashMap::new(),
            evicted: Vec::new(),
            timeout,
            max_groups: max_groups.max(1),
            lost: 0,
        }
    }

    /// Adds one received part. Returns the whole text when this part completes it (at once
    /// for a single-part message), otherwise `None`. Duplicate parts are ignored.
    pub fn insert(
        &mut self,
        now: Timestamp,
        originator: &str,
        user_data: UserData,
    ) -> Option<String> {
        let Some(concat) = user_data.concat.filter(|c| c.total > 1) else {
            return Some(user_data.text);
        };
        let key = (originator.to_owned(), concat.reference, concat.total);
        if !self.groups.contains_key(&key) && self.groups.len() >= self.max_groups {
            self.evict_oldest(now);
        }
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            parts: HashMap::new(),
            first_seen: now,
            last_seen: now,
        });
        group.last_seen = now;
        group.parts.entry(concat.seq).or_insert(user_data.text);
        if group.parts.len() < usize::from(concat.total) {
            return None;
        }
        let group = self.groups.remove(&key)?;
        let mut parts: Vec<(u8, String)> = group.parts.into_iter().collect();
        parts.sort_by_key(|(seq, _)| *seq);
        Some(parts.into_iter().map(|(_, t)| t).collect())
    }

    /// Drops groups whose latest part is `timeout` old or more and returns them, together
    /// with any groups evicted by the bound since the last call.
    pub fn expire(&mut self, now: Timestamp) -> Vec<Incomplete> {
        let mut out: Vec<Incomplete> = self.evicted.drain(..).map(|(i, _)| i).collect();
        let stale: Vec<_> = self
            .groups
            .iter()
            .filter(|(_, g)| g.last_seen + self.timeout <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut expired: Vec<Incomplete> = stale
            .into_iter()
            .filter_map(|k| self.groups.remove(&k).map(|g| incomplete(k, g)))
            .collect();
        expired.sort_by_key(|i| i.first_seen);
        out.extend(expired);
        out
    }

    /// When [`Self::expire`] next has something to return; `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let evicted = self.evicted.iter().map(|(_, at)| *at).min();
        let due = self
            .groups
            .values()
            .map(|g| g.last_seen + self.timeout)
            .min();
        match (evicted, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Evicted groups that were dropped unreported because [`Self::expire`] was not
    /// called while more than `max_groups` of them waited (should stay 0).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// How many incomplete groups are held.
    pub fn pending(&self) -> usize {
        self.groups.len()
    }

    fn evict_oldest(&mut self, now: Timestamp) {
        let oldest = self
            .groups
            .iter()
            .min_by_key(|(_, g)| (g.last_seen, g.first_seen))
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest
            && let Some(group) = self.groups.remove(&key)
        {
            // The driver drains this through expire() as soon as poll_timeout() says so;
            // the cap only guards against a caller that never does.
            if self.evicted.len() >= self.max_groups {
                self.evicted.remove(0);
                self.lost = self.lost.saturating_add(1);
            }
            self.evicted.push((incomplete(key, group), now));
        }
    }
}

fn incomplete((originator, reference, total): (String, u16, u8), group: Group) -> Incomplete {
    let mut parts: Vec<(u8, String)> = group.parts.into_iter().collect();
    parts.sort_by_key(|(seq, _)| *seq);
    Incomplete {
        originator,
        reference,
        total,
        parts,
        first_seen: group.first_seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SUBMIT_UCS2: &str = "0031000D91683108108300F00008AA1053174EAC66B496E87EA2827298848B66";
    const SUBMIT_7BIT: &str = "0011000D91683108108300F00000AA05C1E1121403";
    const DELIVER_7BIT: &str =
        "0891683108100005F0040D91683119325476F800004270100103002305C1E1121403";
    const DELIVER_UCS2: &str =
        "0891683108100005F0040D91683119325476F800084270100103002306653652300031";
    const STATUS_REPORT: &str =
        "0891683108100005F0062A0D91683108108300F0427010010300234270100103502300";

    fn phone() -> PhoneNumber {
        PhoneNumber::parse("+8613800138000", "86").unwrap()
    }

    fn scts(second: u8) -> Scts {
        Scts {
            year: 2024,
            month: 7,
            day: 1,
            hour: 10,
            minute: 30,
            second,
            tz_quarters: 32,
        }
    }

    fn no_srr() -> SubmitOptions {
        SubmitOptions {
            status_report: false,
            ..SubmitOptions::default()
        }
    }

    /// Parses an encoded submit part back as the simulator would.
    fn parse_part(part: &SubmitPart) -> Submit {
        let bytes = hex_decode(&part.hex_with_default_smsc()).unwrap();
        let (smsc, submit) = parse_cmgs_pdu(&bytes, part.at_length()).unwrap();
        assert_eq!(smsc, None);
        submit
    }

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(hex_encode(&[0x00, 0xAB, 0x1f]), "00AB1F");
        assert_eq!(hex_decode("00ab1F").unwrap(), vec![0x00, 0xAB, 0x1F]);
        assert_eq!(hex_decode(" 0A\r\n").unwrap(), vec![0x0A]);
        assert_eq!(hex_decode(""), Ok(vec![]));
        assert_eq!(hex_decode("0"), Err(PduError::OddHex));
        assert_eq!(hex_decode("0G"), Err(PduError::BadHex(1)));
        assert_eq!(hex_decode("0 0A"), Err(PduError::BadHex(1)));
        assert_eq!(hex_decode("  0 0A"), Err(PduError::BadHex(3)));
        assert_eq!(hex_decode("北京"), Err(PduError::BadHex(0)));
    }

    #[test]
    fn submit_ucs2_with_status_report_matches_vector() {
        let opts = SubmitOptions {
            status_report: true,
            validity: Some(0xAA),
            concat_ref: 0,
            ref16: false,
        };
        let parts = encode_submit(&phone(), "北京暴雨红色预警", &opts).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].hex_with_default_smsc(), SUBMIT_UCS2);
        assert_eq!(parts[0].at_length(), 31);
    }

    #[test]
    fn submit_7bit_without_status_report_matches_vector() {
        let parts = encode_submit(&phone(), "ACK 1", &no_srr()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].hex_with_default_smsc(), SUBMIT_7BIT);
        assert_eq!(parts[0].at_length(), 20);
    }

    #[test]
    fn submit_vectors_decode() {
        let bytes = hex_decode(SUBMIT_UCS2).unwrap();
        let parsed = parse_pdu(&bytes, true).unwrap();
        assert_eq!(parsed.smsc, None);
        let Tpdu::Submit(s) = parsed.tpdu else {
            panic!("not a submit: {parsed:?}")
        };
        assert_eq!(
            s,
            Submit {
                status_report: true,
                mr: 0,
                destination: "+8613800138000".into(),
                pid: 0,
                dcs: 0x08,
                validity: Some(0xAA),
                user_data: UserData {
                    text: "北京暴雨红色预警".into(),
                    concat: None,
                    binary: None
                },
            }
        );
        // emit(parse(bytes)) == bytes
        let opts = SubmitOptions {
            status_report: s.status_report,
            validity: s.validity,
            ..SubmitOptions::default()
        };
        let again = encode_submit_to(&s.destination, &s.user_data.text, &opts).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].hex_with_default_smsc(), SUBMIT_UCS2);

        let (_, s) = parse_cmgs_pdu(&hex_decode(SUBMIT_7BIT).unwrap(), 20).unwrap();
        assert!(!s.status_report);
        assert_eq!(s.user_data.text, "ACK 1");
        assert_eq!(s.dcs, 0x00);
        // The same TPDU without the SMSC octet, as after the simulator strips it.
        let tpdu = hex_decode(&SUBMIT_7BIT[2..]).unwrap();
        assert_eq!(parse_submit_tpdu(&tpdu).unwrap(), s);
        assert_eq!(parse_cmgs_pdu(&tpdu, 20).unwrap().1, s);
        assert_eq!(
            parse_cmgs_pdu(&tpdu, 19),
            Err(PduError::LengthMismatch {
                at_length: 19,
                total: 20
            })
        );
        assert!(parse_cmgs_pdu(&tpdu, 21).is_err());
    }

    #[test]
    fn deliver_7bit_vector_decodes_and_re_encodes() {
        let bytes = hex_decode(DELIVER_7BIT).unwrap();
        let parsed = parse_pdu(&bytes, true).unwrap();
        assert_eq!(parsed.smsc.as_deref(), Some("+8613800100500"));
        let Tpdu::Deliver(d) = parsed.tpdu else {
            panic!("not a deliver")
        };
        assert_eq!(d.originator, "+8613912345678");
        assert_eq!(d.pid, 0);
        assert_eq!(d.dcs, 0);
        assert_eq!(d.scts, Some(scts(0)));
        assert_eq!(d.user_data.text, "ACK 1");
        assert_eq!(d.user_data.concat, None);
        // 2024-07-01 10:30:00 +08:00 = 02:30:00 UTC.
        assert_eq!(
            d.scts.unwrap().to_timestamp(),
            Some(Timestamp::from_millis(1_719_801_000_000))
        );

        let pdus = encode_deliver(
            parsed.smsc.as_deref(),
            &d.originator,
            &d.user_data.text,
            &d.scts.unwrap(),
            0,
        )
        .unwrap();
        assert_eq!(pdus.len(), 1);
        assert_eq!(pdus[0].to_hex(), DELIVER_7BIT);
        assert_eq!(pdus[0].tpdu_len(), 25);
    }

    #[test]
    fn deliver_ucs2_vector_decodes_and_re_encodes() {
        let parsed = parse_pdu(&hex_decode(DELIVER_UCS2).unwrap(), true).unwrap();
        let Tpdu::Deliver(d) = parsed.tpdu else {
            panic!("not a deliver")
        };
        assert_eq!(d.dcs, 0x08);
        assert_eq!(d.user_data.text, "收到1");
        let pdus = encode_deliver(
            Some("+8613800100500"),
            "+8613912345678",
            "收到1",
            &scts(0),
            0,
        )
        .unwrap();
        assert_eq!(pdus.len(), 1);
        assert_eq!(pdus[0].to_hex(), DELIVER_UCS2);
    }

    #[test]
    fn status_report_vector_decodes_and_re_encodes() {
        let parsed = parse_pdu(&hex_decode(STATUS_REPORT).unwrap(), true).unwrap();
        assert_eq!(parsed.smsc.as_deref(), Some("+8613800100500"));
        assert_eq!(
            parsed.tpdu,
            Tpdu::StatusReport(StatusReport {
                mr: 0x2A,
                recipient: "+8613800138000".into(),
                scts: Some(scts(0)),
                discharge: Some(scts(5)),
                status: 0,
            })
        );
        let pdu = encode_status_report(
            Some("+8613800100500"),
            0x2A,
            "+8613800138000",
            &scts(0),
            &scts(5),
            0x00,
        )
        .unwrap();
        assert_eq!(pdu.to_hex(), STATUS_REPORT);
        assert_eq!(pdu.tpdu_len(), 26);
        assert_eq!(status_class(0x00), StatusClass::Delivered);
    }

    #[test]
    fn status_classes_follow_ts_23_040() {
        assert_eq!(status_class(0x01), StatusClass::Delivered);
        assert_eq!(status_class(0x02), StatusClass::Permanent);
        assert_eq!(status_class(0x20), StatusClass::TemporaryRetrying);
        assert_eq!(status_class(0x22), StatusClass::TemporaryRetrying);
        assert_eq!(status_class(0x40), StatusClass::Permanent);
        assert_eq!(status_class(0x46), StatusClass::Permanent);
        assert_eq!(status_class(0x60), StatusClass::TemporaryStopped);
        assert_eq!(status_class(0xFF), StatusClass::TemporaryStopped);
    }

    #[test]
    fn scts_handles_negative_zones_and_conversions() {
        let west = Scts {
            tz_quarters: -20,
            ..scts(0)
        };
        let bytes = west.to_bytes();
        assert_eq!(bytes[6], 0x0A, "20 quarters = digits 2,0 with the sign bit");
        assert_eq!(Scts::parse(&bytes), Some(west));
        // 10:30 at -05:00 is 15:30 UTC.
        assert_eq!(
            west.to_timestamp(),
            Some(Timestamp::from_millis(1_719_801_000_000 + 13 * 3_600_000))
        );
        let at = Timestamp::from_millis(1_719_801_005_999);
        assert_eq!(Scts::from_timestamp(at, 32), Some(scts(5)));
        // Leap day and year ends.
        let leap = Scts::from_timestamp(Timestamp::from_millis(1_709_164_800_000), 0).unwrap();
        assert_eq!((leap.year, leap.month, leap.day), (2024, 2, 29));
        assert_eq!(
            Scts::from_timestamp(Timestamp::from_millis(946_684_799_000), 0),
            None,
            "1999 cannot be expressed"
        );
        let bad = Scts {
            month: 13,
            ..scts(0)
        };
        assert_eq!(bad.to_timestamp(), None);
        let bad = Scts {
            day: 31,
            month: 6,
            ..scts(0)
        };
        assert_eq!(bad.to_timestamp(), None);
        assert_eq!(
            Scts::parse(&[0x42, 0x70, 0x10, 0x01, 0x03, 0x0A, 0x23]),
            None
        );
        assert_eq!(Scts::parse(&[0x42, 0x70]), None);
    }

    #[test]
    fn extension_characters_round_trip_in_a_submit() {
        let text = "Level [3] {red} ~ 10€ | a^b \\ end";
        let parts = encode_submit(&phone(), text, &no_srr()).unwrap();
        assert_eq!(parts.len(), 1);
        let s = parse_part(&parts[0]);
        assert_eq!(s.dcs, 0);
        assert_eq!(s.user_data.text, text);
    }

    #[test]
    fn gsm_boundary_160_and_161_septets() {
        let opts = SubmitOptions {
            concat_ref: 0x1234,
            ..no_srr()
        };
        let t160 = "a".repeat(160);
        let parts = encode_submit(&phone(), &t160, &opts).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].tpdu.len(), 20 + 140 - 5);
        assert_eq!(parse_part(&parts[0]).user_data.text, t160);

        let t161 = "a".repeat(161);
        let parts = encode_submit(&phone(), &t161, &opts).unwrap();
        assert_eq!(parts.len(), 2);
        let first = parse_part(&parts[0]);
        let second = parse_part(&parts[1]);
        assert_eq!(parts[0].tpdu[0], 0x51, "UDHI set, VPF relative");
        assert_eq!(first.user_data.text.len(), 153);
        assert_eq!(second.user_data.text.len(), 8);
        assert_eq!(
            first.user_data.concat,
            Some(Concat {
                reference: 0x34,
                total: 2,
                seq: 1
            })
        );
        assert_eq!(second.user_data.concat.map(|c| c.seq), Some(2));
        // UDH 05 00 03 34 02 01, then text packed after one fill bit; UDL = 7 + 153.
        let ud_start = parts[0].tpdu.len() - 140;
        assert_eq!(parts[0].tpdu[ud_start - 1], 160);
        assert_eq!(
            &parts[0].tpdu[ud_start..ud_start + 6],
            &[0x05, 0x00, 0x03, 0x34, 0x02, 0x01]
        );
    }

    #[test]
    fn sixteen_bit_reference_parts() {
        let opts = SubmitOptions {
            concat_ref: 0xBEEF,
            ref16: true,
            ..no_srr()
        };
        let text = "b".repeat(305);
        let parts = encode_submit(&phone(), &text, &opts).unwrap();
        // 152 septets per part behind a 7-octet header.
        assert_eq!(parts.len(), 3);
        let subs: Vec<_> = parts.iter().map(parse_part).collect();
        assert_eq!(subs[0].user_data.text.len(), 152);
        assert_eq!(
            subs[2].user_data.concat,
            Some(Concat {
                reference: 0xBEEF,
                total: 3,
                seq: 3
            })
        );
        let joined: String = subs.iter().map(|s| s.user_data.text.as_str()).collect();
        assert_eq!(joined, text);
        let (alphabet, n) = count_parts(&text, true).unwrap();
        assert_eq!((alphabet, n), (Alphabet::Gsm7, 3));
    }

    #[test]
    fn ucs2_boundary_70_and_71_units() {
        let t70 = "雨".repeat(70);
        let parts = encode_submit(&phone(), &t70, &no_srr()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parse_part(&parts[0]).user_data.text, t70);

        let t71 = "雨".repeat(71);
        let parts = encode_submit(&phone(), &t71, &no_srr()).unwrap();
        assert_eq!(parts.len(), 2);
        let a = parse_part(&parts[0]);
        let b = parse_part(&parts[1]);
        assert_eq!(a.user_data.text.chars().count(), 67);
        assert_eq!(b.user_data.text.chars().count(), 4);
        assert_eq!(a.dcs, 0x08);
        assert_eq!(count_parts(&t71, false).unwrap(), (Alphabet::Ucs2, 2));
    }

    #[test]
    fn escape_pair_is_not_split_at_a_part_boundary() {
        // 152 plain septets then '€' (ESC + 0x65) would straddle the 153-septet cut.
        let text = format!("{}€{}", "a".repeat(152), "z".repeat(20));
        let parts = encode_submit(&phone(), &text, &no_srr()).unwrap();
        assert_eq!(parts.len(), 2);
        let a = parse_part(&parts[0]);
        let b = parse_part(&parts[1]);
        assert_eq!(a.user_data.text, "a".repeat(152));
        assert!(b.user_data.text.starts_with('€'));
        assert_eq!(format!("{}{}", a.user_data.text, b.user_data.text), text);
    }

    #[test]
    fn surrogate_pair_is_not_split_at_a_part_boundary() {
        // 66 BMP units, then an emoji (2 units) across the 67-unit cut.
        let text = format!("{}🚨{}", "警".repeat(66), "警".repeat(10));
        let parts = encode_submit(&phone(), &text, &no_srr()).unwrap();
        assert_eq!(parts.len(), 2);
        let a = parse_part(&parts[0]);
        let b = parse_part(&parts[1]);
        assert_eq!(a.user_data.text, "警".repeat(66));
        assert!(b.user_data.text.starts_with('🚨'));
        assert!(!a.user_data.text.contains('\u{FFFD}'));
    }

    #[test]
    fn too_many_parts_is_refused() {
        let text = "a".repeat(153 * 255);
        assert_eq!(
            encode_submit(&phone(), &text, &no_srr()).unwrap().len(),
            255
        );
        let text = "a".repeat(153 * 255 + 1);
        assert!(matches!(
            encode_submit(&phone(), &text, &no_srr()),
            Err(PduError::TooManyParts(256))
        ));
    }

    #[test]
    fn destinations_and_originators() {
        let parts = encode_submit_to("10086", "hi", &no_srr()).unwrap();
        let s = parse_part(&parts[0]);
        assert_eq!(s.destination, "10086");
        assert_eq!(&parts[0].tpdu[2..5], &[0x05, 0x81, 0x01]);
        assert!(encode_submit_to("", "hi", &no_srr()).is_err());
        assert!(encode_submit_to("+86 138", "hi", &no_srr()).is_err());
        assert!(encode_submit_to("Tocsin", "hi", &no_srr()).is_err());

        // An alphanumeric sender, as operators send notices.
        let pdus = encode_deliver(None, "Tocsin", "test", &scts(0), 0).unwrap();
        assert_eq!(pdus[0].smsc, vec![0x00]);
        let parsed = parse_pdu(&pdus[0].to_bytes(), true).unwrap();
        let Tpdu::Deliver(d) = parsed.tpdu else {
            panic!("not a deliver")
        };
        assert_eq!(d.originator, "Tocsin");
        assert_eq!(d.user_data.text, "test");
        assert!(encode_deliver(None, "A very long sender", "x", &scts(0), 0).is_err());
    }

    #[test]
    fn long_deliver_splits_and_reassembles() {
        let text = format!("{}🚨", "已收到，全村转移完毕。".repeat(10));
        let pdus =
            encode_deliver(Some("+8613800100500"), "+8613912345678", &text, &scts(0), 9).unwrap();
        assert_eq!(pdus.len(), 2);
        let mut r = Reassembler::default();
        let mut done = None;
        for pdu in pdus.iter().rev() {
            let Tpdu::Deliver(d) = parse_pdu(&pdu.to_bytes(), true).unwrap().tpdu else {
                panic!("not a deliver")
            };
            assert_eq!(d.user_data.concat.map(|c| c.reference), Some(9));
            done = r.insert(Timestamp::ZERO, &d.originator, d.user_data);
        }
        assert_eq!(done, Some(text));
    }

    #[test]
    fn dcs_variants() {
        assert_eq!(dcs_alphabet(0x00), Alphabet::Gsm7);
        assert_eq!(dcs_alphabet(0x10), Alphabet::Gsm7);
        assert_eq!(dcs_alphabet(0x13), Alphabet::Gsm7);
        assert_eq!(dcs_alphabet(0xF0), Alphabet::Gsm7);
        assert_eq!(dcs_alphabet(0xF3), Alphabet::Gsm7);
        assert_eq!(dcs_alphabet(0x04), Alphabet::Eight);
        assert_eq!(dcs_alphabet(0xF4), Alphabet::Eight);
        assert_eq!(dcs_alphabet(0x20), Alphabet::Eight, "compressed stays raw");
        assert_eq!(dcs_alphabet(0x08), Alphabet::Ucs2);
        assert_eq!(dcs_alphabet(0x18), Alphabet::Ucs2);
        assert_eq!(dcs_alphabet(0x48), Alphabet::Ucs2);
        assert_eq!(dcs_alphabet(0xE0), Alphabet::Ucs2);
        assert_eq!(dcs_alphabet(0xC0), Alphabet::Gsm7);

        // A class-0 (flash) 7-bit deliver reads like plain 7-bit.
        let mut bytes = hex_decode(DELIVER_7BIT).unwrap();
        bytes[20] = 0x10;
        let Tpdu::Deliver(d) = parse_pdu(&bytes, true).unwrap().tpdu else {
            panic!("not a deliver")
        };
        assert_eq!(d.user_data.text, "ACK 1");

        // 8-bit data keeps its raw octets.
        bytes[20] = 0x04;
        let Tpdu::Deliver(d) = parse_pdu(&bytes, true).unwrap().tpdu else {
            panic!("not a deliver")
        };
        assert_eq!(d.user_data.binary, Some(vec![0xC1, 0xE1, 0x12, 0x14, 0x03]));
        assert_eq!(d.user_data.text.chars().count(), 5);
    }

    #[test]
    fn udh_unknown_elements_are_skipped() {
        // DELIVER, UDHI, UCS2: UDH = 0A | 24 01 00 (national language, skipped) |
        // 00 03 07 02 01 (concat) | 70 00 (unknown, empty) ; then "收".
        let tpdu = [
            0x44, 0x0D, 0x91, 0x68, 0x31, 0x19, 0x32, 0x54, 0x76, 0xF8, 0x00, 0x08, 0x42, 0x70,
            0x10, 0x01, 0x03, 0x00, 0x23, 0x0D, 0x0A, 0x24, 0x01, 0x00, 0x00, 0x03, 0x07, 0x02,
            0x01, 0x70, 0x00, 0x65, 0x36,
        ];
        let Tpdu::Deliver(d) = parse_tpdu(&tpdu).unwrap() else {
            panic!("not a deliver")
        };
        assert_eq!(d.user_data.text, "收");
        assert_eq!(
            d.user_data.concat,
            Some(Concat {
                reference: 7,
                total: 2,
                seq: 1
            })
        );
        // A concat element with seq 0 is ignored, the part reads on its own.
        let mut bad_seq = tpdu;
        bad_seq[28] = 0x00;
        let Tpdu::Deliver(d) = parse_tpdu(&bad_seq).unwrap() else {
            panic!("not a deliver")
        };
        assert_eq!(d.user_data.concat, None);
        // An element overrunning the header is an error.
        let mut overrun = tpdu;
        overrun[29] = 0x70;
        overrun[30] = 0x05;
        assert_eq!(parse_tpdu(&overrun), Err(PduError::BadUdh));
    }

    #[test]
    fn malformed_pdus_are_errors() {
        let deliver = hex_decode(DELIVER_7BIT).unwrap();
        for n in 0..deliver.len() {
            assert!(
                parse_pdu(&deliver[..n], true).is_err(),
                "prefix of {n} octets"
            );
        }
        assert_eq!(
            parse_pdu(&[], false),
            Err(PduError::Truncated("first octet"))
        );
        assert_eq!(parse_tpdu(&[0x03]), Err(PduError::ReservedMti));
        assert_eq!(
            parse_pdu(&[0x0D, 0x91], true),
            Err(PduError::BadSmscLength(13))
        );
        // Address of 21 digits.
        assert_eq!(
            parse_tpdu(&[0x04, 0x15, 0x91]),
            Err(PduError::AddressTooLong(21))
        );
        // UDL 161 septets.
        let mut long = deliver.clone();
        long[28] = 161;
        assert_eq!(
            parse_pdu(&long, true),
            Err(PduError::UdlTooLong { udl: 161, max: 160 })
        );
        // UDL larger than the user data present.
        let mut short = deliver.clone();
        short[28] = 7;
        assert_eq!(
            parse_pdu(&short, true),
            Err(PduError::UserDataShort { have: 5, need: 7 })
        );
        // Odd UCS2.
        let mut odd = hex_decode(DELIVER_UCS2).unwrap();
        odd[28] = 5;
        assert_eq!(parse_pdu(&odd, true), Err(PduError::OddUcs2));
        // UDHI set but the header length runs past the data.
        let mut udh = deliver.clone();
        udh[9] |= 0x40;
        assert_eq!(parse_pdu(&udh, true), Err(PduError::BadUdh));
        // Submit expected, deliver found.
        assert_eq!(
            parse_submit_tpdu(&deliver[9..]),
            Err(PduError::WrongType {
                expected: "SMS-SUBMIT"
            })
        );
        // Trailing padding after the user data is tolerated.
        let mut padded = deliver.clone();
        padded.extend_from_slice(&[0xFF, 0xFF]);
        assert!(parse_pdu(&padded, true).is_ok());
    }

    #[test]
    fn reassembles_out_of_order_and_ignores_duplicates() {
        let mut r = Reassembler::default();
        let part = |seq: u8, text: &str| UserData {
            text: text.into(),
            concat: Some(Concat {
                reference: 5,
                total: 3,
                seq,
            }),
            binary: None,
        };
        let t = Timestamp::from_millis(1_000);
        assert_eq!(r.insert(t, "+861", part(3, "C")), None);
        assert_eq!(r.insert(t, "+861", part(1, "A")), None);
        assert_eq!(r.insert(t, "+861", part(1, "X")), None, "duplicate ignored");
        // Same reference from someone else is another group.
        assert_eq!(r.insert(t, "+862", part(2, "Q")), None);
        assert_eq!(r.pending(), 2);
        assert_eq!(r.insert(t, "+861", part(2, "B")), Some("ABC".into()));
        assert_eq!(r.pending(), 1);
        // Single-part messages come straight back.
        let single = UserData {
            text: "1".into(),
            concat: None,
            binary: None,
        };
        assert_eq!(r.insert(t, "+863", single), Some("1".into()));
        let one_of_one = UserData {
            concat: Some(Concat {
                reference: 1,
                total: 1,
                seq: 1,
            }),
            ..part(1, "solo")
        };
        assert_eq!(r.insert(t, "+863", one_of_one), Some("solo".into()));
    }

    #[test]
    fn reassembly_times_out_and_reports_what_arrived() {
        let mut r = Reassembler::new(Duration::from_secs(120), 8);
        assert_eq!(r.poll_timeout(), None);
        let part = |seq: u8, text: &str| UserData {
            text: text.into(),
            concat: Some(Concat {
                reference: 0xAB,
                total: 3,
                seq,
            }),
            binary: None,
        };
        let t0 = Timestamp::from_millis(10_000);
        r.insert(t0, "+8613912345678", part(2, "middle"));
        let t1 = t0 + Duration::from_secs(60);
        r.insert(t1, "+8613912345678", part(1, "start "));
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(120)));
        assert!(r.expire(t1 + Duration::from_secs(119)).is_empty());
        let gone = r.expire(t1 + Duration::from_secs(120));
        assert_eq!(gone.len(), 1);
        let g = &gone[0];
        assert_eq!(g.originator, "+8613912345678");
        assert_eq!((g.reference, g.total, g.first_seen), (0xAB, 3, t0));
        assert_eq!(g.parts, vec![(1, "start ".into()), (2, "middle".into())]);
        assert_eq!(g.partial_text(), "start middle[…]");
        assert_eq!(r.pending(), 0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn reassembler_is_bounded_and_reports_evictions() {
        let mut r = Reassembler::new(Duration::from_secs(120), 2);
        let part = |reference: u16| UserData {
            text: format!("r{reference}"),
            concat: Some(Concat {
                reference,
                total: 2,
                seq: 2,
            }),
            binary: None,
        };
        for i in 0..3u16 {
            r.insert(Timestamp::from_millis(i64::from(i)), "+861", part(i));
        }
        assert_eq!(r.pending(), 2);
        // The eviction is due at once.
        assert_eq!(r.poll_timeout(), Some(Timestamp::from_millis(2)));
        let gone = r.expire(Timestamp::from_millis(2));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].reference, 0);
        assert_eq!(gone[0].partial_text(), "[…]r0");
        assert_eq!(r.lost(), 0);
    }

    /// Text mixing ASCII (some of it outside GSM 7-bit), GSM-only letters, Chinese and
    /// emoji.
    fn mixed_text() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            "[ -~]{0,40}",
            "[@£$¥èéÄÖÑÜ§¿äöñüàΔΦΓ€^{}\\[\\]~|\n\r]{0,40}",
            "[北京暴雨红色预警收到已转移]{0,40}",
            "[🚨🌧️🌊⚠😀]{0,10}",
        ];
        proptest::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn submit_parts_reassemble_to_the_original(
            text in mixed_text(),
            status_report in any::<bool>(),
            ref16 in any::<bool>(),
            concat_ref in any::<u16>(),
        ) {
            let opts = SubmitOptions { status_report, validity: Some(0xA7), concat_ref, ref16 };
            let parts = encode_submit(&phone(), &text, &opts).unwrap();
            let mut r = Reassembler::default();
            let mut result = None;
            for (i, part) in parts.iter().enumerate() {
                // FO MR DA(2+7) PID DCS VP UDL, then at most 140 octets of user data.
                prop_assert!(part.tpdu.len() <= 15 + 140);
                let s = parse_part(part);
                prop_assert_eq!(s.status_report, status_report);
                prop_assert_eq!(&s.destination, "+8613800138000");
                prop_assert_eq!(s.validity, Some(0xA7));
                let out = r.insert(Timestamp::ZERO, &s.destination, s.user_data);
                if i + 1 < parts.len() {
                    prop_assert_eq!(&out, &None);
                } else {
                    result = out;
                }
            }
            prop_assert_eq!(result, Some(text));
        }

        #[test]
        fn deliver_parts_reassemble_to_the_original(
            text in mixed_text(),
            originator in prop_oneof![Just("+8613912345678"), Just("10086"), Just("Tocsin")],
            concat_ref in any::<u8>(),
            shuffle in any::<u64>(),
        ) {
            let pdus = encode_deliver(Some("+8613800100500"), originator, &text, &scts(0), concat_ref).unwrap();
            // Deliver the parts in a scrambled order, the first one twice.
            let mut order: Vec<usize> = (0..pdus.len()).collect();
            order.sort_by_key(|&i| (shuffle.rotate_left(u32::try_from(i % 64).unwrap()) ^ shuffle) as u32);
            order.insert(0, order[0]);
            let mut r = Reassembler::default();
            let mut result = None;
            for i in order {
                let parsed = parse_pdu(&pdus[i].to_bytes(), true).unwrap();
                prop_assert_eq!(parsed.smsc.as_deref(), Some("+8613800100500"));
                let Tpdu::Deliver(d) = parsed.tpdu else {
                    return Err(TestCaseError::fail("not a deliver"));
                };
                prop_assert_eq!(&d.originator, originator);
                if let Some(done) = r.insert(Timestamp::ZERO, &d.originator, d.user_data) {
                    result = Some(done);
                }
            }
            prop_assert_eq!(result, Some(text));
            prop_assert_eq!(r.pending(), 0);
        }

        #[test]
        fn parse_pdu_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..180), has_smsc in any::<bool>()) {
            let _ = parse_pdu(&bytes, has_smsc);
            let _ = parse_cmgs_pdu(&bytes, bytes.len().saturating_sub(1));
        }

        #[test]
        fn mutated_vectors_never_panic(
            which in 0usize..5,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let vectors = [SUBMIT_UCS2, SUBMIT_7BIT, DELIVER_7BIT, DELIVER_UCS2, STATUS_REPORT];
            let mut bytes = hex_decode(vectors[which]).unwrap();
            for (pos, val) in flips {
                let n = bytes.len();
                bytes[pos % n] = val;
            }
            let n = bytes.len();
            bytes.truncate(cut % (n + 1));
            let _ = parse_pdu(&bytes, true);
        }

        #[test]
        fn scts_round_trips_through_timestamps(ms in 946_684_800_000i64..4_102_444_800_000, tz in -48i8..=56) {
            let scts = Scts::from_timestamp(Timestamp::from_millis(ms), tz);
            if let Some(scts) = scts {
                prop_assert_eq!(Scts::parse(&scts.to_bytes()), Some(scts));
                prop_assert_eq!(scts.to_timestamp(), Some(Timestamp::from_millis(ms - ms.rem_euclid(1000))));
            }
        }
    }
}
