//! Configuration of one app backend, as the daemon's config file gives it
//! (`[devices.NAME] type = "webhook" ...`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tocsin_channel::Capabilities;
use tocsin_core::Bearer;

use crate::sign::Secret;

/// One app backend: where pushes go, the key both sides sign with, and where acks come in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The app backend's push endpoint, `http://host:port/path`. Plain HTTP only: put a
    /// TLS-terminating proxy in front when the backend is across an untrusted network.
    pub url: String,
    /// The HMAC-SHA256 key shared with the app backend (at least 16 bytes). Give this or
    /// `secret_file`, not both.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the key (one line; surrounding whitespace is trimmed), so the key
    /// stays out of the config file.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Where the driver listens for the app's acks (`POST /callback`, `/ack/<token>`),
    /// `ip:port`.
    #[serde(default = "default_callback_bind")]
    pub callback_bind: String,
    /// The base URL the app backend and people's phones reach the listener at, written
    /// into every push as `callback_url` and `ack_url`; `http://<callback_bind>` when
    /// absent (right only when the backend runs on the same host).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Pushes per minute the router may plan for this backend (its send budget). The
    /// driver itself only bounds how many are in flight at once.
    #[serde(default = "default_per_minute")]
    pub per_minute: f64,
    /// Longest text in one push, in characters.
    #[serde(default = "default_max_chars")]
    pub max_chars: usize,
    /// How long one push may take, from connecting to the last byte of the answer, in
    /// milliseconds; then it fails as retryable.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long connecting to the backend may take, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Most pushes in flight at once; the rest wait in the driver, in order.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most pushes waiting in the driver; beyond that a send is refused as retryable.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Consecutive failed pushes (connection refused, timeout, 5xx) after which the
    /// backend is reported down; the next success reports it up.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// How far a signed callback's timestamp may be from the gateway's clock, in seconds,
    /// either way. Older callbacks are refused as possible replays.
    #[serde(default = "default_replay_window_secs")]
    pub replay_window_secs: u64,
    /// Largest callback body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a callback waits for the gateway to commit the reply it carries before
    /// the app is told to try again (503), in milliseconds. The app hears `200` only
    /// once the reply is on disk.
    #[serde(default = "default_commit_wait_ms")]
    pub commit_wait_ms: u64,
}

/// Loopback: an app backend on another host needs an address it can reach.
pub fn default_callback_bind() -> String {
    "127.0.0.1:8091".to_owned()
}
/// 600 pushes a minute: an HTTP backend is not the bottleneck a modem is.
pub fn default_per_minute() -> f64 {
    600.0
}
/// 2000 characters: any warning text, with room for the code.
pub fn default_max_chars() -> usize {
    2000
}
/// 10 s: a backend that takes longer is in trouble; the router can try another bearer.
pub fn default_timeout_ms() -> u64 {
    10_000
}
/// 3 s to connect.
pub fn default_connect_timeout_ms() -> u64 {
    3_000
}
/// 8 pushes at once.
pub fn default_max_in_flight() -> usize {
    8
}
/// 1024 pushes, the depth of a driver's command channel.
pub fn default_queue_limit() -> usize {
    tocsin_channel::COMMAND_QUEUE
}
/// 3 failures in a row.
pub fn default_down_after() -> u32 {
    3
}
/// 5 minutes either way, what webhook senders commonly allow for clock skew.
pub fn default_replay_window_secs() -> u64 {
    300
}
/// 16 KiB: an ack is a few hundred bytes.
pub fn default_max_body_bytes() -> usize {
    16 * 1024
}
/// 10 s: a commit takes milliseconds unless the store is in trouble.
pub fn default_commit_wait_ms() -> u64 {
    10_000
}

/// Longest subscriber id the driver handles, in characters: what the directory accepts
/// in its `app` column (the id travels hex-encoded inside tokens and links).
pub const MAX_SUBSCRIBER_CHARS: usize = tocsin_core::directory::APP_ID_MAX_CHARS;

/// A webhook configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `url` is not an absolute URL.
    #[error("url: {0:?} is not a URL like http://app.example:8080/push")]
    BadUrl(String),
    /// `url` or `public_url` uses a scheme other than `http`.
    #[error(
        "{0}: only http:// is built in; terminate TLS in a proxy in front of the backend or the listener"
    )]
    NotHttp(&'static str),
    /// Neither `secret` nor `secret_file` is given, or both are.
    #[error("secret: give exactly one of `secret` and `secret_file`")]
    SecretChoice,
    /// The key is shorter than 16 bytes.
    #[error("secret: must be at least 16 bytes")]
    ShortSecret,
    /// `secret_file` cannot be read.
    #[error("secret_file: cannot read {path}: {reason}")]
    SecretFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `callback_bind` is not `ip:port`.
    #[error("callback_bind: {0:?} is not an address like 127.0.0.1:8091")]
    BadBind(String),
    /// `public_url` is not an absolute URL.
    #[error("public_url: {0:?} is not a URL like http://gateway.example:8091")]
    BadPublicUrl(String),
    /// `per_minute` is not a positive number.
    #[error("per_minute: must be a positive number")]
    BadRate,
    /// A count or duration that must be positive is zero.
    #[error("{0}: must be at least 1")]
    Zero(&'static str),
}

impl WebhookConfig {
    /// A configuration with every default, pushing to `url` and signing with `secret`.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: Some(secret.into()),
            secret_file: None,
            callback_bind: default_callback_bind(),
            public_url: None,
            per_minute: default_per_minute(),
            max_chars: default_max_chars(),
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_in_flight: default_max_in_flight(),
            queue_limit: default_queue_limit(),
            down_after: default_down_after(),
            replay_window_secs: default_replay_window_secs(),
            max_body_bytes: default_max_body_bytes(),
            commit_wait_ms: default_commit_wait_ms(),
        }
    }

    /// Checks everything that can be checked without reading files or the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url =
            reqwest::Url::parse(&self.url).map_err(|_| ConfigError::BadUrl(self.url.clone()))?;
        if url.scheme() != "http" {
            return Err(ConfigError::NotHttp("url"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::BadUrl(self.url.clone()));
        }
        match (&self.secret, &self.secret_file) {
            (Some(s), None) if s.len() < 16 => return Err(ConfigError::ShortSecret),
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err(ConfigError::SecretChoice),
        }
        if self.callback_bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::BadBind(self.callback_bind.clone()));
        }
        if let Some(public) = &self.public_url {
            let u = reqwest::Url::parse(public)
                .map_err(|_| ConfigError::BadPublicUrl(public.clone()))?;
            if u.scheme() != "http" {
                return Err(ConfigError::NotHttp("public_url"));
            }
        }
        if !(self.per_minute.is_finite() && self.per_minute > 0.0) {
            return Err(ConfigError::BadRate);
        }
        for (key, v) in [
            ("max_chars", self.max_chars as u64),
            ("timeout_ms", self.timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("max_in_flight", self.max_in_flight as u64),
            ("queue_limit", self.queue_limit as u64),
            ("down_after", u64::from(self.down_after)),
            ("replay_window_secs", self.replay_window_secs),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("commit_wait_ms", self.commit_wait_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(key));
            }
        }
        Ok(())
    }

    /// The key, from `secret` or read from `secret_file` (the one file this reads).
    pub fn load_secret(&self) -> Result<Secret, ConfigError> {
        let key = match (&self.secret, &self.secret_file) {
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| ConfigError::SecretFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
                .trim()
                .as_bytes()
                .to_vec(),
            _ => return Err(ConfigError::SecretChoice),
        };
        if key.len() < 16 {
            return Err(ConfigError::ShortSecret);
        }
        Ok(Secret::new(key))
    }

    /// The base URL written into pushes for callbacks and links, without a trailing `/`.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.callback_bind),
        }
    }

    /// What this backend can do: app pushes, and a sender the backend vouches for with
    /// the shared key (see the crate documentation for what that does and does not mean).
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            bearer: Bearer::App,
            per_minute: self.per_minute,
            max_chars: self.max_chars,
            sender_authenticated: true,
        }
    }

    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Self::commit_wait_ms`] as a duration.
    pub fn commit_wait(&self) -> Duration {
        Duration::from_millis(self.commit_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> WebhookConfig {
        WebhookConfig::new("http://127.0.0.1:9000/push", "0123456789abcdef")
    }

    #[test]
    fn defaults_are_valid_and_capabilities_follow_them() {
        let c = ok();
        c.validate().unwrap();
        let caps = c.capabilities();
        assert_eq!(caps.bearer, Bearer::App);
        assert!(caps.sender_authenticated);
        assert_eq!(caps.per_minute, 600.0);
        assert_eq!(caps.max_chars, 2000);
        assert_eq!(c.public_base(), "http://127.0.0.1:8091");
    }

    #[test]
    fn bad_values_name_their_key() {
        type Change = Box<dyn Fn(&mut WebhookConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.url = "app.example/push".into()), "url:"),
            (
                Box::new(|c| c.url = "https://app.example/push".into()),
                "url: only http://",
            ),
            (Box::new(|c| c.secret = Some("short".into())), "secret:"),
            (
                Box::new(|c| c.secret_file = Some("/x".into())),
                "exactly one",
            ),
            (
                Box::new(|c| c.callback_bind = "localhost".into()),
                "callback_bind",
            ),
            (
                Box::new(|c| c.public_url = Some("ftp://x".into())),
                "public_url",
            ),
            (Box::new(|c| c.per_minute = f64::NAN), "per_minute"),
            (Box::new(|c| c.max_in_flight = 0), "max_in_flight"),
            (Box::new(|c| c.replay_window_secs = 0), "replay_window_secs"),
        ];
        for (change, key) in cases {
            let mut c = ok();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn parses_from_toml_and_refuses_unknown_keys() {
        let c: WebhookConfig = toml::from_str(
            "url = \"http://app:8080/push\"\nsecret_file = \"/etc/tocsin/app.key\"\ncallback_bind = \"0.0.0.0:8091\"\npublic_url = \"http://gw.example:8091/\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.public_base(), "http://gw.example:8091");
        let err = toml::from_str::<WebhookConfig>("url = \"http://a/\"\nsecert = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("secert"), "{err}");
    }

    #[test]
    fn the_secret_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("tocsin-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "0123456789abcdefXYZ\n").unwrap();
        let mut c = ok();
        c.secret = None;
        c.secret_file = Some(path.clone());
        assert_eq!(
            c.load_secret().unwrap(),
            Secret::new(b"0123456789abcdefXYZ".to_vec())
        );
        c.secret_file = Some(dir.join("missing"));
        assert!(matches!(
            c.load_secret(),
            Err(ConfigError::SecretFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
