//! Identifiers. Alert ids are globally unique (UUIDv7 text, made by the daemon) so the
//! logs of several gateway nodes merge without conflicts.

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

string_id!(
    /// One alert, as issued by a command center (UUIDv7 text).
    AlertId
);
string_id!(
    /// One person in the directory (the district's own id, e.g. from the people CSV).
    PersonId
);
string_id!(
    /// One named area: town, village, hazard point, reservoir, river reach.
    AreaId
);
string_id!(
    /// One loudspeaker in the directory (the district's id, from the speakers CSV).
    SpeakerId
);
string_id!(
    /// One device a driver owns: a modem, a BeiDou terminal, a speaker (name from config).
    DeviceId
);

/// One attempt to reach one person over one device. Unique within a gateway node's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttemptId(pub u64);

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a{}", self.0)
    }
}
