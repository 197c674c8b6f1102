//! The daemon's one config file (TOML), validated in full before anything starts.
//!
//! Every error names the key (and, where the TOML parser knows it, the line), so an
//! operator fixing a config at 3 a.m. is told exactly what to change.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This gateway node.
    #[serde(default)]
    pub node: NodeConfig,
    /// Where the district's people and named areas come from.
    pub directory: DirectoryConfig,
    /// The secret that one-time ack codes are derived from.
    pub ack: AckConfig,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// Devices, by name: each a table with `type = "at_modem"` and that driver's settings.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Grade policies (bearers, attempts, deadlines, escalation); defaults follow the
    /// district's 叫应 rules. `[policies.kinds.<kind>.<grade>]` changes a grade's policy
    /// for alerts of one kind only (see [`tocsin_router::KindOverride`]).
    #[serde(default)]
    pub policies: tocsin_router::Policies,
    /// How warnings are spoken on calls (espeak-ng, recorded clips); optional, every key
    /// has a default.
    #[serde(default)]
    pub speech: tocsin_voice::SpeechConfig,
    /// Field-crew check-ins over the mesh; optional, every key has a default.
    #[serde(default)]
    pub checkins: CheckinsConfig,
    /// How the mesh radios' node tables steer bearer choice; optional, every key has a
    /// default.
    #[serde(default)]
    pub mesh: MeshSection,
    /// On a district node: the field kits it relays alerts to, by name.
    #[serde(default)]
    pub kits: BTreeMap<String, KitConfig>,
    /// On a field kit's node: the satellite link to the district it takes alerts from.
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
    /// How CAP 1.2 / GB/T 35965.1 pushes (`POST /v1/cap`) map onto this district: the
    /// geocode table (admin code → named areas), the grade for severity Unknown, the
    /// preferred languages. Optional; without a table, areas given only by geocodes are
    /// refused.
    #[serde(default)]
    pub cap: tocsin_cap::CapPolicy,
}

/// `[kits.NAME]`: a field kit (a Tocsin node with a BeiDou terminal or an SBD modem)
/// that serves some of the district's people. Alerts whose targets include them go to the
/// kit as one compact frame; the kit alerts them itself and relays their acks back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KitConfig {
    /// The district's device that reaches the kit: a `beidou` or `iridium_sbd` device.
    pub device: String,
    /// The kit's BeiDou card id or SBD modem IMEI.
    pub address: String,
    /// The named areas the kit serves: people located inside them or responsible for
    /// them are the kit's (at least one).
    pub areas: Vec<String>,
    /// Largest frame the link carries in one message (bytes). Default: 77 for BeiDou (a
    /// BDS-2 level-3 card), 270 for SBD (the mobile-terminated limit).
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

/// `[uplink]`: on a field kit's node, the link to the district. Alert, update and cancel
/// frames from `district` over `device` become local alerts; acks of those go back up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The kit's own `beidou` or `iridium_sbd` device.
    pub device: String,
    /// The district node's BeiDou card id or SBD modem IMEI: frames from anyone else are
    /// not taken as alerts.
    pub district: String,
    /// The named areas this kit serves: a frame that names no area alerts all of them.
    pub areas: Vec<String>,
    /// Largest frame the link carries in one message (bytes); defaults as for kits.
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

/// A link device's address for `id` and its default frame size, or why it cannot be one.
pub fn link_address(
    devices: &BTreeMap<String, DeviceConfig>,
    device: &str,
    id: &str,
) -> Result<(tocsin_core::Address, usize), String> {
    match devices.get(device) {
        Some(DeviceConfig::Beidou(_)) => {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) || id.len() > 10 {
                return Err(format!("{id:?} is not a BeiDou card id (digits)"));
            }
            Ok((
                tocsin_core::Address::BeidouCard(id.to_owned()),
                tocsin_compact::BDS2_LEVEL3_BYTES,
            ))
        }
        Some(DeviceConfig::IridiumSbd(_)) => {
            if tocsin_compact::Imei::parse(id).is_none() {
                return Err(format!("{id:?} is not an IMEI (15 digits)"));
            }
            Ok((
                tocsin_core::Address::SbdImei(id.to_owned()),
                tocsin_compact::SBD_MT_BYTES,
            ))
        }
        Some(_) => Err(format!(
            "device {device:?} is neither a beidou nor an iridium_sbd device"
        )),
        None => Err(format!("no device {device:?} is configured")),
    }
}

/// `[mesh]`: what the gateway makes of what its Meshtastic radios hear.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// A node not heard by any radio for longer than this (seconds, 60 to 604800) is
    /// stale: a person whose policy would try their mesh node first, and who has a BeiDou
    /// card or SBD modem as well, is tried on that instead (see `checkin::HeardNodes`).
    #[serde(default = "default_mesh_stale_after")]
    pub stale_after_secs: u64,
}

impl Default for MeshSection {
    fn default() -> Self {
        MeshSection {
            stale_after_secs: default_mesh_stale_after(),
        }
    }
}

fn default_mesh_stale_after() -> u64 {
    3600
}

/// Bounds of `mesh.stale_after_secs`: a minute (radios report every few minutes at best)
/// to a week.
const MESH_STALE_AFTER_SECS: std::ops::RangeInclusive<u64> = 60..=604_800;

/// Field-crew check-ins: a crew (role `field_crew` with a mesh node in the directory)
/// silent for longer than `period_secs + grace_secs` raises an alert to its supervisor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckinsConfig {
    /// Whether crews are watched at all (only ever when a Meshtastic device exists).
    #[serde(default = "default_checkins_enabled")]
    pub enabled: bool,
    /// Expected time between two check-ins, seconds (60 to 604800).
    #[serde(default = "default_checkin_period")]
    pub period_secs: u64,
    /// Extra time before a late check-in counts as missed, seconds (0 to 86400).
    #[serde(default = "default_checkin_grace")]
    pub grace_secs: u64,
    /// Grade of the alert a missed check-in raises (its policy decides bearers, deadline
    /// and escalation).
    #[serde(default = "default_checkin_grade")]
    pub grade: tocsin_core::Grade,
    /// Per-crew-member overrides of `period_secs` / `grace_secs`.
    #[serde(default)]
    pub crews: Vec<CrewCheckin>,
}

/// One crew member's own check-in policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrewCheckin {
    /// The person's id in the directory (a `field_crew` with a mesh node).
    pub person: String,
    /// Replaces `checkins.period_secs` for this person.
    #[serde(default)]
    pub period_secs: Option<u64>,
    /// Replaces `checkins.grace_secs` for this person.
    #[serde(default)]
    pub grace_secs: Option<u64>,
}

impl Default for CheckinsConfig {
    fn default() -> Self {
        CheckinsConfig {
            enabled: default_checkins_enabled(),
            period_secs: default_checkin_period(),
            grace_secs: default_checkin_grace(),
            grade: default_checkin_grade(),
            crews: Vec::new(),
        }
    }
}

fn default_checkins_enabled() -> bool {
    true
}
fn default_checkin_period() -> u64 {
    1800
}
fn default_checkin_grace() -> u64 {
    600
}
fn default_checkin_grade() -> tocsin_core::Grade {
    tocsin_core::Grade::Orange
}

/// Bounds of a check-in period, seconds: a minute to a week.
const CHECKIN_PERIOD_SECS: std::ops::RangeInclusive<u64> = 60..=604_800;
/// Bounds of a check-in grace, seconds: none to a day.
const CHECKIN_GRACE_SECS: std::ops::RangeInclusive<u64> = 0..=86_400;

/// This gateway node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Name of this node, e.g. `district-center` or `field-kit-3`.
    #[serde(default = "default_node_name")]
    pub name: String,
    /// Directory for the SQLite log (`tocsin.db`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `full` (fsync every commit; the default) or `normal` (WAL, fsync at checkpoints;
    /// only for field kits with a UPS and flash that dislikes writes).
    #[serde(default = "default_durability")]
    pub durability: String,
    /// How much faster than real time the gateway's clock runs. 1 in production; the demo
    /// and tests raise it so a 5-minute ack deadline passes in seconds.
    #[serde(default = "default_speed")]
    pub clock_speed: f64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: default_node_name(),
            data_dir: default_data_dir(),
            durability: default_durability(),
            clock_speed: default_speed(),
        }
    }
}

fn default_node_name() -> String {
    "tocsin".to_owned()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("var")
}
fn default_durability() -> String {
    "full".to_owned()
}
fn default_speed() -> f64 {
    1.0
}

/// Where the district's directory is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// A folder with `areas.geojson` (named areas) and `people.csv` (people), relative to
    /// the config file.
    pub path: PathBuf,
    /// Country code for phone numbers written without one (`86`).
    #[serde(default = "default_country")]
    pub default_country: String,
}

fn default_country() -> String {
    "86".to_owned()
}

/// The ack-code secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckConfig {
    /// The secret itself (at least 16 characters). Keep the config file private.
    pub key: String,
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Bearer tokens and what they may do.
    #[serde(default)]
    pub tokens: Vec<tocsin_api::ApiToken>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            tokens: Vec::new(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_max_body() -> usize {
    256 * 1024
}

/// One device, tagged by its driver type.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceConfig {
    /// A GSM/LTE modem (or a satellite handset speaking the same AT commands) for SMS.
    AtModem(tocsin_at_modem::config::ModemConfig),
    /// A BeiDou RDSS short-message terminal (BDS-2 "2.1" or BDS-3 sentences).
    Beidou(tocsin_beidou::config::BeidouConfig),
    /// An Iridium 9602/9603 SBD modem (a field kit's uplink).
    IridiumSbd(tocsin_iridium_sbd::config::SbdConfig),
    /// A Meshtastic radio, over serial or TCP.
    Meshtastic(tocsin_meshtastic::config::MeshConfig),
    /// A SIP trunk for voice call-out with DTMF acks.
    Sip(tocsin_sip::config::SipConfig),
    /// Village loudspeakers: RTP G.711 streams, one per speaker group.
    Speaker(tocsin_speaker::config::SpeakerConfig),
    /// This gateway's own sound card feeding a village amplifier: one speaker group
    /// (plays only when tocsind is built with the `audio-local` feature).
    LocalAudio(tocsin_speaker::local::config::LocalAudioConfig),
    /// An app backend: signed HTTP pushes, acks by signed callback or ack link.
    Webhook(tocsin_webhook::config::WebhookConfig),
}

impl DeviceConfig {
    /// The resources this device holds exclusively (serial path, UDP port...), so that a
    /// config claiming one twice is refused before anything starts.
    pub fn resources(&self) -> Vec<String> {
        match self {
            DeviceConfig::AtModem(m) => {
                let mut held = vec![format!("serial:{}", m.path)];
                if let Some(audio) = m.audio_path.as_ref().filter(|_| m.voice) {
                    held.push(format!("serial:{audio}"));
                }
                held
            }
            DeviceConfig::Beidou(b) => vec![format!("serial:{}", b.path)],
            DeviceConfig::IridiumSbd(b) => vec![format!("serial:{}", b.path)],
            DeviceConfig::Meshtastic(m) => match m.transport() {
                Some(tocsin_meshtastic::config::Transport::Serial(p)) => {
                    vec![format!("serial:{p}")]
                }
                Some(tocsin_meshtastic::config::Transport::Tcp(a)) => vec![format!("tcp:{a}")],
                None => Vec::new(),
            },
            DeviceConfig::Sip(c) => vec![format!("udp:{}", c.bind)],
            // Port 0 lets the system choose: nothing to claim.
            DeviceConfig::Speaker(c) => [c.bind, c.rtcp_bind]
                .iter()
                .filter(|a| a.port() != 0)
                .map(|a| format!("udp:{a}"))
                .collect(),
            // Two devices on one card would talk over each other.
            DeviceConfig::LocalAudio(c) => {
                vec![format!(
                    "sound card:{}",
                    c.card.as_deref().unwrap_or("default")
                )]
            }
            // The callback listener's address; port 0 lets the system choose.
            DeviceConfig::Webhook(c) => match c.callback_bind.parse::<std::net::SocketAddr>() {
                Ok(a) if a.port() != 0 => vec![format!("tcp:{a}")],
                _ => Vec::new(),
            },
        }
    }
}

/// A config that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a wrong type (the message names key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{path}: `{key}`{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// ` (line N)` when the key can be found in the file.
        line: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses and validates config text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            line: line_of(text, key)
                .map(|n| format!(" (line {n})"))
                .unwrap_or_default(),
            message,
        };
        if cfg.ack.key.chars().count() < 16 {
            return Err(invalid("ack.key", "must be at least 16 characters".into()));
        }
        if !(cfg.node.clock_speed.is_finite()
            && cfg.node.clock_speed >= 1.0
            && cfg.node.clock_speed <= 1000.0)
        {
            return Err(invalid(
                "node.clock_speed",
                "must be between 1 and 1000".into(),
            ));
        }
        if !matches!(cfg.node.durability.as_str(), "full" | "normal") {
            return Err(invalid(
                "node.durability",
                format!("{:?} is not `full` or `normal`", cfg.node.durability),
            ));
        }
        if cfg.directory.default_country.is_empty()
            || !cfg
                .directory
                .default_country
                .chars()
                .all(|c| c.is_ascii_digit())
        {
            return Err(invalid(
                "directory.default_country",
                "must be digits, e.g. \"86\"".into(),
            ));
        }
        if cfg.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "api.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", cfg.api.listen),
            ));
        }
        let mut seen_tokens = std::collections::HashSet::new();
        for (i, t) in cfg.api.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                return Err(invalid(
                    &format!("api.tokens[{i}].token"),
                    "must be at least 16 characters".into(),
                ));
            }
            if !seen_tokens.insert(t.token.clone()) {
                return Err(invalid(
                    &format!("api.tokens[{i}].token"),
                    "is used twice".into(),
                ));
            }
        }
        if let Err(e) = cfg.policies.validate() {
            let msg = e.to_string();
            let key = msg.split(':').next().unwrap_or("policies").to_owned();
            return Err(invalid(&key, msg));
        }
        // A webhook's secret_file is relative to the config file, like every path in it.
        for dev in cfg.devices.values_mut() {
            if let DeviceConfig::Webhook(c) = dev
                && let Some(file) = c.secret_file.as_mut()
                && file.is_relative()
            {
                *file = base.join(&*file);
            }
        }
        let mut held: BTreeMap<String, String> = BTreeMap::new();
        for (name, dev) in &cfg.devices {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    &format!("devices.{name}"),
                    "device names use letters, digits, - and _".into(),
                ));
            }
            for r in dev.resources() {
                if let Some(other) = held.insert(r.clone(), name.clone()) {
                    return Err(invalid(
                        &format!("devices.{name}"),
                        format!("{r} is already used by device {other:?}"),
                    ));
                }
            }
            let checked = match dev {
                DeviceConfig::AtModem(m) => m.validate().map_err(|e| e.to_string()),
                DeviceConfig::Beidou(b) => b.validate().map_err(|e| e.to_string()),
                DeviceConfig::IridiumSbd(b) => b.validate().map_err(|e| e.to_string()),
                DeviceConfig::Meshtastic(m) => m.validate().map_err(|e| e.to_string()),
                DeviceConfig::Sip(c) => c.validate().map_err(|e| e.to_string()),
                DeviceConfig::Speaker(c) => c.validate().map_err(|e| e.to_string()),
                DeviceConfig::LocalAudio(c) => c.validate().map_err(|e| e.to_string()),
                // The key is read now, so a missing secret_file stops the start.
                DeviceConfig::Webhook(c) => c
                    .validate()
                    .and_then(|()| c.load_secret().map(drop))
                    .map_err(|e| e.to_string()),
            };
            if let DeviceConfig::AtModem(m) = dev {
                let voice_name = format!("{name}-voice");
                if m.voice && cfg.devices.contains_key(&voice_name) {
                    return Err(invalid(
                        &format!("devices.{voice_name}"),
                        format!("this name is taken by the voice side of modem {name:?}"),
                    ));
                }
            }
            if let Err(e) = checked {
                return Err(invalid(&format!("devices.{name}"), e));
            }
        }
        // Relative paths are relative to the config file, not to wherever tocsind was started.
        if cfg.directory.path.is_relative() {
            cfg.directory.path = base.join(&cfg.directory.path);
        }
        if cfg.node.data_dir.is_relative() {
            cfg.node.data_dir = base.join(&cfg.node.data_dir);
        }
        if cfg.speech.cache_entries == 0 {
            return Err(invalid("speech.cache_entries", "must be at least 1".into()));
        }
        for (i, clip) in cfg.speech.clips.iter_mut().enumerate() {
            if clip.text.trim().is_empty() {
                return Err(invalid(
                    &format!("speech.clips[{i}].text"),
                    "must not be empty".into(),
                ));
            }
            if clip.file.is_relative() {
                clip.file = base.join(&clip.file);
            }
        }
        validate_checkins(&cfg.checkins).map_err(|(key, message)| invalid(&key, message))?;
        for (name, kit) in &cfg.kits {
            let key = format!("kits.{name}");
            link_address(&cfg.devices, &kit.device, &kit.address).map_err(|e| invalid(&key, e))?;
            if kit.areas.is_empty() {
                return Err(invalid(&key, "`areas` must name at least one area".into()));
            }
            if kit.max_bytes.is_some_and(|b| !(16..=340).contains(&b)) {
                return Err(invalid(
                    &key,
                    "`max_bytes` must be between 16 and 340".into(),
                ));
            }
        }
        if let Some(up) = &cfg.uplink {
            link_address(&cfg.devices, &up.device, &up.district)
                .map_err(|e| invalid("uplink", e))?;
            if up.areas.is_empty() {
                return Err(invalid(
                    "uplink",
                    "`areas` must name at least one area".into(),
                ));
            }
            if up.max_bytes.is_some_and(|b| !(16..=340).contains(&b)) {
                return Err(invalid(
                    "uplink",
                    "`max_bytes` must be between 16 and 340".into(),
                ));
            }
        }
        if !MESH_STALE_AFTER_SECS.contains(&cfg.mesh.stale_after_secs) {
            return Err(invalid(
                "mesh.stale_after_secs",
                format!(
                    "{} is not between 60 and 604800 seconds",
                    cfg.mesh.stale_after_secs
                ),
            ));
        }
        Ok(cfg)
    }
}

/// Checks `[checkins]`: periods and graces in range, each override naming one person
/// once. Whether that person is a crew in the directory is checked when the directory is
/// loaded. Returns the dotted key at fault and what is wrong.
fn validate_checkins(c: &CheckinsConfig) -> Result<(), (String, String)> {
    let period = |key: String, v: u64| {
        if CHECKIN_PERIOD_SECS.contains(&v) {
            Ok(())
        } else {
            Err((key, format!("{v} is not between 60 and 604800 seconds")))
        }
    };
    let grace = |key: String, v: u64| {
        if CHECKIN_GRACE_SECS.contains(&v) {
            Ok(())
        } else {
            Err((key, format!("{v} is more than 86400 seconds")))
        }
    };
    period("checkins.period_secs".into(), c.period_secs)?;
    grace("checkins.grace_secs".into(), c.grace_secs)?;
    let mut seen = std::collections::HashSet::new();
    for (i, crew) in c.crews.iter().enumerate() {
        if crew.person.trim().is_empty() {
            return Err((
                format!("checkins.crews[{i}].person"),
                "must name a person".into(),
            ));
        }
        if !seen.insert(crew.person.as_str()) {
            return Err((
                format!("checkins.crews[{i}].person"),
                format!("{:?} has two overrides", crew.person),
            ));
        }
        if let Some(v) = crew.period_secs {
            period(format!("checkins.crews[{i}].period_secs"), v)?;
        }
        if let Some(v) = crew.grace_secs {
            grace(format!("checkins.crews[{i}].grace_secs"), v)?;
        }
    }
    Ok(())
}

/// The 1-based line where a dotted key's last part is first assigned or opened as a table.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next()?.split('[').next()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            (l.starts_with(last) && l[last.len()..].trim_start().starts_with('='))
                || (l.starts_with('[') && l.contains(last))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn every_config_in_configs_parses() {
        let mut seen = 0;
        for entry in std::fs::read_dir(configs_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1);
    }

    #[test]
    fn the_cap_geocode_table_is_read_and_checked_against_the_directory() {
        let path = configs_dir().join("example.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(
            cfg.cap.geocodes.get("110116001201").map(Vec::len),
            Some(2),
            "{:?}",
            cfg.cap
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let bad = text.replacen("\"110116001\" = [\"T05\"]", "\"110116001\" = [\"T55\"]", 1);
        assert_ne!(bad, text);
        let dir_cfg = Config::parse(&bad, &path, &configs_dir()).unwrap();
        let (dir, _) = tocsin_core::directory::load_from_dir_with(
            &dir_cfg.directory.path,
            &dir_cfg.directory.default_country,
        )
        .unwrap();
        let err = crate::daemon::check_cap(&dir_cfg, &dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cap.geocodes.110116001") && err.contains("T55"),
            "{err}"
        );
        crate::daemon::check_cap(&cfg, &dir).unwrap();
    }

    #[test]
    fn misspelled_keys_are_named() {
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        for (from, to, key) in [
            (
                "per_minute = 8          #",
                "per_mintue = 8 #",
                "per_mintue",
            ),
            ("durability = \"full\"", "durabilty = \"full\"", "durabilty"),
            ("role = \"issuer\"", "rol = \"issuer\"", "rol"),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "fixture {from:?} not found");
            let err = Config::parse(&bad, Path::new("example.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "error for {key} does not name it: {err}");
            assert!(err.contains("line"), "error for {key} has no line: {err}");
        }
    }

    #[test]
    fn invalid_values_name_key_and_line() {
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        let bad = text.replace(
            "key = \"change-me-district-secret-0000\"",
            "key = \"short\"",
        );
        let err = Config::parse(&bad, Path::new("example.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ack.key") && err.contains("line 23"), "{err}");
        let bad = text.replace(
            "usb-SIMCOM_SIM7600-if02-port0",
            "usb-Quectel_EC25-if02-port0",
        );
        let err = Config::parse(&bad, Path::new("example.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already used by device"), "{err}");
        let bad = text.replace(
            "type = \"at_modem\"\npath = \"/dev/serial/by-id/usb-Q",
            "type = \"at_modme\"\npath = \"/dev/serial/by-id/usb-Q",
        );
        let err = Config::parse(&bad, Path::new("example.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at_modme"), "{err}");
    }

    #[test]
    fn checkins_have_defaults_and_bad_values_name_their_key() {
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        let cfg = Config::parse(&text, Path::new("example.toml"), Path::new(".")).unwrap();
        assert!(cfg.checkins.enabled);
        assert_eq!(
            (cfg.checkins.period_secs, cfg.checkins.grace_secs),
            (1800, 600)
        );
        assert_eq!(cfg.checkins.grade, tocsin_core::Grade::Orange);

        let with = |section: &str| format!("{text}\n{section}");
        let ok = with(
            "[checkins]\nperiod_secs = 900\ngrade = \"red\"\n\n[[checkins.crews]]\nperson = \"F01-1\"\ngrace_secs = 0\n",
        );
        let cfg = Config::parse(&ok, Path::new("example.toml"), Path::new(".")).unwrap();
        assert_eq!(cfg.checkins.period_secs, 900);
        assert_eq!(cfg.checkins.grade, tocsin_core::Grade::Red);
        assert_eq!(cfg.checkins.crews[0].person, "F01-1");
        assert_eq!(cfg.checkins.crews[0].grace_secs, Some(0));

        for (section, key) in [
            ("[checkins]\nperiod_secs = 5\n", "checkins.period_secs"),
            ("[checkins]\ngrace_secs = 100000\n", "checkins.grace_secs"),
            ("[checkins]\ngrade = \"purple\"\n", "purple"),
            ("[checkins]\nperiod_sec = 900\n", "period_sec"),
            (
                "[[checkins.crews]]\nperson = \"F01-1\"\nperiod_secs = 1\n",
                "checkins.crews[0].period_secs",
            ),
            (
                "[[checkins.crews]]\nperson = \"F01-1\"\n[[checkins.crews]]\nperson = \"F01-1\"\n",
                "checkins.crews[1].person",
            ),
        ] {
            let err = Config::parse(&with(section), Path::new("example.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "error for {key} does not name it: {err}");
            assert!(err.contains("line"), "error for {key} has no line: {err}");
        }
    }

    #[test]
    fn kits_and_the_uplink_are_checked_against_their_devices() {
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        let cfg = Config::parse(&text, Path::new("example.toml"), Path::new(".")).unwrap();
        assert_eq!(cfg.kits["huangzi"].device, "beidou-1");
        let with = |section: &str| format!("{text}\n{section}");
        for (section, says) in [
            (
                "[kits.k2]\ndevice = \"nope\"\naddress = \"1\"\nareas = [\"a\"]\n",
                "no device \"nope\"",
            ),
            (
                "[kits.k2]\ndevice = \"modem-1\"\naddress = \"1\"\nareas = [\"a\"]\n",
                "neither a beidou nor an iridium_sbd",
            ),
            (
                "[kits.k2]\ndevice = \"beidou-1\"\naddress = \"12ab\"\nareas = [\"a\"]\n",
                "not a BeiDou card id",
            ),
            (
                "[kits.k2]\ndevice = \"beidou-1\"\naddress = \"1\"\nareas = []\n",
                "at least one area",
            ),
            (
                "[uplink]\ndevice = \"beidou-1\"\ndistrict = \"1\"\nareas = [\"a\"]\nmax_bytes = 4000\n",
                "max_bytes",
            ),
        ] {
            let err = Config::parse(&with(section), Path::new("example.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{section}: {err}");
            assert!(err.contains("line"), "{section}: no line in {err}");
        }
    }

    #[test]
    fn mesh_staleness_has_a_default_and_bad_values_name_their_key() {
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        let cfg = Config::parse(&text, Path::new("example.toml"), Path::new(".")).unwrap();
        assert_eq!(cfg.mesh.stale_after_secs, 3600);
        let with = |section: &str| format!("{text}\n{section}");
        let cfg = Config::parse(
            &with("[mesh]\nstale_after_secs = 900\n"),
            Path::new("example.toml"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(cfg.mesh.stale_after_secs, 900);
        for (section, key) in [
            ("[mesh]\nstale_after_secs = 10\n", "mesh.stale_after_secs"),
            (
                "[mesh]\nstale_after_secs = 9999999\n",
                "mesh.stale_after_secs",
            ),
            ("[mesh]\nstale_after = 900\n", "stale_after"),
        ] {
            let err = Config::parse(&with(section), Path::new("example.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "error for {key} does not name it: {err}");
            assert!(err.contains("line"), "error for {key} has no line: {err}");
        }
    }

    #[test]
    fn local_audio_devices_parse_and_share_no_sound_card() {
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        let with = |extra: &str| format!("{text}\n{extra}");
        let horn = "[devices.horn-T05-V03]\ntype = \"local_audio\"\ngroup = \"T05-V03\"\n";
        let cfg = Config::parse(&with(horn), Path::new("example.toml"), Path::new(".")).unwrap();
        let Some(DeviceConfig::LocalAudio(c)) = cfg.devices.get("horn-T05-V03") else {
            panic!("local_audio device expected")
        };
        assert_eq!(c.group, "T05-V03");
        assert_eq!(c.repeat, 3);
        for (extra, wanted) in [
            (
                format!("{horn}[devices.horn-2]\ntype = \"local_audio\"\ngroup = \"T05-V04\"\n"),
                "sound card:default is already used",
            ),
            (
                "[devices.horn]\ntype = \"local_audio\"\ngroup = \"*\"\n".to_owned(),
                "devices.horn",
            ),
            (
                "[devices.horn]\ntype = \"local_audio\"\ngroup = \"v\"\nrepeats = 2\n".to_owned(),
                "repeats",
            ),
        ] {
            let err = Config::parse(&with(&extra), Path::new("example.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
    }

    #[test]
    fn webhook_devices_parse_and_bad_values_name_their_key() {
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        let with = |extra: &str| format!("{text}\n{extra}");
        let app = "[devices.app-1]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9000/push\"\nsecret = \"0123456789abcdef-app\"\ncallback_bind = \"127.0.0.1:8091\"\n";
        let cfg = Config::parse(&with(app), Path::new("example.toml"), Path::new(".")).unwrap();
        let Some(DeviceConfig::Webhook(c)) = cfg.devices.get("app-1") else {
            panic!("webhook device expected")
        };
        assert_eq!(c.url, "http://127.0.0.1:9000/push");
        assert_eq!(c.down_after, 3);
        assert_eq!(
            cfg.devices["app-1"].resources(),
            vec!["tcp:127.0.0.1:8091".to_owned()]
        );
        let dir = std::env::temp_dir().join(format!("tocsind-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.key"), "0123456789abcdef-from-file\n").unwrap();
        let from_file = app.replace(
            "secret = \"0123456789abcdef-app\"",
            "secret_file = \"app.key\"",
        );
        let cfg = Config::parse(&with(&from_file), Path::new("example.toml"), &dir).unwrap();
        let Some(DeviceConfig::Webhook(c)) = cfg.devices.get("app-1") else {
            panic!("webhook device expected")
        };
        assert_eq!(
            c.secret_file.as_deref(),
            Some(dir.join("app.key").as_path())
        );
        std::fs::remove_dir_all(&dir).unwrap();
        for (extra, wanted) in [
            (app.replace("url =", "ulr ="), "ulr"),
            (
                app.replace("http://127.0.0.1:9000", "https://app.example"),
                "only http://",
            ),
            (app.replace("0123456789abcdef-app", "short"), "secret"),
            (from_file.clone(), "secret_file: cannot read"),
            (
                format!(
                    "{app}[devices.app-2]\ntype = \"webhook\"\nurl = \"http://a/\"\nsecret = \"0123456789abcdef-two\"\ncallback_bind = \"127.0.0.1:8091\"\n"
                ),
                "tcp:127.0.0.1:8091 is already used",
            ),
        ] {
            let err = Config::parse(&with(&extra), Path::new("example.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
    }

    /// example.toml's commented per-kind example, uncommented.
    fn with_kind_example(text: &str) -> String {
        let start = text
            .find("# [policies.kinds.reservoir.red]\n")
            .expect("example.toml shows a per-kind policy");
        let len = text[start..].find("\n\n").unwrap_or(text.len() - start);
        let block = &text[start..start + len];
        text.replacen(block, &block.replace("# ", ""), 1)
    }

    #[test]
    fn the_per_kind_policy_example_parses_and_applies_to_its_kind_only() {
        use tocsin_core::{Grade, Role};
        let text = std::fs::read_to_string(configs_dir().join("example.toml")).unwrap();
        let live = with_kind_example(&text);
        assert!(live.contains("\n[policies.kinds.reservoir.red.roles.village_head]\n"));
        let cfg = Config::parse(&live, Path::new("example.toml"), Path::new(".")).unwrap();
        let p = &cfg.policies;
        let head = p.resolve_for(Grade::Red, "reservoir", Role::VillageHead);
        let lead = p.resolve_for(Grade::Red, "reservoir", Role::GridLead);
        assert_eq!((head.ack_deadline_s, head.reminders), (90, 1));
        assert_eq!((lead.ack_deadline_s, lead.reminders), (120, 1));
        let flood = p.resolve_for(Grade::Red, "flash_flood", Role::VillageHead);
        assert_eq!((flood.ack_deadline_s, flood.reminders), (300, 2));
        // Without the example, the same file has no kinds: old configs read unchanged.
        let cfg = Config::parse(&text, Path::new("example.toml"), Path::new(".")).unwrap();
        assert!(cfg.policies.kinds.is_empty());
        // A zero deadline in a kind's table is refused, naming the kind's key.
        let bad = live.replacen("ack_deadline_s = 120", "ack_deadline_s = 0", 1);
        let err = Config::parse(&bad, Path::new("example.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        let line = 1 + live
            .lines()
            .position(|l| l == "[policies.kinds.reservoir.red]")
            .unwrap();
        assert!(
            err.contains("policies.kinds.reservoir.red") && err.contains(&format!("line {line}")),
            "{err}"
        );
        // A misspelled key inside a kind's table is named.
        let bad = live.replacen("reminders = 1", "remindres = 1", 1);
        let err = Config::parse(&bad, Path::new("example.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("remindres"), "{err}");
    }
}
