//! `+CMS ERROR` (TS 27.005 §3.2.5) and `+CME ERROR` (TS 27.007 §9.2) codes, their
//! meanings, and whether an attempt that failed with one may succeed if tried again.
//!
//! The rule behind [`CmsError::is_retryable`]: a failure that is about the message or the
//! recipient (unassigned number, barring, a malformed PDU) will fail again the same way,
//! so it is permanent; a failure that is about the state of the network or of this device
//! (congestion, no service, SIM busy, memory full, even "SIM not inserted", which another
//! modem or a later try may not suffer) is retryable. Codes we do not know are retryable:
//! the router bounds retries, and silently giving up on a warning is the worse mistake.

macro_rules! codes {
    (
        $(#[$doc:meta])* $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident = $code:literal, $meaning:literal, $retry:literal; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
            /// A code not in this table.
            Other(u16),
        }

        impl $name {
            /// The code as the device sends it.
            pub fn from_code(code: u16) -> Self {
                match code {
                    $( $code => $name::$variant, )*
                    other => $name::Other(other),
                }
            }

            /// The numeric code.
            pub fn code(self) -> u16 {
                match self {
                    $( $name::$variant => $code, )*
                    $name::Other(n) => n,
                }
            }

            /// What the code means, in a few words for the record.
            pub fn meaning(self) -> &'static str {
                match self {
                    $( $name::$variant => $meaning, )*
                    $name::Other(_) => "unlisted error",
                }
            }

            /// Whether the same attempt may succeed if tried again later.
            pub fn is_retryable(self) -> bool {
                match self {
                    $( $name::$variant => $retry, )*
                    $name::Other(_) => true,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} ({})", self.code(), self.meaning())
            }
        }
    };
}

codes! {
    /// A `+CMS ERROR` code: RP causes (0–127, TS 24.011), TP-FCS (128–255, TS 23.040) and
    /// ME/TA errors (300–500, TS 27.005).
    CmsError {
        /// The number is not allocated.
        UnassignedNumber = 1, "unassigned number", false;
        /// The operator bars this destination.
        OperatorBarring = 8, "operator determined barring", false;
        /// Outgoing calls or SMS are barred.
        CallBarred = 10, "call barred", false;
        /// The network refused the short message.
        TransferRejected = 21, "short message transfer rejected", false;
        /// The destination handset is switched off or out of coverage.
        DestinationOutOfService = 27, "destination out of service", true;
        /// The subscriber is not known to the network.
        UnidentifiedSubscriber = 28, "unidentified subscriber", false;
        /// The network refused the facility.
        FacilityRejected = 29, "facility rejected", false;
        /// The destination subscriber is unknown.
        UnknownSubscriber = 30, "unknown subscriber", false;
        /// The network is out of order.
        NetworkOutOfOrder = 38, "network out of order", true;
        /// A temporary failure.
        TemporaryFailure = 41, "temporary failure", true;
        /// The network is congested.
        Congestion = 42, "congestion", true;
        /// Network resources are unavailable.
        ResourcesUnavailable = 47, "resources unavailable", true;
        /// The SIM has no SMS subscription.
        FacilityNotSubscribed = 50, "requested facility not subscribed", false;
        /// The network does not implement the facility.
        NotImplemented = 69, "requested facility not implemented", false;
        /// The message lacked mandatory information.
        InvalidMandatoryInfo = 96, "invalid mandatory information", false;
        /// A protocol error, unspecified.
        ProtocolError = 111, "protocol error, unspecified", true;
        /// Interworking, unspecified.
        Interworking = 127, "interworking, unspecified", true;
        /// The SIM's SMS storage is full.
        SimStorageFull = 208, "SIM SMS storage full", true;
        /// Memory capacity exceeded.
        MemoryCapacityExceeded = 211, "memory capacity exceeded", true;
        /// TP failure cause unspecified.
        UnspecifiedTp = 255, "unspecified error cause", true;
        /// The modem failed.
        MeFailure = 300, "ME failure", true;
        /// The SMS service of the ME is reserved.
        SmsServiceReserved = 301, "SMS service of ME reserved", true;
        /// The command is not allowed now.
        OperationNotAllowed = 302, "operation not allowed", false;
        /// The command is not supported.
        OperationNotSupported = 303, "operation not supported", false;
        /// A PDU-mode parameter is invalid (our PDU was refused).
        InvalidPduParameter = 304, "invalid PDU mode parameter", false;
        /// A text-mode parameter is invalid.
        InvalidTextParameter = 305, "invalid text mode parameter", false;
        /// No SIM in the modem.
        SimNotInserted = 310, "SIM not inserted", true;
        /// The SIM needs its PIN.
        SimPinRequired = 311, "SIM PIN required", true;
        /// The SIM failed.
        SimFailure = 313, "SIM failure", true;
        /// The SIM is busy.
        SimBusy = 314, "SIM busy", true;
        /// The SIM needs its PUK.
        SimPukRequired = 316, "SIM PUK required", true;
        /// The modem's memory failed.
        MemoryFailure = 320, "memory failure", true;
        /// No message at that storage index.
        InvalidMemoryIndex = 321, "invalid memory index", false;
        /// The message storage is full.
        MemoryFull = 322, "memory full", true;
        /// The SMSC address is not set.
        SmscAddressUnknown = 330, "SMSC address unknown", true;
        /// The modem has no network service.
        NoNetworkService = 331, "no network service", true;
        /// The network did not answer in time.
        NetworkTimeout = 332, "network timeout", true;
        /// An acknowledgement (`+CNMA`) was not expected.
        NoCnmaExpected = 340, "no +CNMA acknowledgement expected", false;
        /// Unknown error.
        Unknown = 500, "unknown error", true;
    }
}

codes! {
    /// A `+CME ERROR` code (TS 27.007 §9.2).
    CmeError {
        /// The phone failed.
        PhoneFailure = 0, "phone failure", true;
        /// The operation is not allowed.
        OperationNotAllowed = 3, "operation not allowed", false;
        /// The operation is not supported.
        OperationNotSupported = 4, "operation not supported", false;
        /// No SIM in the modem.
        SimNotInserted = 10, "SIM not inserted", true;
        /// The SIM needs its PIN.
        SimPinRequired = 11, "SIM PIN required", true;
        /// The SIM needs its PUK.
        SimPukRequired = 12, "SIM PUK required", true;
        /// The SIM failed.
        SimFailure = 13, "SIM failure", true;
        /// The SIM is busy.
        SimBusy = 14, "SIM busy", true;
        /// The SIM is wrong.
        SimWrong = 15, "SIM wrong", true;
        /// A password was wrong.
        IncorrectPassword = 16, "incorrect password", false;
        /// Memory is full.
        MemoryFull = 20, "memory full", true;
        /// No entry at that index.
        InvalidIndex = 21, "invalid index", false;
        /// Not found.
        NotFound = 22, "not found", false;
        /// Memory failure.
        MemoryFailure = 23, "memory failure", true;
        /// No network service.
        NoNetworkService = 30, "no network service", true;
        /// The network did not answer in time.
        NetworkTimeout = 31, "network timeout", true;
        /// The network allows emergency calls only.
        EmergencyCallsOnly = 32, "network not allowed - emergency calls only", true;
        /// Unknown error.
        Unknown = 100, "unknown", true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_classify() {
        for code in [1u16, 8, 10, 21, 28, 29, 30, 50, 96, 304] {
            let e = CmsError::from_code(code);
            assert!(!matches!(e, CmsError::Other(_)), "{code} should be listed");
            assert_eq!(e.code(), code);
            assert!(!e.is_retryable(), "{code} should be permanent");
        }
        for code in [27u16, 38, 41, 42, 47, 314, 331, 332, 500] {
            assert!(
                CmsError::from_code(code).is_retryable(),
                "{code} should be retryable"
            );
        }
        assert_eq!(CmsError::from_code(42), CmsError::Congestion);
        assert_eq!(CmsError::from_code(42).to_string(), "42 (congestion)");
        assert_eq!(CmsError::from_code(999), CmsError::Other(999));
        assert!(CmsError::from_code(999).is_retryable());
        assert_eq!(CmeError::from_code(10), CmeError::SimNotInserted);
        assert!(!CmeError::from_code(3).is_retryable());
        assert_eq!(CmeError::from_code(77).code(), 77);
    }
}
