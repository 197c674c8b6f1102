//! The `[api]` section of the daemon's config: who may call the API, and its limits.

use serde::{Deserialize, Serialize};

/// Shortest token accepted: long enough that guessing one over HTTP is hopeless.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The API's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer tokens and what each may do. With none, only `/healthz` and `/metrics` answer.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Largest request body in bytes; bigger ones get `413`. Default 256 KiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

/// 256 KiB holds a detailed multi-village polygon with room to spare.
fn default_max_body_bytes() -> usize {
    256 * 1024
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

impl ApiConfig {
    /// Checks the section before anything starts; the error names the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Zero("api.max_body_bytes"));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.name.trim().is_empty() || t.name.chars().any(char::is_control) {
                return Err(ConfigError::BadName { index: i });
            }
            if t.token.chars().count() < MIN_TOKEN_CHARS || t.token.chars().any(char::is_whitespace)
            {
                return Err(ConfigError::WeakToken {
                    name: t.name.clone(),
                });
            }
            for earlier in &self.tokens[..i] {
                if earlier.name == t.name {
                    return Err(ConfigError::DuplicateName {
                        name: t.name.clone(),
                    });
                }
                if earlier.token == t.token {
                    return Err(ConfigError::DuplicateToken {
                        first: earlier.name.clone(),
                        second: t.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// One caller of the API.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it (an operator or an upstream system); recorded as the issuer of its alerts.
    pub name: String,
    /// The secret itself, as sent in `Authorization: Bearer <token>`.
    pub token: String,
    /// What it may do.
    pub role: Role,
}

impl std::fmt::Debug for ApiToken {
    // The secret must never end up in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("token", &"..")
            .field("role", &self.role)
            .finish()
    }
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Issue, update and cancel alerts, and everything a viewer may do.
    Issuer,
    /// Read alerts, deliveries, devices and events, and preview alerts.
    Viewer,
}

/// A refused `[api]` section.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limit that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A token's name is empty or contains control characters.
    #[error("api.tokens[{index}].name must be a non-empty single line")]
    BadName {
        /// Position of the token in the list.
        index: usize,
    },
    /// A token is too short to resist guessing, or contains whitespace.
    #[error("api token {name:?} must be at least 16 characters without whitespace")]
    WeakToken {
        /// The token's name (never the secret).
        name: String,
    },
    /// Two tokens share a name, so the audit log could not tell them apart.
    #[error("api token name {name:?} is used twice")]
    DuplicateName {
        /// The name used twice.
        name: String,
    },
    /// Two tokens share a secret, so a caller's identity would be ambiguous.
    #[error("api tokens {first:?} and {second:?} have the same secret")]
    DuplicateToken {
        /// The first token's name.
        first: String,
        /// The second token's name.
        second: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, token: &str, role: Role) -> ApiToken {
        ApiToken {
            name: name.into(),
            token: token.into(),
            role,
        }
    }

    #[test]
    fn defaults_fill_missing_limits() {
        let c: ApiConfig = serde_json::from_str(
            r#"{"tokens": [{"name": "ops", "token": "0123456789abcdef", "role": "issuer"}]}"#,
        )
        .unwrap();
        assert_eq!(c.max_body_bytes, 256 * 1024);
        assert_eq!(c.tokens[0].role, Role::Issuer);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn misspelled_keys_are_refused() {
        let err = serde_json::from_str::<ApiConfig>(r#"{"max_body_byte": 10}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_byte"), "{err}");
        let err = serde_json::from_str::<ApiConfig>(
            r#"{"tokens": [{"name": "a", "token": "b", "role": "admin"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin"), "{err}");
    }

    #[test]
    fn weak_and_duplicate_tokens_are_refused() {
        let mut c = ApiConfig {
            tokens: vec![token("ops", "short", Role::Issuer)],
            ..ApiConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::WeakToken { name: "ops".into() })
        );
        c.tokens = vec![
            token("ops", "0123456789abcdef", Role::Issuer),
            token("ops", "fedcba9876543210", Role::Viewer),
        ];
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicateName { name: "ops".into() })
        );
        c.tokens = vec![
            token("ops", "0123456789abcdef", Role::Issuer),
            token("wall", "0123456789abcdef", Role::Viewer),
        ];
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicateToken {
                first: "ops".into(),
                second: "wall".into()
            })
        );
        c.tokens.clear();
        c.max_body_bytes = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("api.max_body_bytes")));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = token("ops", "0123456789abcdef", Role::Issuer);
        let shown = format!("{t:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("ops"));
    }
}
