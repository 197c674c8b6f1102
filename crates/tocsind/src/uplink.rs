//! Field kits and their satellite uplink, the daemon's part: which kit serves whom, and
//! what a compact frame received from another Tocsin node means.
//!
//! On the district's node, `[kits.NAME]` names a kit, the device that reaches it and the
//! named areas it serves; the people located inside those areas or responsible for them
//! are the kit's. An alert whose targets include some of them carries a
//! [`KitTarget`] per kit, and the router relays it (see `tocsin_router::relays`). An ack
//! batch from a configured kit is judged entry by entry as that kit's relayed acks; from
//! any other sender (a crew lead's own SBD kit, which answers for its one person) each
//! entry is an ordinary reply `1 <code>` from that address, as the SBD driver used to
//! report it.
//!
//! On a kit's node, `[uplink]` names the kit's device and the district's address. Alert,
//! update and cancel frames from that address over that device become local alerts,
//! planned against the kit's own directory (which uses the district's person ids), with
//! an [`Uplink`] so that their acks go back up. A frame repeated after a restart of either
//! node is recognised by its short id and changes nothing.

use std::collections::HashSet;

use tocsin_api::NewAlert;
use tocsin_channel::DriverEvent;
use tocsin_compact::{AckBatch, AlertFrame, AreaRef, Frame};
use tocsin_core::directory::Directory;
use tocsin_core::{Address, AlertId, AreaId, AreaSpec, DeviceId, PersonId};
use tocsin_router::{KitTarget, RelayedAck, Target, Uplink};

use crate::config::{Config, link_address};

/// A field kit as the district's node knows it.
#[derive(Clone, Debug)]
pub struct Kit {
    /// Its name in the config.
    pub name: String,
    /// The district's device that reaches it.
    pub device: DeviceId,
    /// Its card id or IMEI.
    pub address: Address,
    /// The named area its frames carry: the one it serves, or none when it serves several
    /// (it then alerts all of its people).
    pub area: Option<AreaId>,
    /// The people it serves.
    pub people: HashSet<PersonId>,
    /// Largest frame its link carries.
    pub max_bytes: usize,
}

/// The kit's link to the district, as the kit's node knows it.
#[derive(Clone, Debug)]
pub struct UplinkLink {
    /// The kit's own device on the link.
    pub device: DeviceId,
    /// The district's card id or IMEI.
    pub district: Address,
    /// The areas the kit serves.
    pub areas: Vec<AreaId>,
    /// Largest frame the link carries.
    pub max_bytes: usize,
}

/// Both ends: the kits this node relays to, and the uplink it takes alerts from.
#[derive(Clone, Debug, Default)]
pub struct Links {
    /// Kits (district side).
    pub kits: Vec<Kit>,
    /// Uplink (kit side).
    pub uplink: Option<UplinkLink>,
}

/// What a frame from another node comes to.
#[derive(Debug)]
pub enum FrameAction {
    /// Acks relayed by a configured kit.
    Relayed(Vec<RelayedAck>),
    /// Ordinary replies (an ack batch from a sender that is no configured kit, a text).
    Replies(Vec<DriverEvent>),
    /// A new alert from the district.
    Alert {
        /// The local id it gets.
        id: AlertId,
        /// As if submitted through the API.
        new: NewAlert,
        /// Where its acks go.
        uplink: Uplink,
    },
    /// A revision of an alert from the district (found by its short id).
    Update {
        /// The district's short id of the alert it replaces.
        replaces: u32,
        /// The revised alert.
        new: NewAlert,
    },
    /// The district withdrew an alert.
    Cancel {
        /// Its short id.
        short: u32,
    },
    /// Nothing to act on, and why.
    Ignore(String),
}

impl Links {
    /// Resolves `[kits]` and `[uplink]` against the directory. Unknown areas are errors:
    /// a kit that serves nobody would silently drop its valley.
    pub fn from_config(cfg: &Config, directory: &Directory) -> anyhow::Result<Links> {
        let mut kits = Vec::new();
        for (name, k) in &cfg.kits {
            let (address, default_bytes) = link_address(&cfg.devices, &k.device, &k.address)
                .map_err(|e| anyhow::anyhow!("kits.{name}: {e}"))?;
            let areas: Vec<AreaId> = k.areas.iter().map(|a| AreaId::from(a.as_str())).collect();
            let people =
                served(directory, &areas).map_err(|e| anyhow::anyhow!("kits.{name}: {e}"))?;
            kits.push(Kit {
                name: name.clone(),
                device: DeviceId(k.device.clone()),
                address,
                area: match areas.as_slice() {
                    [one] => Some(one.clone()),
                    _ => None,
                },
                people,
                max_bytes: k.max_bytes.unwrap_or(default_bytes),
            });
        }
        let uplink = match &cfg.uplink {
            Some(u) => {
                let (district, default_bytes) = link_address(&cfg.devices, &u.device, &u.district)
                    .map_err(|e| anyhow::anyhow!("uplink: {e}"))?;
                let areas: Vec<AreaId> = u.areas.iter().map(|a| AreaId::from(a.as_str())).collect();
                served(directory, &areas).map_err(|e| anyhow::anyhow!("uplink: {e}"))?;
                Some(UplinkLink {
                    device: DeviceId(u.device.clone()),
                    district,
                    areas,
                    max_bytes: u.max_bytes.unwrap_or(default_bytes),
                })
            }
            None => None,
        };
        Ok(Links { kits, uplink })
    }

    /// The kits serving some of `targets`, each with the targets it serves.
    pub fn kit_targets(&self, targets: &[Target]) -> Vec<KitTarget> {
        self.kits
            .iter()
            .filter_map(|k| {
                let people: Vec<PersonId> = targets
                    .iter()
                    .filter(|t| k.people.contains(&t.person))
                    .map(|t| t.person.clone())
                    .collect();
                (!people.is_empty()).then(|| KitTarget {
                    kit: k.name.clone(),
                    device: k.device.clone(),
                    address: k.address.clone(),
                    area: k.area.clone(),
                    people,
                    max_bytes: k.max_bytes,
                })
            })
            .collect()
    }

    /// What a frame received on `device` from `from` means.
    pub fn judge(
        &self,
        device: &DeviceId,
        from: &Address,
        bytes: &[u8],
        evidence: &str,
    ) -> FrameAction {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => return FrameAction::Ignore(format!("undecodable frame from {from}: {e}")),
        };
        match frame {
            Frame::Acks(batch) => self.acks(from, &batch, evidence),
            Frame::Text(t) => FrameAction::Replies(vec![DriverEvent::Inbound {
                from: from.clone(),
                text: t.text,
                evidence: evidence.to_owned(),
                sent_at: None,
                receipt: None,
                in_reply_to: None,
            }]),
            Frame::Alert(a) => match self.district_link(device, from) {
                Some(up) => FrameAction::Alert {
                    id: local_id(from, a.id.get()),
                    uplink: Uplink {
                        device: up.device.clone(),
                        to: from.clone(),
                        short_id: a.id.get(),
                        max_bytes: up.max_bytes,
                    },
                    new: up.new_alert(&a),
                },
                None => FrameAction::Ignore(format!(
                    "alert frame from {from} on {device}, which is not this kit's district link"
                )),
            },
            Frame::Update(u) => match self.district_link(device, from) {
                Some(up) => FrameAction::Update {
                    replaces: u.replaces.get(),
                    new: up.new_alert(&u.alert),
                },
                None => FrameAction::Ignore(format!(
                    "update frame from {from} on {device}, which is not this kit's district link"
                )),
            },
            Frame::Cancel(c) => match self.district_link(device, from) {
                Some(_) => FrameAction::Cancel { short: c.id.get() },
                None => FrameAction::Ignore(format!(
                    "cancel frame from {from} on {device}, which is not this kit's district link"
                )),
            },
        }
    }

    fn district_link(&self, device: &DeviceId, from: &Address) -> Option<&UplinkLink> {
        self.uplink
            .as_ref()
            .filter(|u| &u.device == device && &u.district == from)
    }

    fn acks(&self, from: &Address, batch: &AckBatch, evidence: &str) -> FrameAction {
        let is_kit = self.kits.iter().any(|k| &k.address == from);
        if is_kit {
            return FrameAction::Relayed(
                batch
                    .acks
                    .iter()
                    .map(|e| RelayedAck {
                        alert: e.alert.get(),
                        person: PersonId::from(e.person.as_str()),
                        code: e.code,
                        answered_at: batch.time_of(e),
                        evidence: format!("ack batch from {from}: {evidence}"),
                    })
                    .collect(),
            );
        }
        // A kit that answers for its one person: each entry is that person's reply.
        FrameAction::Replies(
            batch
                .acks
                .iter()
                .map(|e| DriverEvent::Inbound {
                    from: from.clone(),
                    text: format!("1 {}", e.code),
                    evidence: format!(
                        "ack alert={} person={} at={}; {evidence}",
                        e.alert,
                        e.person,
                        batch.time_of(e).as_millis()
                    ),
                    sent_at: Some(batch.time_of(e)),
                    receipt: None,
                    in_reply_to: None,
                })
                .collect(),
        )
    }
}

impl UplinkLink {
    /// The local alert for a district's alert frame: the frame's named area when it names
    /// one, else every area the kit serves.
    fn new_alert(&self, a: &AlertFrame) -> NewAlert {
        let area = match &a.area {
            AreaRef::Named(id) => vec![AreaSpec::Named {
                id: AreaId::from(id.as_str()),
            }],
            _ => self
                .areas
                .iter()
                .map(|id| AreaSpec::Named { id: id.clone() })
                .collect(),
        };
        NewAlert {
            grade: a.grade,
            kind: if a.kind.is_empty() {
                "warning".to_owned()
            } else {
                a.kind.clone()
            },
            headline: headline(&a.kind),
            text: if a.text.trim().is_empty() {
                headline(&a.kind)
            } else {
                a.text.clone()
            },
            area,
            exercise: a.exercise,
            reference: None,
        }
    }
}

/// The kit's id for the district's alert `short` received from `from`.
pub fn local_id(from: &Address, short: u32) -> AlertId {
    let from = from.to_string().replace(':', "-");
    AlertId(format!("uplink-{from}-{short:06x}"))
}

/// A headline for an alert that came as a frame (frames carry no headline): the hazard.
fn headline(kind: &str) -> String {
    let name = match kind {
        "flash_flood" => "山洪",
        "flood" => "洪水",
        "landslide" => "山体滑坡",
        "debris_flow" => "泥石流",
        "rainstorm" => "暴雨",
        "typhoon" => "台风",
        "dam" | "reservoir" => "水库险情",
        "" => "上级",
        other => other,
    };
    format!("{name}预警（区指挥中心经卫星转发）")
}

/// The people located inside `areas` or responsible for one of them — through the
/// directory's geofence index, not a scan of every person (a district has a million).
pub fn served(directory: &Directory, areas: &[AreaId]) -> Result<HashSet<PersonId>, String> {
    let mut regions = Vec::new();
    for id in areas {
        match directory.region(id) {
            Some(r) => regions.push(r),
            None => return Err(format!("no named area {id} in the directory")),
        }
    }
    let specs: Vec<AreaSpec> = areas
        .iter()
        .map(|id| AreaSpec::Named { id: id.clone() })
        .collect();
    let found = directory.resolve(&specs).map_err(|e| e.to_string())?;
    let mut people: HashSet<PersonId> = found.located.into_iter().collect();
    for (person, area) in found.responsible {
        // Listed with their most specific area only: someone responsible for a wider area
        // (the town) counts when they answer for one of the kit's areas or live inside.
        let inside = || {
            directory.person(&person).is_some_and(|p| {
                p.areas.iter().any(|a| areas.contains(a))
                    || p.location
                        .is_some_and(|pos| regions.iter().any(|r| r.contains(pos)))
            })
        };
        if areas.contains(&area) || inside() {
            people.insert(person);
        }
    }
    Ok(people)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used, reason = "the shipped demo district loads")]
    fn a_kit_serves_exactly_the_people_inside_or_responsible_for_its_areas() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/district");
        let (directory, _) = tocsin_core::directory::load_from_dir(&dir).unwrap();
        for ids in [vec!["T05-V01"], vec!["T01-V01", "T01-V02"], vec!["T06"]] {
            let areas: Vec<AreaId> = ids.iter().map(|a| AreaId::from(*a)).collect();
            let regions: Vec<_> = areas.iter().map(|a| directory.region(a).unwrap()).collect();
            // The definition, by brute force over every person.
            let expected: HashSet<PersonId> = directory
                .people()
                .iter()
                .filter(|p| {
                    p.areas.iter().any(|a| areas.contains(a))
                        || p.location
                            .is_some_and(|pos| regions.iter().any(|r| r.contains(pos)))
                })
                .map(|p| p.id.clone())
                .collect();
            assert!(!expected.is_empty(), "{ids:?}");
            assert_eq!(served(&directory, &areas).unwrap(), expected, "{ids:?}");
        }
        assert!(served(&directory, &[AreaId::from("nowhere")]).is_err());
    }
}
