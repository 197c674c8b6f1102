//! Network registration as the modem reports it: `+CREG` (circuit switched, 27.007
//! §7.2), `+CGREG` (GPRS, §10.1.20) and `+CEREG` (EPS/LTE, §10.1.22), answered to a query
//! (`+CREG: <n>,<stat>[,...]`) or pushed unsolicited once enabled with `AT+CREG=2`
//! (`+CREG: <stat>[,"<lac>","<ci>"[,<AcT>]]`).
//!
//! A modem that is not registered cannot send: every `AT+CMGS` fails with `+CMS ERROR:
//! 331` and every `ATD` with `+CME ERROR: 30`, so sends wait instead of burning the
//! router's tries. Any domain registered (home or roaming) counts: an LTE-only modem is
//! registered on EPS only, a 2G modem on CS only. A modem that answers none of the queries
//! cannot say; it is taken as registered until a send fails for want of network.

/// Which registration a line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// `+CREG`: circuit switched (calls, SMS over CS).
    Cs,
    /// `+CGREG`: packet switched, GPRS/UMTS.
    Ps,
    /// `+CEREG`: packet switched, EPS (LTE).
    Eps,
}

impl Domain {
    /// The prefix of its lines.
    pub fn prefix(self) -> &'static str {
        match self {
            Domain::Cs => "+CREG:",
            Domain::Ps => "+CGREG:",
            Domain::Eps => "+CEREG:",
        }
    }

    fn index(self) -> usize {
        match self {
            Domain::Cs => 0,
            Domain::Ps => 1,
            Domain::Eps => 2,
        }
    }

    /// The domain a line belongs to, from its prefix; `None` for any other line.
    pub fn of_line(line: &str) -> Option<Domain> {
        [Domain::Cs, Domain::Ps, Domain::Eps]
            .into_iter()
            .find(|d| line.starts_with(d.prefix()))
    }
}

/// One registration line, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// Which registration.
    pub domain: Domain,
    /// `<stat>`: 0 not searching, 1 home, 2 searching, 3 denied, 4 unknown, 5 roaming, ...
    pub stat: u8,
    /// The answer to a query (`<n>,<stat>`), not an unsolicited report (`<stat>[,<lac>...]`).
    pub solicited: bool,
}

/// Parses a `+CREG:` / `+CGREG:` / `+CEREG:` line; `None` for anything else or a malformed
/// one. A query's answer starts `<n>,<stat>` (two bare numbers); an unsolicited report
/// starts with `<stat>` alone or followed by a quoted (or empty) location.
pub fn parse(line: &str) -> Option<Report> {
    let domain = Domain::of_line(line)?;
    let rest = line.get(domain.prefix().len()..)?;
    let mut fields = rest.split(',').map(str::trim);
    let first = fields.next()?.parse::<u8>().ok()?;
    let second = fields.next();
    match second.map(str::parse::<u8>) {
        Some(Ok(stat)) => Some(Report {
            domain,
            stat,
            solicited: true,
        }),
        // A number that does not fit a stat where a bare number stands: not a line we know.
        Some(Err(_)) if second.is_some_and(|s| !s.is_empty() && !s.starts_with('"')) => None,
        _ => Some(Report {
            domain,
            stat: first,
            solicited: false,
        }),
    }
}

/// Whether `stat` means registered: 1 home, 5 roaming, and their LTE variants 6/7 (SMS
/// only, which is what the SMS side needs) and 9/10 (CSFB not preferred).
pub fn is_registered(stat: u8) -> bool {
    matches!(stat, 1 | 5 | 6 | 7 | 9 | 10)
}

/// What the modem knows of its network, per domain, and whether a send just found none.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    /// Last `<stat>` per domain; `None` when the modem did not say (refused the query).
    stats: [Option<u8>; 3],
    /// A send failed for want of network (`+CMS ERROR: 331`, ...): why. Cleared by the
    /// next report of registration, or by a poll that cannot tell.
    no_service: Option<String>,
}

impl Registration {
    /// What a domain's query or report said; `None` when the query was refused or answered
    /// without a line.
    pub fn set(&mut self, domain: Domain, stat: Option<u8>) {
        if let Some(slot) = self.stats.get_mut(domain.index()) {
            *slot = stat;
        }
        if stat.is_some_and(is_registered) {
            self.no_service = None;
        }
    }

    /// A send found no network: not registered until the modem says it is again.
    pub fn lost(&mut self, why: String) {
        self.no_service = Some(why);
    }

    /// A poll round is over. A modem that reported no domain at all cannot tell us when
    /// the network is back: try again (the next send says).
    pub fn round_done(&mut self) {
        if !self.known() {
            self.no_service = None;
        }
    }

    /// Whether any domain reported a state.
    pub fn known(&self) -> bool {
        self.stats.iter().any(Option::is_some)
    }

    /// Registered as reported: some domain home or roaming, and no send found no network
    /// since.
    pub fn registered(&self) -> bool {
        self.no_service.is_none() && self.stats.iter().flatten().any(|s| is_registered(*s))
    }

    /// Whether sends may go: registered, or the modem cannot say and no send failed for
    /// want of network.
    pub fn usable(&self) -> bool {
        self.no_service.is_none() && (self.registered() || !self.known())
    }

    /// Why sends may not go, for operators; `None` when they may.
    pub fn why_not(&self) -> Option<String> {
        if self.usable() {
            return None;
        }
        if let Some(why) = &self.no_service {
            return Some(format!("no network: {why}"));
        }
        let stats: Vec<u8> = self.stats.iter().flatten().copied().collect();
        // The most hopeful state wins: searching says the network may come back by itself.
        let why = if stats.contains(&2) {
            "not registered (searching)"
        } else if stats.contains(&3) {
            "registration denied"
        } else if stats.contains(&4) {
            "registration unknown"
        } else if stats.contains(&8) {
            "not registered (emergency services only)"
        } else {
            "not registered (not searching)"
        };
        Some(why.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_answers_and_unsolicited_reports_are_told_apart() {
        let cases = [
            ("+CREG: 0,1", Some((Domain::Cs, 1, true))),
            (
                "+CREG: 2,5,\"1A2B\",\"01C3D4E\",7",
                Some((Domain::Cs, 5, true)),
            ),
            ("+CREG: 2", Some((Domain::Cs, 2, false))),
            (
                "+CREG: 1,\"1A2B\",\"01C3D4E\",7",
                Some((Domain::Cs, 1, false)),
            ),
            ("+CGREG: 0,2", Some((Domain::Ps, 2, true))),
            ("+CEREG: 1,,,7", Some((Domain::Eps, 1, false))),
            (
                "+CEREG: 2,1,\"5A1F\",\"0B2C3D4E\",7",
                Some((Domain::Eps, 1, true)),
            ),
            ("+CEREG: 0", Some((Domain::Eps, 0, false))),
            ("+CREG:", None),
            ("+CREG: x,1", None),
            ("+CREG: 1,999", None),
            ("+CREG: 300", None),
            ("+CSQ: 21,99", None),
        ];
        for (line, want) in cases {
            let got = parse(line).map(|r| (r.domain, r.stat, r.solicited));
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn any_domain_registered_counts_and_a_lost_send_overrides_until_registration() {
        let mut r = Registration::default();
        assert!(r.usable() && !r.registered(), "unknown: sends may try");
        r.set(Domain::Cs, Some(0));
        r.set(Domain::Ps, None);
        r.set(Domain::Eps, Some(1));
        assert!(r.registered() && r.usable(), "LTE-only modem");
        r.set(Domain::Eps, Some(2));
        assert!(!r.usable());
        assert_eq!(r.why_not().as_deref(), Some("not registered (searching)"));
        r.set(Domain::Eps, Some(3));
        assert_eq!(r.why_not().as_deref(), Some("registration denied"));
        r.set(Domain::Cs, Some(5));
        assert!(r.usable(), "roaming");
        r.lost("+CMS ERROR: 331 (no network service)".into());
        assert!(!r.usable() && !r.registered());
        r.round_done();
        assert!(!r.usable(), "the modem can tell: wait for it");
        r.set(Domain::Cs, Some(1));
        assert!(r.usable(), "registration reported again");
    }

    #[test]
    fn a_modem_that_cannot_tell_is_tried_again_after_a_poll() {
        let mut r = Registration::default();
        r.lost("+CMS ERROR: 331".into());
        assert!(!r.usable());
        r.round_done();
        assert!(r.usable());
    }

    proptest! {
        #[test]
        fn garbage_lines_never_panic(s in "\\PC{0,40}") {
            for prefix in ["+CREG:", "+CGREG:", "+CEREG:", ""] {
                let _ = parse(&format!("{prefix}{s}"));
            }
        }

        #[test]
        fn comma_soup_never_panics(s in "[0-9,\" ]{0,24}") {
            let _ = parse(&format!("+CREG: {s}"));
        }
    }
}
