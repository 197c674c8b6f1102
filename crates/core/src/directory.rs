//! The district directory: people, named areas, and the geofence index over both.
//!
//! A district's directory is two files in one folder:
//!
//! **`areas.geojson`** — a GeoJSON FeatureCollection. Each feature has the properties
//! `id` (text, unique), `kind` (`town`, `village`, `hazard_point`, `reservoir`,
//! `river_reach` or `underpass`), `name` and optionally `town` (the town it belongs to).
//! Its geometry is a Polygon or MultiPolygon, or a Point with a `radius_m` property (a
//! hazard point with its buffer), which becomes a circle. A town or village may carry
//! `population` (a whole number of residents, or its digits as text; absent, `null` or
//! empty = unknown), which the alert preview sums (see [`Directory::estimate_population`]).
//! Other properties are ignored.
//!
//! **`people.csv`** — UTF-8 CSV with a header row; column order does not matter and
//! unknown columns are ignored:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `id` | yes | the district's id for the person, unique |
//! | `name` | yes | name shown to operators |
//! | `role` | yes | `resident`, `village_head`, `grid_lead`, `hazard_warden`, `reservoir_warden`, `town_official`, `district_official`, `field_crew` |
//! | `supervisor` | no | id of the person escalated to |
//! | `areas` | no | ids of the named areas the person answers for, separated by `;` |
//! | `lon`, `lat` | no | where the person is (WGS84 degrees); both or neither |
//! | `town` | no | town name for per-town reports |
//! | `phones` | yes (the column; a row may leave it empty) | phone numbers separated by `;`, national or international form |
//! | `beidou` | no | BeiDou RDSS card numbers separated by `;`: 1 to [`BEIDOU_CARD_MAX_DIGITS`] digits |
//! | `mesh` | no | Meshtastic node numbers separated by `;`: `!` and 8 hex digits (`!a1b2c3d4`, as the apps show them) or decimal |
//! | `sbd` | no | Iridium SBD modem IMEIs separated by `;`: 15 digits |
//! | `app` | no | app push subscriber ids separated by `;`: opaque text, at most [`APP_ID_MAX_CHARS`] characters |
//!
//! Addresses are kept in that column order (phones first), each once per person.
//!
//! **`speakers.csv`** (optional) — the district's loudspeakers, UTF-8 CSV with a header
//! row, column order free, unknown columns ignored:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `id` | yes | the district's id for the speaker, unique |
//! | `name` | no | name shown to operators (the id when empty) |
//! | `town` | no | town name for per-town reports |
//! | `lon`, `lat` | no | where it stands (WGS84 degrees); both or neither |
//! | `areas` | no | ids of the named areas it covers, separated by `;` |
//! | `device` | yes | the daemon's device (a `type = "speaker"` device) that drives it |
//! | `group` | yes | the group name in that device's config |
//!
//! An alert resolves to the speakers located inside its area plus those covering a named
//! area that overlaps it. A speaker row needs a location or an area (else no alert could
//! ever sound it); a bad row is rejected with its line and reason (the reason starts with
//! `speakers.csv:` so it is not mistaken for a line of `people.csv`), an unknown area is
//! dropped from the row and reported with `kept: true`.
//!
//! The BeiDou card-number format is **unconfirmed**: BDS-2 terminals report 7-digit card
//! ids and BDS-3 terminals may zero-pad them to 8 (protocols brief §1). The loader takes
//! the digits as written (no padding is added or removed) and accepts 1 to
//! [`BEIDOU_CARD_MAX_DIGITS`] of them, a deliberately loose rule kept in one place so it
//! can be narrowed or made a setting once real cards have been seen.
//!
//! A bad row (missing id, duplicate id, unknown role, a bad phone number, card number,
//! node number, IMEI or app id, bad lon/lat) is rejected with its line number and the
//! reason; the rest of the file is still imported, because one typo must not leave a
//! whole district without warnings. A person needs no phone if they have another
//! address (a remote village lead may have only a BeiDou card). A person with no address
//! at all is still imported, because they still count in the alert's reach and their
//! supervisor is still escalated to, and is reported with `kept: true` and the reason
//! "no address: cannot be reached".

use crate::address::{Address, PhoneNumber};
use crate::area::{AreaError, AreaKind, AreaSpec, NamedArea, Region, validate_position};
use crate::geofence::GeoIndex;
use crate::ids::{AreaId, PersonId};
use crate::ids::{DeviceId, SpeakerId};
use crate::person::{Person, Role};
use crate::roster::{Roster, RosterFull, Row};
use crate::speaker::Speaker;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Most rows the loader reserves room for before reading (10 million); a bigger file
/// still loads, growing as it goes.
const EXPECTED_ROWS_MAX: usize = 10_000_000;

/// Country code used for national phone numbers by [`load_from_dir`] (China).
pub const DEFAULT_COUNTRY: &str = "86";

/// Most digits accepted in a BeiDou card number (the format is unconfirmed; see the
/// module documentation).
pub const BEIDOU_CARD_MAX_DIGITS: usize = 10;

/// Digits in an Iridium SBD modem IMEI.
pub const SBD_IMEI_DIGITS: usize = 15;

/// Most characters accepted in an app push subscriber id.
pub const APP_ID_MAX_CHARS: usize = 128;

/// Why a directory could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Two people share an id.
    #[error("person id {id} appears more than once")]
    DuplicatePerson {
        /// The repeated id.
        id: PersonId,
    },
    /// Two named areas share an id.
    #[error("area id {id} appears more than once")]
    DuplicateArea {
        /// The repeated id.
        id: AreaId,
    },
    /// A person's supervisor is not in the directory.
    #[error("person {person}: supervisor {supervisor} is not in the directory")]
    UnknownSupervisor {
        /// The person.
        person: PersonId,
        /// The missing supervisor.
        supervisor: PersonId,
    },
    /// Supervisors form a loop, so escalation would never reach anyone new.
    #[error("supervisor cycle: {}", cycle_text(.cycle))]
    SupervisorCycle {
        /// The people in the loop, starting and ending with the same person.
        cycle: Vec<PersonId>,
    },
    /// A person answers for an area that is not in the directory.
    #[error("person {person}: area {area} is not in the directory")]
    UnknownArea {
        /// The person.
        person: PersonId,
        /// The missing area.
        area: AreaId,
    },
    /// A person's location is not a valid `[lon, lat]`.
    #[error("person {person}: {source}")]
    BadLocation {
        /// The person.
        person: PersonId,
        /// What is wrong with the location.
        source: AreaError,
    },
    /// A named area's geometry is invalid.
    #[error("area {id}: {source}")]
    AreaGeometry {
        /// The area.
        id: AreaId,
        /// What is wrong with its geometry.
        source: AreaError,
    },
    /// The areas file is not a GeoJSON FeatureCollection.
    #[error("areas GeoJSON: {reason}")]
    GeoJson {
        /// What is wrong.
        reason: String,
    },
    /// One feature of the areas file is unusable.
    #[error("areas GeoJSON feature {index}{}: {reason}", .id.as_ref().map(|i| format!(" (id {i:?})")).unwrap_or_default())]
    Feature {
        /// Index of the feature in the collection (from 0).
        index: usize,
        /// Its id, when it has one.
        id: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// Two speakers share an id.
    #[error("speaker id {id} appears more than once")]
    DuplicateSpeaker {
        /// The repeated id.
        id: SpeakerId,
    },
    /// A speaker covers an area that is not in the directory.
    #[error("speaker {speaker}: area {area} is not in the directory")]
    SpeakerUnknownArea {
        /// The speaker.
        speaker: SpeakerId,
        /// The missing area.
        area: AreaId,
    },
    /// A speaker's location is not a valid `[lon, lat]`.
    #[error("speaker {speaker}: {source}")]
    SpeakerBadLocation {
        /// The speaker.
        speaker: SpeakerId,
        /// What is wrong with the location.
        source: AreaError,
    },
    /// More people, or more text in their ids, names or area lists, than the
    /// directory's 4-byte offsets can hold (about four billion people or 4 GB of text).
    #[error(
        "the directory cannot hold more than about four billion people or 4 GB of ids, names or area lists"
    )]
    TooLarge,
    /// A directory file could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn cycle_text(cycle: &[PersonId]) -> String {
    cycle
        .iter()
        .map(PersonId::as_str)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A row of the people CSV that was not imported as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    /// Line number in the file (the header is line 1).
    pub line: usize,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
    /// `true` when the person was still imported: with the bad reference removed (an
    /// unknown supervisor or area, see [`load_from_dir`]), or as written but with no
    /// address to reach them at; `false` when the row was dropped.
    pub kept: bool,
}

/// Who an alert's area reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// People located inside the area who are not in `responsible`, sorted by id.
    pub located: Vec<PersonId>,
    /// Responsible persons assigned to a named area that overlaps the alert area, each
    /// once, with the most specific such area (hazard point, underpass, reservoir, river
    /// reach, village, then town; ties by area id), sorted by person id. A person who is
    /// both located inside and responsible appears only here: responsibility decides the
    /// policy (ack required, escalation).
    pub responsible: Vec<(PersonId, AreaId)>,
    /// Named areas overlapping the alert area (and every named area it names), sorted.
    pub areas: Vec<AreaId>,
    /// Loudspeakers located inside the area or covering a named area in `areas`, each
    /// once, sorted by id.
    pub speakers: Vec<SpeakerId>,
}

impl Resolution {
    /// Number of people reached (located and responsible).
    pub fn person_count(&self) -> usize {
        self.located.len() + self.responsible.len()
    }
}

/// The district's people and named areas, indexed for area resolution.
///
/// People are kept column by column (a resident costs about 60 bytes rather than the
/// 350 of a [`Person`] record) and built into a [`Person`] when asked for:
/// [`Directory::person`] and [`Directory::people`] return owned values.
#[derive(Debug)]
pub struct Directory {
    people: Roster,
    areas: Vec<NamedArea>,
    /// Person id -> position in `people`. Holds positions only, not copies of the ids: a
    /// district of a million people would otherwise keep every id twice.
    person_at: PersonIndex,
    area_at: HashMap<AreaId, usize>,
    /// Per area (by position), the responsible persons (by position) answering for it.
    responsible_by_area: Vec<Vec<usize>>,
    index: GeoIndex,
    /// The loudspeakers, in file order.
    speakers: Vec<Speaker>,
    speaker_at: HashMap<SpeakerId, usize>,
    /// Located speakers (point ids are positions in `speakers`); no areas.
    speaker_index: GeoIndex,
    /// Per area (by position), the speakers (by position) covering it.
    speakers_by_area: Vec<Vec<usize>>,
    /// Per area (by position), its residents as `areas.geojson` gives them (`None`:
    /// unknown). Kept beside the areas, not in [`NamedArea`], so that a figure never
    /// changes what an area is.
    populations: Vec<Option<u64>>,
}

/// An estimate of how many people live in the named areas an alert touches (see
/// [`Directory::estimate_population`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PopulationEstimate {
    /// The sum of the known figures; `None` when no counted area has one (unknown, which is
    /// not the same as nobody).
    pub population: Option<u64>,
    /// Areas counted (villages, and towns without villages in the directory) whose
    /// population is unknown: when above 0, `population` is a lower bound.
    pub unknown_areas: u32,
}

impl Directory {
    /// Validates and indexes a directory: unique person and area ids, valid area
    /// geometries and person locations, supervisors that exist and form no cycle, and
    /// area assignments that exist.
    pub fn new(people: Vec<Person>, areas: Vec<NamedArea>) -> Result<Directory, DirectoryError> {
        let mut roster = Roster::default();
        let mut person_at = PersonIndex::with_capacity(people.len());
        for p in &people {
            if let Some(loc) = p.location {
                validate_position(loc, || "location".to_owned()).map_err(|source| {
                    DirectoryError::BadLocation {
                        person: p.id.clone(),
                        source,
                    }
                })?;
            }
            let at = roster
                .push(Row::of(p))
                .map_err(|RosterFull| DirectoryError::TooLarge)?;
            if person_at.insert(&roster, at).is_some() {
                return Err(DirectoryError::DuplicatePerson { id: p.id.clone() });
            }
        }
        drop(people);
        roster.finish();
        Directory::build(roster, areas, person_at)
    }

    /// Indexes people already stored (with valid locations and unique ids, `person_at`
    /// indexing exactly them) and the areas, checking every reference.
    fn build(
        people: Roster,
        areas: Vec<NamedArea>,
        person_at: PersonIndex,
    ) -> Result<Directory, DirectoryError> {
        let mut area_at = HashMap::with_capacity(areas.len());
        let mut regions = Vec::with_capacity(areas.len());
        for (i, area) in areas.iter().enumerate() {
            if area_at.insert(area.id.clone(), i).is_some() {
                return Err(DirectoryError::DuplicateArea {
                    id: area.id.clone(),
                });
            }
            if let AreaSpec::Named { id: inner } = &area.geometry {
                return Err(DirectoryError::AreaGeometry {
                    id: area.id.clone(),
                    source: AreaError::NestedNamed {
                        id: area.id.clone(),
                        inner: inner.clone(),
                    },
                });
            }
            let region = area.geometry.to_region_unnamed().map_err(|source| {
                DirectoryError::AreaGeometry {
                    id: area.id.clone(),
                    source,
                }
            })?;
            regions.push((index_u32(i), region));
        }

        let id_of = |i: usize| PersonId::from(people.id(i).unwrap_or(""));
        for (i, s) in people.supervised() {
            if person_at.get(&people, s.as_str()).is_none() {
                return Err(DirectoryError::UnknownSupervisor {
                    person: id_of(i),
                    supervisor: s.clone(),
                });
            }
        }
        // The roster interns area ids: resolve each distinct one once.
        let area_of: Vec<Option<usize>> = people
            .area_ids()
            .iter()
            .map(|a| area_at.get(a).copied())
            .collect();
        let mut responsible_by_area = vec![Vec::new(); areas.len()];
        for i in 0..people.len() {
            let responsible = people.role(i).is_some_and(Role::is_responsible);
            for &a in people.areas(i) {
                let Some(at) = area_of.get(a as usize).copied().flatten() else {
                    return Err(DirectoryError::UnknownArea {
                        person: id_of(i),
                        area: people
                            .area_ids()
                            .get(a as usize)
                            .cloned()
                            .unwrap_or_else(|| AreaId::from("")),
                    });
                };
                if responsible
                    && let Some(list) = responsible_by_area.get_mut(at)
                    && list.last() != Some(&i)
                {
                    list.push(i);
                }
            }
        }
        check_supervisor_cycles(&people, &person_at)?;

        let index = GeoIndex::new(people.located(), regions);
        let speakers_by_area = vec![Vec::new(); areas.len()];
        let populations = vec![None; areas.len()];
        Ok(Directory {
            people,
            areas,
            person_at,
            area_at,
            responsible_by_area,
            index,
            speakers: Vec::new(),
            speaker_at: HashMap::new(),
            speaker_index: GeoIndex::new(std::iter::empty(), std::iter::empty()),
            speakers_by_area,
            populations,
        })
    }

    /// Sets (or, with `None`, forgets) a named area's population. Returns `false`, and
    /// changes nothing, if the directory has no area with this id.
    pub fn set_population(&mut self, area: &AreaId, population: Option<u64>) -> bool {
        match self
            .area_at
            .get(area)
            .and_then(|&i| self.populations.get_mut(i))
        {
            Some(slot) => {
                *slot = population;
                true
            }
            None => false,
        }
    }

    /// A named area's population, if known.
    pub fn population(&self, area: &AreaId) -> Option<u64> {
        self.area_at
            .get(area)
            .and_then(|&i| self.populations.get(i).copied().flatten())
    }

    /// Estimates the population of `areas` (an alert's resolved named areas,
    /// [`Resolution::areas`]). Villages are the unit: a village wholly or partly inside
    /// the alert's area counts whole (nobody knows where in a village its people are). A
    /// town counts whole only if the directory has no village of that town (otherwise its
    /// villages stand for it, and the town's figure would count them twice). Hazard
    /// points, reservoirs, river reaches and underpasses are not places people live in
    /// and are not counted. Unknown ids are skipped; each id counts once.
    pub fn estimate_population(&self, areas: &[AreaId]) -> PopulationEstimate {
        let mut seen = HashSet::new();
        let mut estimate = PopulationEstimate::default();
        for id in areas {
            let Some(&at) = self.area_at.get(id) else {
                continue;
            };
            if !seen.insert(at) {
                continue;
            }
            let Some(area) = self.areas.get(at) else {
                continue;
            };
            let counted = match area.kind {
                AreaKind::Village => true,
                AreaKind::Town => !self
                    .areas
                    .iter()
                    .any(|v| v.kind == AreaKind::Village && v.town == area.name),
                _ => false,
            };
            if !counted {
                continue;
            }
            match self.populations.get(at).copied().flatten() {
                Some(n) => {
                    estimate.population = Some(estimate.population.unwrap_or(0).saturating_add(n));
                }
                None => estimate.unknown_areas = estimate.unknown_areas.saturating_add(1),
            }
        }
        estimate
    }

    /// The directory with these loudspeakers (replacing any it had): unique ids, valid
    /// locations, covered areas that exist.
    pub fn with_speakers(mut self, speakers: Vec<Speaker>) -> Result<Directory, DirectoryError> {
        let mut speaker_at = HashMap::with_capacity(speakers.len());
        let mut by_area = vec![Vec::new(); self.areas.len()];
        for (i, sp) in speakers.iter().enumerate() {
            if speaker_at.insert(sp.id.clone(), i).is_some() {
                return Err(DirectoryError::DuplicateSpeaker { id: sp.id.clone() });
            }
            if let Some(loc) = sp.location {
                validate_position(loc, || "location".to_owned()).map_err(|source| {
                    DirectoryError::SpeakerBadLocation {
                        speaker: sp.id.clone(),
                        source,
                    }
                })?;
            }
            for a in &sp.areas {
                let at =
                    *self
                        .area_at
                        .get(a)
                        .ok_or_else(|| DirectoryError::SpeakerUnknownArea {
                            speaker: sp.id.clone(),
                            area: a.clone(),
                        })?;
                if let Some(list) = by_area.get_mut(at)
                    && list.last() != Some(&i)
                {
                    list.push(i);
                }
            }
        }
        let points = speakers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.location.map(|loc| (index_u32(i), loc)));
        self.speaker_index = GeoIndex::new(points, std::iter::empty());
        self.speakers = speakers;
        self.speaker_at = speaker_at;
        self.speakers_by_area = by_area;
        Ok(self)
    }

    /// Resolves an alert's area (the union of `area`) to the people it reaches.
    pub fn resolve(&self, area: &[AreaSpec]) -> Result<Resolution, AreaError> {
        if area.is_empty() {
            return Err(AreaError::NoArea);
        }
        let lookup = |id: &AreaId| self.area(id);
        let mut located: Vec<u32> = Vec::new();
        let mut hit: Vec<u32> = Vec::new();
        let mut speakers: Vec<usize> = Vec::new();
        for (i, spec) in area.iter().enumerate() {
            let region = spec.to_region(&lookup).map_err(|e| e.at_index(i))?;
            located.extend(self.index.points_in(&region));
            if !self.speakers.is_empty() {
                speakers.extend(
                    self.speaker_index
                        .points_in(&region)
                        .into_iter()
                        .map(|s| s as usize),
                );
            }
            hit.extend(self.index.areas_intersecting(&region));
            // A named area is always its own target, even if degenerate.
            if let AreaSpec::Named { id } = spec
                && let Some(&at) = self.area_at.get(id)
            {
                hit.push(index_u32(at));
            }
        }
        hit.sort_unstable();
        hit.dedup();
        for &a in &hit {
            if let Some(list) = self.speakers_by_area.get(a as usize) {
                speakers.extend(list.iter().copied());
            }
        }
        let mut speakers: Vec<SpeakerId> = speakers
            .into_iter()
            .filter_map(|s| self.speakers.get(s).map(|x| x.id.clone()))
            .collect();
        speakers.sort();
        speakers.dedup();

        // Person position -> the most specific area they answer for within the hit set.
        let mut responsible: HashMap<usize, usize> = HashMap::new();
        for &a in &hit {
            let a = a as usize;
            for &p in self
                .responsible_by_area
                .get(a)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let better = match responsible.get(&p) {
                    None => true,
                    Some(&current) => self.specificity(a) < self.specificity(current),
                };
                if better {
                    responsible.insert(p, a);
                }
            }
        }

        let mut located: Vec<PersonId> = located
            .into_iter()
            .map(|p| p as usize)
            .filter(|p| !responsible.contains_key(p))
            .filter_map(|p| self.people.id(p).map(PersonId::from))
            .collect();
        located.sort();
        located.dedup();
        let mut responsible: Vec<(PersonId, AreaId)> = responsible
            .into_iter()
            .filter_map(|(p, a)| {
                Some((
                    PersonId::from(self.people.id(p)?),
                    self.areas.get(a)?.id.clone(),
                ))
            })
            .collect();
        responsible.sort();
        let mut areas: Vec<AreaId> = hit
            .into_iter()
            .filter_map(|a| self.areas.get(a as usize).map(|x| x.id.clone()))
            .collect();
        areas.sort();
        Ok(Resolution {
            located,
            responsible,
            areas,
            speakers,
        })
    }

    /// Sort key for "most specific area": kind first, then id.
    fn specificity(&self, area: usize) -> (u8, Option<&AreaId>) {
        let a = self.areas.get(area);
        let rank = match a.map(|a| a.kind) {
            Some(AreaKind::HazardPoint) => 0,
            Some(AreaKind::Underpass) => 1,
            Some(AreaKind::Reservoir) => 2,
            Some(AreaKind::RiverReach) => 3,
            Some(AreaKind::Village) => 4,
            Some(AreaKind::Town) => 5,
            None => 6,
        };
        (rank, a.map(|a| &a.id))
    }

    /// The person with this id, built from the directory's columns (an owned copy:
    /// people are not stored as [`Person`] records). [`Directory::contains`] answers
    /// "is this person known" without building one.
    pub fn person(&self, id: &PersonId) -> Option<Person> {
        self.person_at
            .get(&self.people, id.as_str())
            .and_then(|i| self.people.get(i))
    }

    /// Whether a person with this id is in the directory.
    pub fn contains(&self, id: &PersonId) -> bool {
        self.person_at.get(&self.people, id.as_str()).is_some()
    }

    /// The named area with this id.
    pub fn area(&self, id: &AreaId) -> Option<&NamedArea> {
        self.area_at.get(id).and_then(|&i| self.areas.get(i))
    }

    /// The resolved region of a named area.
    pub fn region(&self, id: &AreaId) -> Option<&Region> {
        self.area_at
            .get(id)
            .and_then(|&i| self.index.area(index_u32(i)))
    }

    /// Everyone, in file order: a view that counts them, finds them by position, and
    /// builds each [`Person`] as it is iterated.
    pub fn people(&self) -> People<'_> {
        People {
            roster: &self.people,
        }
    }

    /// Every named area, in file order.
    pub fn areas(&self) -> &[NamedArea] {
        &self.areas
    }

    /// Every loudspeaker, in file order.
    pub fn speakers(&self) -> &[Speaker] {
        &self.speakers
    }

    /// The loudspeaker with this id.
    pub fn speaker(&self, id: &SpeakerId) -> Option<&Speaker> {
        self.speaker_at.get(id).and_then(|&i| self.speakers.get(i))
    }

    /// The geofence index (point ids are positions in [`Directory::people`], area ids
    /// positions in [`Directory::areas`]).
    pub fn index(&self) -> &GeoIndex {
        &self.index
    }

    /// The person's supervisor, their supervisor, and so on up to the top (the person
    /// themself not included). Empty for an unknown id.
    pub fn supervisor_chain(&self, id: &PersonId) -> Vec<Person> {
        let mut chain = Vec::new();
        let mut current = self.person_at.get(&self.people, id.as_str());
        // Cycles are refused in `new`; the bound is a second guard.
        while let Some(i) = current {
            if chain.len() >= self.people.len() {
                break;
            }
            current = self
                .people
                .supervisor(i)
                .and_then(|s| self.person_at.get(&self.people, s.as_str()));
            if let Some(s) = current.and_then(|s| self.people.get(s)) {
                chain.push(s);
            }
        }
        chain
    }
}

/// Everyone in a [`Directory`], in file order ([`Directory::people`]). Iterating builds
/// each [`Person`] from the directory's columns.
#[derive(Clone, Copy, Debug)]
pub struct People<'a> {
    roster: &'a Roster,
}

impl<'a> People<'a> {
    /// Number of people.
    pub fn len(&self) -> usize {
        self.roster.len()
    }

    /// Whether the directory has nobody.
    pub fn is_empty(&self) -> bool {
        self.roster.len() == 0
    }

    /// The person at this position (file order; also the point ids of
    /// [`Directory::index`]).
    pub fn get(&self, at: usize) -> Option<Person> {
        self.roster.get(at)
    }

    /// The id of the person at this position, without building the person.
    pub fn id(&self, at: usize) -> Option<&'a str> {
        self.roster.id(at)
    }

    /// Everyone, built one by one.
    pub fn iter(&self) -> PeopleIter<'a> {
        PeopleIter {
            roster: self.roster,
            next: 0,
            end: self.roster.len(),
        }
    }

    /// The people with this role, built one by one; the others are skipped without
    /// being built (a field-crew scan of a million residents builds only the crews).
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = Person> + 'a {
        let roster = self.roster;
        (0..roster.len())
            .filter(move |&i| roster.role(i) == Some(role))
            .filter_map(move |i| roster.get(i))
    }
}

impl<'a> IntoIterator for People<'a> {
    type Item = Person;
    type IntoIter = PeopleIter<'a>;
    fn into_iter(self) -> PeopleIter<'a> {
        self.iter()
    }
}

/// Iterator over [`People`], building each [`Person`].
#[derive(Clone, Debug)]
pub struct PeopleIter<'a> {
    roster: &'a Roster,
    next: usize,
    end: usize,
}

impl Iterator for PeopleIter<'_> {
    type Item = Person;
    fn next(&mut self) -> Option<Person> {
        while self.next < self.end {
            let at = self.next;
            self.next += 1;
            // Every position below `len` materializes; the loop only guards the type.
            if let Some(p) = self.roster.get(at) {
                return Some(p);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.next);
        (n, Some(n))
    }
}

impl DoubleEndedIterator for PeopleIter<'_> {
    fn next_back(&mut self) -> Option<Person> {
        while self.end > self.next {
            self.end -= 1;
            if let Some(p) = self.roster.get(self.end) {
                return Some(p);
            }
        }
        None
    }
}

impl ExactSizeIterator for PeopleIter<'_> {}

/// Finds people by id through their position in the people list. It stores 4 bytes per
/// person instead of a copy of the id (a `HashMap<PersonId, usize>` costs about 70 bytes
/// per person with the id's own allocation), which matters for a district of a million.
struct PersonIndex {
    table: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl std::fmt::Debug for PersonIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonIndex")
            .field("len", &self.table.len())
            .finish()
    }
}

impl PersonIndex {
    fn with_capacity(n: usize) -> PersonIndex {
        PersonIndex {
            table: hashbrown::HashTable::with_capacity(n),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    /// The position of the person with this id.
    fn get(&self, people: &Roster, id: &str) -> Option<usize> {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(id);
        self.table
            .find(hash, |&i| people.id(i as usize) == Some(id))
            .map(|&i| i as usize)
    }

    /// Indexes person `at`; if their id is already indexed, returns the earlier
    /// position and indexes nothing.
    fn insert(&mut self, people: &Roster, at: usize) -> Option<usize> {
        let id = people.id(at)?;
        if let Some(first) = self.get(people, id) {
            return Some(first);
        }
        self.insert_new(people, at);
        None
    }

    /// Gives back room reserved for far more people than came (the loader guesses
    /// the count from the file size): a table over half empty is rebuilt to fit.
    fn shrink_if_sparse(&mut self, people: &Roster) {
        use std::hash::BuildHasher;
        if self.table.capacity() / 2 > self.table.len() {
            let hasher = &self.hasher;
            self.table
                .shrink_to_fit(|&i| hasher.hash_one(people.id(i as usize).unwrap_or("")));
        }
    }

    /// Indexes person `at`, whose id the caller just looked up and did not find (the
    /// loader's duplicate check): the table is probed once more, not twice.
    fn insert_new(&mut self, people: &Roster, at: usize) {
        use std::hash::BuildHasher;
        let Some(id) = people.id(at) else {
            return;
        };
        let hash = self.hasher.hash_one(id);
        let hasher = &self.hasher;
        self.table.insert_unique(hash, index_u32(at), |&i| {
            hasher.hash_one(people.id(i as usize).unwrap_or(""))
        });
    }
}

fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn check_supervisor_cycles(people: &Roster, person_at: &PersonIndex) -> Result<(), DirectoryError> {
    let id_of = |i: usize| PersonId::from(people.id(i).unwrap_or(""));
    // 0 = not seen, 1 = on the current walk, 2 = known to reach the top. Only people
    // with a supervisor can be on a loop: the walks start from them.
    let mut state = vec![0u8; people.len()];
    for (start, _) in people.supervised() {
        let mut path = Vec::new();
        let mut cur = Some(start);
        while let Some(i) = cur {
            match state.get(i).copied() {
                Some(0) => {
                    state[i] = 1;
                    path.push(i);
                    cur = people
                        .supervisor(i)
                        .and_then(|s| person_at.get(people, s.as_str()));
                }
                Some(1) => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle: Vec<PersonId> = path
                        .get(from..)
                        .unwrap_or(&[])
                        .iter()
                        .map(|&p| id_of(p))
                        .collect();
                    cycle.push(id_of(i));
                    return Err(DirectoryError::SupervisorCycle { cycle });
                }
                _ => break,
            }
        }
        for p in path {
            state[p] = 2;
        }
    }
    Ok(())
}

/// Reads the people CSV (format in the module documentation). Returns the people
/// imported and the rows rejected, with reasons; never fails as a whole.
pub fn load_people_csv<R: std::io::Read>(
    reader: R,
    default_country: &str,
) -> (Vec<Person>, Vec<RejectedRow>) {
    let (people, _lines, rejected, _index) = load_people_csv_lines(reader, default_country, 0);
    let people = (0..people.len()).filter_map(|i| people.get(i)).collect();
    (people, rejected)
}

/// Columns of the people CSV, by position in the header.
struct Columns {
    id: usize,
    name: usize,
    role: usize,
    phones: usize,
    supervisor: Option<usize>,
    areas: Option<usize>,
    lon: Option<usize>,
    lat: Option<usize>,
    town: Option<usize>,
    beidou: Option<usize>,
    mesh: Option<usize>,
    sbd: Option<usize>,
    app: Option<usize>,
}

/// The people, the line each came from (same order), the rejected rows, and the people
/// indexed by id (positions in the people list).
type LoadedPeople = (Roster, Vec<u32>, Vec<RejectedRow>, PersonIndex);

/// Reads the people CSV into the directory's columns. `expected_rows` (a guess, 0 for
/// none) sizes the id index and the columns up front: growing them by doubling
/// re-hashes every id several times over a million rows.
fn load_people_csv_lines<R: std::io::Read>(
    reader: R,
    default_country: &str,
    expected_rows: usize,
) -> LoadedPeople {
    let mut rejected = Vec::new();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        // No csv-level trimming: every field is trimmed where it is read (`parse_person`),
        // and trimming whole records first cost a tenth of a million-row load.
        .from_reader(reader);
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h
            .iter()
            .map(|c| {
                c.trim()
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_lowercase()
            })
            .collect(),
        Err(e) => {
            rejected.push(RejectedRow {
                line: 1,
                reason: format!("cannot read the header: {e}"),
                kept: false,
            });
            return (
                Roster::default(),
                Vec::new(),
                rejected,
                PersonIndex::with_capacity(0),
            );
        }
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let required = ["id", "name", "role", "phones"];
    let missing: Vec<&str> = required.into_iter().filter(|c| col(c).is_none()).collect();
    let (Some(id), Some(name), Some(role), Some(phones)) =
        (col("id"), col("name"), col("role"), col("phones"))
    else {
        rejected.push(RejectedRow {
            line: 1,
            reason: format!("header is missing column(s): {}", missing.join(", ")),
            kept: false,
        });
        return (
            Roster::default(),
            Vec::new(),
            rejected,
            PersonIndex::with_capacity(0),
        );
    };
    let cols = Columns {
        id,
        name,
        role,
        phones,
        supervisor: col("supervisor"),
        areas: col("areas"),
        lon: col("lon"),
        lat: col("lat"),
        town: col("town"),
        beidou: col("beidou"),
        mesh: col("mesh"),
        sbd: col("sbd"),
        app: col("app"),
    };

    // People go straight into the columns the directory keeps (never copied), their
    // lines into a list of their own; the index finds duplicates without copying ids.
    let mut people = Roster::default();
    people.reserve(expected_rows);
    let mut lines: Vec<u32> = Vec::with_capacity(expected_rows);
    let mut seen = PersonIndex::with_capacity(expected_rows);
    let mut record = csv::StringRecord::new();
    let mut fallback_line = 1;
    loop {
        fallback_line += 1;
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record
                    .position()
                    .map(|p| p.line() as usize)
                    .unwrap_or(fallback_line);
                match parse_person(&record, &cols, default_country) {
                    Ok(row) => {
                        let first = seen.get(&people, row.id).and_then(|i| lines.get(i));
                        if let Some(first) = first {
                            rejected.push(RejectedRow {
                                line,
                                reason: format!("duplicate id {} (first on line {first})", row.id),
                                kept: false,
                            });
                            continue;
                        }
                        let id = row.id;
                        let unreachable = row.phone.is_none() && row.addresses.is_empty();
                        match people.push(row) {
                            Ok(at) => {
                                if unreachable {
                                    rejected.push(RejectedRow {
                                        line,
                                        reason: format!(
                                            "person {id}: no address: cannot be reached"
                                        ),
                                        kept: true,
                                    });
                                }
                                lines.push(index_u32(line));
                                seen.insert_new(&people, at);
                            }
                            Err(RosterFull) => rejected.push(RejectedRow {
                                line,
                                reason: format!("person {id}: {}", DirectoryError::TooLarge),
                                kept: false,
                            }),
                        }
                    }
                    Err(reason) => rejected.push(RejectedRow {
                        line,
                        reason,
                        kept: false,
                    }),
                }
            }
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| p.line() as usize)
                    .unwrap_or(fallback_line);
                rejected.push(RejectedRow {
                    line,
                    reason: format!("unreadable row: {e}"),
                    kept: false,
                });
                // A reader that keeps failing at the same spot (an I/O error) would loop.
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                ) {
                    break;
                }
            }
        }
    }
    people.finish();
    lines.shrink_to_fit();
    seen.shrink_if_sparse(&people);
    (people, lines, rejected, seen)
}

fn parse_person<'r>(
    record: &'r csv::StringRecord,
    cols: &Columns,
    default_country: &str,
) -> Result<Row<'r>, String> {
    let field = |i: usize| record.get(i).unwrap_or("").trim();
    let opt = |i: Option<usize>| i.map(field).unwrap_or("");

    let id = field(cols.id);
    if id.is_empty() {
        return Err("missing id".to_owned());
    }
    let role_text = field(cols.role);
    // Role names are ASCII: compare without building a lowercase copy per row.
    let role = Role::ALL
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(role_text))
        .or_else(|| {
            if role_text.is_ascii() {
                None
            } else {
                Role::parse(&role_text.to_lowercase())
            }
        });
    let role = role.ok_or_else(|| {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!(
            "person {id}: unknown role {role_text:?} (expected one of {})",
            names.join(", ")
        )
    })?;
    let supervisor = Some(opt(cols.supervisor)).filter(|s| !s.is_empty());
    let areas: Vec<&str> = opt(cols.areas)
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();

    let (lon, lat) = (opt(cols.lon), opt(cols.lat));
    let location = match (lon.is_empty(), lat.is_empty()) {
        (true, true) => None,
        (false, false) => {
            let lon_v: f64 = lon
                .parse()
                .map_err(|_| format!("person {id}: lon {lon:?} is not a number"))?;
            let lat_v: f64 = lat
                .parse()
                .map_err(|_| format!("person {id}: lat {lat:?} is not a number"))?;
            validate_position([lon_v, lat_v], || "location".to_owned())
                .map_err(|e| format!("person {id}: {e}"))?;
            Some([lon_v, lat_v])
        }
        _ => {
            return Err(format!(
                "person {id}: lon and lat must both be given or both be empty"
            ));
        }
    };

    // The first address, when it is a phone number that packs, is kept packed (no
    // allocation for the million residents with one phone); `addresses` holds the rest.
    let mut phone: Option<u64> = None;
    let mut addresses = Vec::new();
    for (k, raw) in field(cols.phones)
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let address = match PhoneNumber::parse_packed(raw, default_country) {
            Some(packed) if phone.is_none() && addresses.is_empty() => {
                phone = Some(packed);
                continue;
            }
            Some(packed) if phone == Some(packed) => continue,
            Some(packed) => PhoneNumber::unpack(packed).map(Address::Phone),
            None => None,
        };
        let address = match address {
            Some(a) => a,
            None => PhoneNumber::parse(raw, default_country)
                .map(Address::Phone)
                .map_err(|e| format!("person {id}: phone {}: {e}", k + 1))?,
        };
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    let columns: [(&str, Option<usize>, AddressParser<'_>); 4] = [
        ("beidou", cols.beidou, &parse_beidou_card),
        ("mesh", cols.mesh, &parse_mesh_node),
        ("sbd", cols.sbd, &parse_sbd_imei),
        ("app", cols.app, &parse_app_id),
    ];
    for (label, column, parse) in columns {
        for (k, raw) in opt(column)
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let address = parse(raw).map_err(|e| format!("person {id}: {label} {}: {e}", k + 1))?;
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
    }

    Ok(Row {
        id,
        name: field(cols.name),
        role,
        supervisor,
        areas,
        location,
        town: opt(cols.town),
        phone,
        addresses,
    })
}

/// Turns one `;`-separated value of an address column into an address, or says why not.
type AddressParser<'a> = &'a dyn Fn(&str) -> Result<Address, String>;

fn parse_beidou_card(raw: &str) -> Result<Address, String> {
    if raw.is_empty()
        || raw.len() > BEIDOU_CARD_MAX_DIGITS
        || !raw.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "card number {raw:?} must be 1 to {BEIDOU_CARD_MAX_DIGITS} digits"
        ));
    }
    Ok(Address::BeidouCard(raw.to_owned()))
}

fn parse_mesh_node(raw: &str) -> Result<Address, String> {
    let bad = || {
        format!("node {raw:?} must be ! and 8 hex digits (like !a1b2c3d4) or a decimal node number")
    };
    let node = if let Some(hex) = raw.strip_prefix('!') {
        // Exactly 8 digits: a dropped digit would silently name another radio.
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(hex, 16).map_err(|_| bad())?
    } else {
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        raw.parse::<u32>().map_err(|_| bad())?
    };
    // The broadcast number would send one person's warning (and its ack code) to every
    // radio in range; 0 is no node at all.
    if node == u32::MAX || node == 0 {
        return Err(format!(
            "node {raw:?} is reserved (0 or the broadcast !ffffffff), not a radio"
        ));
    }
    Ok(Address::MeshNode(node))
}

fn parse_sbd_imei(raw: &str) -> Result<Address, String> {
    if raw.len() != SBD_IMEI_DIGITS || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("IMEI {raw:?} must be {SBD_IMEI_DIGITS} digits"));
    }
    Ok(Address::SbdImei(raw.to_owned()))
}

fn parse_app_id(raw: &str) -> Result<Address, String> {
    let n = raw.chars().count();
    if n > APP_ID_MAX_CHARS {
        // Not echoed: a runaway cell could be megabytes.
        return Err(format!(
            "id of {n} characters is longer than {APP_ID_MAX_CHARS}"
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(format!("id {raw:?} contains a control character"));
    }
    Ok(Address::App(raw.to_owned()))
}

/// Reads the speakers CSV (format in the module documentation). Returns the speakers
/// read and the rows rejected, with reasons starting `speakers.csv:`; never fails as a
/// whole. Areas are not checked here (see [`load_from_dir_with`]).
pub fn load_speakers_csv<R: std::io::Read>(reader: R) -> (Vec<Speaker>, Vec<RejectedRow>) {
    let (speakers, _lines, rejected) = load_speakers_csv_lines(reader);
    (speakers, rejected)
}

/// [`load_speakers_csv`], with the line each speaker came from (same order).
fn load_speakers_csv_lines<R: std::io::Read>(
    reader: R,
) -> (Vec<Speaker>, Vec<usize>, Vec<RejectedRow>) {
    let mut lines: Vec<usize> = Vec::new();
    let mut rejected = Vec::new();
    let mut speakers: Vec<Speaker> = Vec::new();
    let mut first_line: HashMap<SpeakerId, usize> = HashMap::new();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let reject = |rejected: &mut Vec<RejectedRow>, line: usize, reason: String| {
        rejected.push(RejectedRow {
            line,
            reason: format!("speakers.csv: {reason}"),
            kept: false,
        });
    };
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h
            .iter()
            .map(|c| c.trim_start_matches('\u{feff}').trim().to_lowercase())
            .collect(),
        Err(e) => {
            reject(&mut rejected, 1, format!("cannot read the header: {e}"));
            return (speakers, lines, rejected);
        }
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(id_col), Some(device_col), Some(group_col)) =
        (col("id"), col("device"), col("group"))
    else {
        let missing: Vec<&str> = ["id", "device", "group"]
            .into_iter()
            .filter(|c| col(c).is_none())
            .collect();
        reject(
            &mut rejected,
            1,
            format!("header is missing column(s): {}", missing.join(", ")),
        );
        return (speakers, lines, rejected);
    };
    let (name_col, town_col, lon_col, lat_col, areas_col) = (
        col("name"),
        col("town"),
        col("lon"),
        col("lat"),
        col("areas"),
    );
    let mut record = csv::StringRecord::new();
    let mut fallback_line = 1;
    loop {
        fallback_line += 1;
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record
                    .position()
                    .map(|p| p.line() as usize)
                    .unwrap_or(fallback_line);
                let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim();
                let id = field(Some(id_col));
                if id.is_empty() {
                    reject(&mut rejected, line, "missing id".to_owned());
                    continue;
                }
                let (device, group) = (field(Some(device_col)), field(Some(group_col)));
                if device.is_empty() || group.is_empty() {
                    reject(
                        &mut rejected,
                        line,
                        format!("speaker {id}: device and group are required"),
                    );
                    continue;
                }
                let (lon, lat) = (field(lon_col), field(lat_col));
                let location = match (lon.is_empty(), lat.is_empty()) {
                    (true, true) => None,
                    (false, false) => {
                        let parsed = match (lon.parse::<f64>(), lat.parse::<f64>()) {
                            (Ok(x), Ok(y)) => Ok([x, y]),
                            _ => Err(format!(
                                "speaker {id}: lon/lat {lon:?}/{lat:?} is not a number"
                            )),
                        }
                        .and_then(|p| {
                            validate_position(p, || "location".to_owned())
                                .map(|()| p)
                                .map_err(|e| format!("speaker {id}: {e}"))
                        });
                        match parsed {
                            Ok(p) => Some(p),
                            Err(reason) => {
                                reject(&mut rejected, line, reason);
                                continue;
                            }
                        }
                    }
                    _ => {
                        reject(
                            &mut rejected,
                            line,
                            format!(
                                "speaker {id}: lon and lat must both be given or both be empty"
                            ),
                        );
                        continue;
                    }
                };
                let areas: Vec<AreaId> = field(areas_col)
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(AreaId::from)
                    .collect();
                if location.is_none() && areas.is_empty() {
                    reject(
                        &mut rejected,
                        line,
                        format!("speaker {id}: no location and no area: no alert could sound it"),
                    );
                    continue;
                }
                let sid = SpeakerId::from(id);
                if let Some(first) = first_line.get(&sid) {
                    reject(
                        &mut rejected,
                        line,
                        format!("duplicate speaker id {id} (first on line {first})"),
                    );
                    continue;
                }
                first_line.insert(sid.clone(), line);
                let name = Some(field(name_col))
                    .filter(|n| !n.is_empty())
                    .unwrap_or(id);
                speakers.push(Speaker {
                    id: sid,
                    name: name.to_owned(),
                    town: field(town_col).to_owned(),
                    location,
                    areas,
                    device: DeviceId::from(device),
                    group: group.to_owned(),
                });
                lines.push(line);
            }
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| p.line() as usize)
                    .unwrap_or(fallback_line);
                reject(&mut rejected, line, format!("unreadable row: {e}"));
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                ) {
                    break;
                }
            }
        }
    }
    (speakers, lines, rejected)
}

/// Reads the areas GeoJSON (format in the module documentation). Errors name the
/// feature's index and id.
pub fn load_areas_geojson(text: &str) -> Result<Vec<NamedArea>, DirectoryError> {
    Ok(load_areas_with_population(text)?
        .into_iter()
        .map(|(area, _)| area)
        .collect())
}

/// Reads the areas GeoJSON like [`load_areas_geojson`], with each area's `population`
/// property (`None`: absent, `null` or empty). A population that is not a whole,
/// non-negative number fails the load like any other bad property, naming the feature.
pub fn load_areas_with_population(
    text: &str,
) -> Result<Vec<(NamedArea, Option<u64>)>, DirectoryError> {
    let gj: geojson::GeoJson = text.parse().map_err(|e| DirectoryError::GeoJson {
        reason: format!("{e}"),
    })?;
    let geojson::GeoJson::FeatureCollection(fc) = gj else {
        return Err(DirectoryError::GeoJson {
            reason: "expected a FeatureCollection".to_owned(),
        });
    };
    let mut areas = Vec::with_capacity(fc.features.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, feature) in fc.features.iter().enumerate() {
        let (area, population) = parse_feature(index, feature)?;
        if let Some(first) = seen.insert(area.id.0.clone(), index) {
            return Err(DirectoryError::Feature {
                index,
                id: Some(area.id.0.clone()),
                reason: format!("duplicate id (first in feature {first})"),
            });
        }
        areas.push((area, population));
    }
    Ok(areas)
}

fn parse_feature(
    index: usize,
    feature: &geojson::Feature,
) -> Result<(NamedArea, Option<u64>), DirectoryError> {
    let empty = serde_json::Map::new();
    let props = feature.properties.as_ref().unwrap_or(&empty);
    let text = |key: &str| -> Option<String> {
        match props.get(key)? {
            serde_json::Value::String(s) => Some(s.trim().to_owned()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let id = text("id").or_else(|| match &feature.id {
        Some(geojson::feature::Id::String(s)) => Some(s.clone()),
        Some(geojson::feature::Id::Number(n)) => Some(n.to_string()),
        None => None,
    });
    let fail = |reason: String| DirectoryError::Feature {
        index,
        id: id.clone(),
        reason,
    };
    let Some(area_id) = id.clone().filter(|s| !s.is_empty()) else {
        return Err(fail("missing property id".to_owned()));
    };
    let kind_text = text("kind").ok_or_else(|| fail("missing property kind".to_owned()))?;
    let kind: AreaKind = serde_json::from_value(serde_json::Value::String(kind_text.clone())).map_err(|_| {
        fail(format!(
            "unknown kind {kind_text:?} (expected town, village, hazard_point, reservoir, river_reach or underpass)"
        ))
    })?;
    let name = text("name")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| fail("missing property name".to_owned()))?;
    let town = text("town").unwrap_or_default();
    let geometry = feature
        .geometry
        .as_ref()
        .ok_or_else(|| fail("has no geometry".to_owned()))?;
    let spec = match &geometry.value {
        geojson::GeometryValue::Polygon { coordinates } => AreaSpec::Polygon {
            coordinates: rings(coordinates, 0).map_err(|e| fail(e.to_string()))?,
        },
        geojson::GeometryValue::MultiPolygon { coordinates } => AreaSpec::MultiPolygon {
            coordinates: coordinates
                .iter()
                .enumerate()
                .map(|(i, p)| rings(p, i))
                .collect::<Result<_, _>>()
                .map_err(|e| fail(e.to_string()))?,
        },
        geojson::GeometryValue::Point { coordinates } => {
            let center =
                position(coordinates, || "point".to_owned()).map_err(|e| fail(e.to_string()))?;
            let radius_m = props
                .get("radius_m")
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| fail("a Point needs a numeric radius_m property".to_owned()))?;
            AreaSpec::Circle { center, radius_m }
        }
        other => {
            return Err(fail(format!(
                "unsupported geometry {} (Polygon, MultiPolygon or Point with radius_m)",
                other.type_name()
            )));
        }
    };
    spec.validate().map_err(|e| fail(e.to_string()))?;
    let population =
        match props.get("population") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => None,
            Some(serde_json::Value::String(s)) => Some(s.trim().parse::<u64>().map_err(|_| {
                fail(format!(
                    "population {s:?} is not a whole number of residents"
                ))
            })?),
            Some(serde_json::Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                fail(format!("population {n} is not a whole number of residents"))
            })?),
            Some(other) => {
                return Err(fail(format!(
                    "population {other} is not a whole number of residents"
                )));
            }
        };
    Ok((
        NamedArea {
            id: AreaId::from(area_id),
            kind,
            name,
            town,
            geometry: spec,
        },
        population,
    ))
}

fn position(p: &geojson::Position, at: impl FnOnce() -> String) -> Result<[f64; 2], AreaError> {
    match p.as_slice() {
        [lon, lat, ..] => Ok([*lon, *lat]),
        other => Err(AreaError::ShortPosition {
            at: at(),
            len: other.len(),
        }),
    }
}

fn rings(
    polygon: &[Vec<geojson::Position>],
    index: usize,
) -> Result<Vec<Vec<[f64; 2]>>, AreaError> {
    polygon
        .iter()
        .enumerate()
        .map(|(r, ring)| {
            ring.iter()
                .enumerate()
                .map(|(k, p)| position(p, || format!("polygon {index}, ring {r}, position {k}")))
                .collect()
        })
        .collect()
}

/// Loads `areas.geojson` and `people.csv` from a folder, national phone numbers in
/// [`DEFAULT_COUNTRY`]. See [`load_from_dir_with`].
pub fn load_from_dir(
    path: impl AsRef<Path>,
) -> Result<(Directory, Vec<RejectedRow>), DirectoryError> {
    load_from_dir_with(path, DEFAULT_COUNTRY)
}

/// Loads `areas.geojson` and `people.csv` from a folder. Bad areas fail the load (an
/// alert area must never silently shrink). Bad people rows are rejected and reported;
/// a person whose supervisor or area is not in the directory (often because that row
/// was itself rejected) is kept without that reference, so they are still reached,
/// and reported with `kept: true`. Supervisor cycles fail the load.
pub fn load_from_dir_with(
    path: impl AsRef<Path>,
    default_country: &str,
) -> Result<(Directory, Vec<RejectedRow>), DirectoryError> {
    let dir = path.as_ref();
    let areas_path = dir.join("areas.geojson");
    let text = std::fs::read_to_string(&areas_path).map_err(|source| DirectoryError::Io {
        path: areas_path,
        source,
    })?;
    let (areas, populations): (Vec<NamedArea>, Vec<Option<u64>>) =
        load_areas_with_population(&text)?.into_iter().unzip();
    let people_path = dir.join("people.csv");
    let file = std::fs::File::open(&people_path).map_err(|source| DirectoryError::Io {
        path: people_path,
        source,
    })?;
    // A resident's row is rarely under 48 bytes (id, name, role, location, phone);
    // a guess too high only reserves address space the columns give back at the end.
    let expected_rows = file
        .metadata()
        .map_or(0, |m| usize::try_from(m.len() / 48).unwrap_or(0))
        .min(EXPECTED_ROWS_MAX);
    let (mut people, lines, mut rejected, person_ids) = load_people_csv_lines(
        std::io::BufReader::new(file),
        default_country,
        expected_rows,
    );

    let area_ids: HashSet<&AreaId> = areas.iter().map(|a| &a.id).collect();
    // Which supervisors are missing is decided against the index, which the roster
    // cannot lend while it is being changed: first the verdicts, then the removal.
    let known_supervisors: Vec<bool> = people
        .supervised()
        .map(|(_, s)| person_ids.get(&people, s.as_str()).is_some())
        .collect();
    let no_supervisor = people.retain_supervisors(&known_supervisors);
    let no_area = people.retain_areas(|a| area_ids.contains(a));
    let line_of = |i: usize| lines.get(i).map_or(0, |&l| l as usize);
    let id_of = |i: usize| people.id(i).unwrap_or("");
    for (i, s) in no_supervisor {
        rejected.push(RejectedRow {
            line: line_of(i),
            reason: format!(
                "person {}: supervisor {s} is not in the directory; kept without a supervisor",
                id_of(i)
            ),
            kept: true,
        });
    }
    for (i, a) in no_area {
        rejected.push(RejectedRow {
            line: line_of(i),
            reason: format!(
                "person {}: area {a} is not in areas.geojson; kept without it",
                id_of(i)
            ),
            kept: true,
        });
    }
    // Stable: a person's supervisor comes before their areas, as pushed.
    rejected.sort_by_key(|r| r.line);

    // Speakers are optional; their rejections follow the people's.
    let speakers_path = dir.join("speakers.csv");
    let mut speakers = Vec::new();
    match std::fs::File::open(&speakers_path) {
        Ok(file) => {
            let (read, lines, mut bad) = load_speakers_csv_lines(std::io::BufReader::new(file));
            for (mut sp, line) in read.into_iter().zip(lines) {
                let (known, unknown): (Vec<AreaId>, Vec<AreaId>) =
                    sp.areas.drain(..).partition(|a| area_ids.contains(a));
                sp.areas = known;
                let no_target = sp.location.is_none() && sp.areas.is_empty();
                for a in unknown {
                    bad.push(RejectedRow {
                        line,
                        reason: format!(
                            "speakers.csv: speaker {}: area {a} is not in areas.geojson; {}",
                            sp.id,
                            if no_target {
                                "no location and no other area: dropped"
                            } else {
                                "kept without it"
                            }
                        ),
                        kept: !no_target,
                    });
                }
                if !no_target {
                    speakers.push(sp);
                }
            }
            bad.sort_by_key(|r| r.line);
            rejected.extend(bad);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DirectoryError::Io {
                path: speakers_path,
                source,
            });
        }
    }
    // Only references were changed above, never ids or order: the index still holds.
    let mut directory = Directory::build(people, areas, person_ids)?.with_speakers(speakers)?;
    // Same order as the areas just built from.
    directory.populations = populations;
    Ok((directory, rejected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Bearer;

    fn square(x0: f64, y0: f64, s: f64) -> AreaSpec {
        AreaSpec::Polygon {
            coordinates: vec![vec![
                [x0, y0],
                [x0 + s, y0],
                [x0 + s, y0 + s],
                [x0, y0 + s],
                [x0, y0],
            ]],
        }
    }

    fn area(id: &str, kind: AreaKind, geometry: AreaSpec) -> NamedArea {
        NamedArea {
            id: id.into(),
            kind,
            name: id.to_owned(),
            town: "t".to_owned(),
            geometry,
        }
    }

    fn person(
        id: &str,
        role: Role,
        sup: Option<&str>,
        areas: &[&str],
        loc: Option<[f64; 2]>,
    ) -> Person {
        Person {
            id: id.into(),
            name: id.to_owned(),
            role,
            supervisor: sup.map(PersonId::from),
            areas: areas.iter().map(|a| AreaId::from(*a)).collect(),
            location: loc,
            town: "t".to_owned(),
            addresses: vec![Address::Phone(
                PhoneNumber::parse("13800138000", "86").unwrap(),
            )],
        }
    }

    /// A town 0.1° square with two villages and a hazard point; officials, heads,
    /// a warden and residents.
    fn sample() -> Directory {
        let areas = vec![
            area("town", AreaKind::Town, square(116.0, 40.0, 0.1)),
            area("v1", AreaKind::Village, square(116.0, 40.0, 0.05)),
            area("v2", AreaKind::Village, square(116.05, 40.0, 0.05)),
            area(
                "hp",
                AreaKind::HazardPoint,
                AreaSpec::Circle {
                    center: [116.01, 40.01],
                    radius_m: 300.0,
                },
            ),
        ];
        let people = vec![
            person("d1", Role::DistrictOfficial, None, &[], None),
            person(
                "t1",
                Role::TownOfficial,
                Some("d1"),
                &["town"],
                Some([116.09, 40.09]),
            ),
            person(
                "h1",
                Role::VillageHead,
                Some("t1"),
                &["v1"],
                Some([116.02, 40.02]),
            ),
            person(
                "h2",
                Role::VillageHead,
                Some("t1"),
                &["v2"],
                Some([116.07, 40.02]),
            ),
            // Answers for both v1 and the hazard point: the hazard point is more specific.
            person(
                "w1",
                Role::HazardWarden,
                Some("h1"),
                &["hp", "v1"],
                Some([116.01, 40.01]),
            ),
            person("r1", Role::Resident, None, &["v1"], Some([116.03, 40.03])),
            person("r2", Role::Resident, None, &[], Some([116.06, 40.03])),
            person("r3", Role::Resident, None, &[], None),
        ];
        Directory::new(people, areas).unwrap()
    }

    fn ids(v: &[&str]) -> Vec<PersonId> {
        v.iter().map(|s| PersonId::from(*s)).collect()
    }

    #[test]
    fn resolve_named_village_reaches_its_responsible_once() {
        let d = sample();
        let r = d.resolve(&[AreaSpec::Named { id: "v1".into() }]).unwrap();
        // h1 is located in v1 and responsible: appears once, in `responsible`.
        assert_eq!(
            r.responsible,
            vec![
                ("h1".into(), "v1".into()),
                ("t1".into(), "town".into()),
                ("w1".into(), "hp".into())
            ]
        );
        // r1 is a resident (never responsible) located inside.
        assert_eq!(r.located, ids(&["r1"]));
        let areas: Vec<&str> = r.areas.iter().map(AreaId::as_str).collect();
        // v2 only shares a border with v1 and is not included.
        assert_eq!(areas, vec!["hp", "town", "v1"]);
        assert_eq!(r.person_count(), 4);
    }

    #[test]
    fn resolve_union_counts_each_person_once() {
        let d = sample();
        let specs = vec![
            AreaSpec::Named { id: "v1".into() },
            square(116.0, 40.0, 0.1),
            AreaSpec::Circle {
                center: [116.02, 40.02],
                radius_m: 2000.0,
            },
        ];
        let r = d.resolve(&specs).unwrap();
        let mut all: Vec<PersonId> = r.located.clone();
        all.extend(r.responsible.iter().map(|(p, _)| p.clone()));
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "someone appears twice");
        assert_eq!(r.located, ids(&["r1", "r2"]));
        let resp: Vec<&str> = r.responsible.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(resp, vec!["h1", "h2", "t1", "w1"]);
    }

    #[test]
    fn resolve_errors_name_the_entry() {
        let d = sample();
        let err = d
            .resolve(&[
                square(116.0, 40.0, 0.1),
                AreaSpec::Named { id: "nope".into() },
            ])
            .unwrap_err();
        assert_eq!(err.to_string(), "area 1: unknown named area \"nope\"");
        assert_eq!(d.resolve(&[]).unwrap_err(), AreaError::NoArea);
    }

    fn speaker(id: &str, loc: Option<[f64; 2]>, areas: &[&str]) -> Speaker {
        Speaker {
            id: id.into(),
            name: id.to_owned(),
            town: "t".to_owned(),
            location: loc,
            areas: areas.iter().map(|a| AreaId::from(*a)).collect(),
            device: "spk-1".into(),
            group: format!("g-{id}"),
        }
    }

    #[test]
    fn speakers_resolve_by_location_and_by_covered_area() {
        let d = sample()
            .with_speakers(vec![
                // Stands in v1.
                speaker("s1", Some([116.02, 40.03]), &[]),
                // Stands in v2, no area.
                speaker("s2", Some([116.07, 40.03]), &[]),
                // No location; covers the hazard point.
                speaker("s3", None, &["hp"]),
                // Stands outside the town but covers v2.
                speaker("s4", Some([117.0, 41.0]), &["v2"]),
            ])
            .unwrap();
        let r = d.resolve(&[AreaSpec::Named { id: "v1".into() }]).unwrap();
        let got: Vec<&str> = r.speakers.iter().map(SpeakerId::as_str).collect();
        // v1 touches hp (s3 covers it); s2 and s4 belong to v2 which only shares a border.
        assert_eq!(got, vec!["s1", "s3"]);
        // A person count is unchanged by speakers.
        assert_eq!(r.person_count(), 4);
        let r = d.resolve(&[AreaSpec::Named { id: "v2".into() }]).unwrap();
        let got: Vec<&str> = r.speakers.iter().map(SpeakerId::as_str).collect();
        assert_eq!(got, vec!["s2", "s4"]);
        assert_eq!(d.speaker(&"s4".into()).unwrap().group, "g-s4");
        assert_eq!(d.speakers().len(), 4);
        // Validation.
        let dup = sample().with_speakers(vec![
            speaker("x", None, &["v1"]),
            speaker("x", None, &["v1"]),
        ]);
        assert_eq!(
            dup.unwrap_err().to_string(),
            "speaker id x appears more than once"
        );
        let bad = sample().with_speakers(vec![speaker("x", None, &["nowhere"])]);
        assert_eq!(
            bad.unwrap_err().to_string(),
            "speaker x: area nowhere is not in the directory"
        );
        let bad = sample().with_speakers(vec![speaker("x", Some([200.0, 0.0]), &[])]);
        assert!(
            bad.unwrap_err()
                .to_string()
                .starts_with("speaker x: location")
        );
    }

    #[test]
    fn speakers_csv_rows_are_checked_and_loaded_from_the_folder() {
        let csv = "\
id,name,town,lon,lat,areas,device,group
s1,王家沟广播,镇,116.02,40.02,v1,spk-1,wangjiagou
,无名,镇,116.0,40.0,,spk-1,g
s2,,镇,116.0,,v1,spk-1,g
s3,,镇,,,,spk-1,g
s4,,镇,east,40,,spk-1,g
s5,,镇,116.0,40.0,,,g
s1,again,镇,116.0,40.0,,spk-1,g
s6,,镇,,,v9;hp,spk-2,g6
s7,,镇,,,v9,spk-2,g7
";
        let (speakers, rejected) = load_speakers_csv(csv.as_bytes());
        let ids: Vec<&str> = speakers.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["s1", "s6", "s7"]);
        assert_eq!(speakers[0].name, "王家沟广播");
        assert_eq!(
            speakers[1].name, "s6",
            "the id stands in for a missing name"
        );
        let lines: Vec<(usize, &str)> = rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (3, "speakers.csv: missing id"),
                (
                    4,
                    "speakers.csv: speaker s2: lon and lat must both be given or both be empty"
                ),
                (
                    5,
                    "speakers.csv: speaker s3: no location and no area: no alert could sound it"
                ),
                (
                    6,
                    "speakers.csv: speaker s4: lon/lat \"east\"/\"40\" is not a number"
                ),
                (7, "speakers.csv: speaker s5: device and group are required"),
                (8, "speakers.csv: duplicate speaker id s1 (first on line 2)"),
            ]
        );
        let (none, rejected) = load_speakers_csv("id,name\n".as_bytes());
        assert!(none.is_empty());
        assert_eq!(
            rejected[0].reason,
            "speakers.csv: header is missing column(s): device, group"
        );

        let dir = std::env::temp_dir().join(format!("tocsin-dir-speakers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("areas.geojson"), GEOJSON).unwrap();
        std::fs::write(
            dir.join("people.csv"),
            "id,name,role,phones\nh,甲,village_head,13800138000\n",
        )
        .unwrap();
        let (d, rejected) = load_from_dir(&dir).unwrap();
        assert!(
            d.speakers().is_empty() && rejected.is_empty(),
            "speakers.csv is optional"
        );
        std::fs::write(dir.join("speakers.csv"), csv).unwrap();
        let (d, rejected) = load_from_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let ids: Vec<&str> = d.speakers().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["s1", "s6"]);
        let tail: Vec<(usize, &str, bool)> = rejected
            .iter()
            .filter(|r| r.line >= 9)
            .map(|r| (r.line, r.reason.as_str(), r.kept))
            .collect();
        assert_eq!(
            tail,
            vec![
                (
                    9,
                    "speakers.csv: speaker s6: area v9 is not in areas.geojson; kept without it",
                    true
                ),
                (
                    10,
                    "speakers.csv: speaker s7: area v9 is not in areas.geojson; no location and no other area: dropped",
                    false
                ),
            ]
        );
        let r = d.resolve(&[AreaSpec::Named { id: "hp".into() }]).unwrap();
        let got: Vec<&str> = r.speakers.iter().map(SpeakerId::as_str).collect();
        assert_eq!(got, vec!["s1", "s6"]);
    }

    #[test]
    fn supervisor_chain_walks_to_the_top() {
        let d = sample();
        let chain: Vec<String> = d
            .supervisor_chain(&"w1".into())
            .into_iter()
            .map(|p| p.id.0)
            .collect();
        assert_eq!(chain, vec!["h1", "t1", "d1"]);
        assert!(d.supervisor_chain(&"d1".into()).is_empty());
        assert!(d.supervisor_chain(&"ghost".into()).is_empty());
        assert_eq!(d.person(&"h2".into()).unwrap().role, Role::VillageHead);
        assert_eq!(d.area(&"hp".into()).unwrap().kind, AreaKind::HazardPoint);
        assert!(d.region(&"v2".into()).is_some());
        assert_eq!(d.people().len(), 8);
        assert_eq!(d.areas().len(), 4);
    }

    #[test]
    fn directory_validation_refuses_bad_data() {
        let a = || vec![area("v1", AreaKind::Village, square(116.0, 40.0, 0.05))];
        let err = |people: Vec<Person>, areas: Vec<NamedArea>| {
            Directory::new(people, areas).unwrap_err().to_string()
        };

        assert_eq!(
            err(
                vec![
                    person("a", Role::Resident, None, &[], None),
                    person("a", Role::Resident, None, &[], None)
                ],
                a()
            ),
            "person id a appears more than once"
        );
        let mut dup = a();
        dup.extend(a());
        assert_eq!(err(vec![], dup), "area id v1 appears more than once");
        assert_eq!(
            err(
                vec![person("a", Role::VillageHead, Some("zz"), &[], None)],
                a()
            ),
            "person a: supervisor zz is not in the directory"
        );
        assert_eq!(
            err(
                vec![person("a", Role::VillageHead, None, &["v9"], None)],
                a()
            ),
            "person a: area v9 is not in the directory"
        );
        assert_eq!(
            err(
                vec![person(
                    "a",
                    Role::VillageHead,
                    None,
                    &[],
                    Some([f64::NAN, 40.0])
                )],
                a()
            ),
            "person a: location: position [NaN, 40] is not a finite number"
        );
        assert_eq!(
            err(
                vec![],
                vec![area(
                    "x",
                    AreaKind::Village,
                    AreaSpec::Named { id: "v1".into() }
                )]
            ),
            "area x: named area \"x\" is defined as another named area \"v1\"; it needs a geometry"
        );
        assert_eq!(
            err(
                vec![],
                vec![area(
                    "x",
                    AreaKind::HazardPoint,
                    AreaSpec::Circle {
                        center: [116.0, 40.0],
                        radius_m: 0.0
                    }
                )]
            ),
            "area x: circle radius 0 m must be greater than 0 and at most 500000 m"
        );
    }

    #[test]
    fn supervisor_cycles_are_found() {
        let people = vec![
            person("top", Role::DistrictOfficial, None, &[], None),
            person("a", Role::VillageHead, Some("b"), &[], None),
            person("b", Role::TownOfficial, Some("c"), &[], None),
            person("c", Role::TownOfficial, Some("a"), &[], None),
            person("d", Role::GridLead, Some("a"), &[], None),
        ];
        let e = Directory::new(people, vec![]).unwrap_err();
        assert_eq!(e.to_string(), "supervisor cycle: a -> b -> c -> a");
        let selfish = vec![person("s", Role::TownOfficial, Some("s"), &[], None)];
        assert_eq!(
            Directory::new(selfish, vec![]).unwrap_err().to_string(),
            "supervisor cycle: s -> s"
        );
    }

    const CSV: &str = "\
id,name,role,supervisor,areas,lon,lat,town,phones
t1,李明,town_official,,town,116.09,40.09,镇,13800138000
h1,王芳,village_head,t1,v1; hp ,116.02,40.02,镇,13800138001;+8613900139001
,无名,resident,,,116.0,40.0,镇,13800138002
h2,赵强,mayor,t1,v2,116.07,40.02,镇,13800138003
h3,钱勇,grid_lead,t1,v2,116.07,,镇,13800138004
h4,孙丽,grid_lead,t1,v2,east,40.02,镇,13800138005
h5,周杰,grid_lead,t1,v2,190,40.02,镇,13800138006
h6,吴刚,grid_lead,t1,v2,116.07,40.02,镇,13x
h1,郑重,resident,,,116.0,40.0,镇,13800138008
r1,陈静,resident,,,,,镇,
r2,冯雪,RESIDENT,,,116.03,40.03,镇,010-6512-3456
h7,卫东,grid_lead,gone,v2;v9,116.07,40.02,镇,13800138009
";

    #[test]
    fn csv_rows_are_rejected_with_reasons_not_aborted() {
        let (people, rejected) = load_people_csv(CSV.as_bytes(), "86");
        let got: Vec<&str> = people.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(got, vec!["t1", "h1", "r1", "r2", "h7"]);
        let h1 = &people[1];
        assert_eq!(h1.supervisor, Some("t1".into()));
        assert_eq!(h1.areas, vec![AreaId::from("v1"), AreaId::from("hp")]);
        assert_eq!(h1.location, Some([116.02, 40.02]));
        assert_eq!(h1.addresses.len(), 2);
        assert!(people[2].addresses.is_empty());
        assert_eq!(people[3].addresses[0].to_string(), "+861065123456");
        let lines: Vec<(usize, &str, bool)> = rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str(), r.kept))
            .collect();
        assert_eq!(
            lines,
            vec![
                (4, "missing id", false),
                (
                    5,
                    "person h2: unknown role \"mayor\" (expected one of resident, village_head, grid_lead, hazard_warden, reservoir_warden, town_official, district_official, field_crew)",
                    false
                ),
                (
                    6,
                    "person h3: lon and lat must both be given or both be empty",
                    false
                ),
                (7, "person h4: lon \"east\" is not a number", false),
                (
                    8,
                    "person h5: location: position [190, 40.02] is out of range (lon -180..180, lat -90..90)",
                    false
                ),
                (
                    9,
                    "person h6: phone 1: phone number \"13x\" contains a character that is not a digit",
                    false
                ),
                (10, "duplicate id h1 (first on line 3)", false),
                // Imported all the same: they count in an alert's reach and their
                // supervisor is still escalated to.
                (11, "person r1: no address: cannot be reached", true),
            ]
        );
    }

    const OFFGRID_CSV: &str = "\
id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app
a1,甲,village_head,,,116.0,40.0,镇,,0242286,,,
a2,乙,grid_lead,,,116.0,40.0,镇,13800138000,04207733;0242286;0242286,!0a0b0c0d;4294967294,300234010753370,wx-9f3a;wx-9f3a
a3,丙,field_crew,,,,,镇,,,!DEADBEEF,,
a4,丁,field_crew,,,,,镇,,,,,user:42@app
b1,戊,grid_lead,,,,,镇,,02422x6,,,
b2,己,grid_lead,,,,,镇,,12345678901,,,
b3,庚,grid_lead,,,,,镇,,,!0a0b0c0,,
b4,辛,grid_lead,,,,,镇,,,!0a0b0c0g,,
b5,壬,grid_lead,,,,,镇,,,!ffffffff,,
b6,癸,grid_lead,,,,,镇,,,4294967296,,
b7,子,grid_lead,,,,,镇,,,0,,
b8,丑,grid_lead,,,,,镇,,,-5,,
b9,寅,grid_lead,,,,,镇,,,,30023401075337,
c1,卯,grid_lead,,,,,镇,,,,30023401075337a,
c2,辰,grid_lead,,,,,镇,,,,,\"a\tb\"
c3,巳,grid_lead,,,,,镇,13800138000,,,,
";

    #[test]
    fn csv_offgrid_columns_are_parsed_and_checked() {
        let long_app = "x".repeat(APP_ID_MAX_CHARS + 1);
        let csv = format!("{OFFGRID_CSV}c4,午,grid_lead,,,,,镇,,,,,{long_app}\n");
        let (people, rejected) = load_people_csv(csv.as_bytes(), "86");
        let got: Vec<&str> = people.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(got, vec!["a1", "a2", "a3", "a4", "c3"]);
        // No phone, a BeiDou card only: reachable, so imported without a report.
        assert_eq!(
            people[0].addresses,
            vec![Address::BeidouCard("0242286".into())]
        );
        // Column order, each address once; zero-padding kept as written.
        let a2: Vec<String> = people[1].addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            a2,
            vec![
                "+8613800138000",
                "bd:04207733",
                "bd:0242286",
                "mesh:!0a0b0c0d",
                "mesh:!fffffffe",
                "sbd:300234010753370",
                "app:wx-9f3a",
            ]
        );
        assert_eq!(people[2].addresses, vec![Address::MeshNode(0xdead_beef)]);
        assert_eq!(
            people[3].addresses,
            vec![Address::App("user:42@app".into())]
        );
        assert!(people[4].addresses.iter().all(|a| a.serves(Bearer::Sms)));

        let lines: Vec<(usize, &str)> = rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        let node_fmt = "must be ! and 8 hex digits (like !a1b2c3d4) or a decimal node number";
        assert_eq!(
            lines,
            vec![
                (
                    6,
                    "person b1: beidou 1: card number \"02422x6\" must be 1 to 10 digits"
                ),
                (
                    7,
                    "person b2: beidou 1: card number \"12345678901\" must be 1 to 10 digits"
                ),
                (
                    8,
                    &format!("person b3: mesh 1: node \"!0a0b0c0\" {node_fmt}")
                ),
                (
                    9,
                    &format!("person b4: mesh 1: node \"!0a0b0c0g\" {node_fmt}")
                ),
                (
                    10,
                    "person b5: mesh 1: node \"!ffffffff\" is reserved (0 or the broadcast !ffffffff), not a radio"
                ),
                (
                    11,
                    &format!("person b6: mesh 1: node \"4294967296\" {node_fmt}")
                ),
                (
                    12,
                    "person b7: mesh 1: node \"0\" is reserved (0 or the broadcast !ffffffff), not a radio"
                ),
                (13, &format!("person b8: mesh 1: node \"-5\" {node_fmt}")),
                (
                    14,
                    "person b9: sbd 1: IMEI \"30023401075337\" must be 15 digits"
                ),
                (
                    15,
                    "person c1: sbd 1: IMEI \"30023401075337a\" must be 15 digits"
                ),
                (
                    16,
                    "person c2: app 1: id \"a\\tb\" contains a control character"
                ),
                (
                    18,
                    "person c4: app 1: id of 129 characters is longer than 128"
                ),
            ]
        );
        assert!(rejected.iter().all(|r| !r.kept));
    }

    #[test]
    fn csv_without_the_offgrid_columns_still_loads() {
        // The header of files written before the off-grid bearers existed.
        let csv = "id,name,role,phones\nx,甲,village_head,13800138000\ny,乙,resident,\n";
        let (people, rejected) = load_people_csv(csv.as_bytes(), "86");
        assert_eq!(people.len(), 2);
        assert_eq!(people[0].addresses.len(), 1);
        assert_eq!(
            rejected,
            vec![RejectedRow {
                line: 3,
                reason: "person y: no address: cannot be reached".into(),
                kept: true
            }]
        );
        // An off-grid column without the phones column is still a header error.
        let (people, rejected) =
            load_people_csv("id,name,role,beidou\nx,a,resident,1\n".as_bytes(), "86");
        assert!(people.is_empty());
        assert_eq!(rejected[0].reason, "header is missing column(s): phones");
    }

    #[test]
    fn csv_without_required_columns_is_one_rejection() {
        let (people, rejected) = load_people_csv("id,name\n1,a\n".as_bytes(), "86");
        assert!(people.is_empty());
        assert_eq!(
            rejected[0].reason,
            "header is missing column(s): role, phones"
        );
    }

    /// Random people as a district might write them: every role, with and without a
    /// supervisor (always an earlier person, so no loops), areas (repeats included),
    /// location, town, and zero to two phones plus the off-grid addresses.
    fn random_people(n: usize, seed: u64) -> Vec<Person> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let names = ["王伟", "李 秀英", "Zhang, \"Wei\"", "", "O'Brien", "马\t明"];
        let towns = ["东镇", "西镇", "", "South Town"];
        let areas = ["town", "v1", "hp"];
        (0..n)
            .map(|i| {
                let role = Role::ALL[rng.random_range(0..Role::ALL.len())];
                let supervisor = (i > 0 && rng.random_bool(0.3))
                    .then(|| PersonId(format!("p{}", rng.random_range(0..i))));
                let area_count = rng.random_range(0..4);
                let areas = (0..area_count)
                    .map(|_| AreaId::from(areas[rng.random_range(0..areas.len())]))
                    .collect();
                let location = rng.random_bool(0.8).then(|| {
                    [
                        rng.random_range(-180.0..=180.0),
                        rng.random_range(-90.0..=90.0),
                    ]
                });
                let mut addresses = Vec::new();
                for k in 0..rng.random_range(0..3u64) {
                    let digits = rng.random_range(7..=15);
                    let value = rng.random_range(0..10u64.pow(digits));
                    let number = format!("+{value:0width$}", width = digits as usize);
                    let a = Address::Phone(PhoneNumber::try_from(number).unwrap());
                    if k == 0 || !addresses.contains(&a) {
                        addresses.push(a);
                    }
                }
                if rng.random_bool(0.2) {
                    addresses.push(Address::BeidouCard(format!(
                        "{}",
                        rng.random_range(1..10_000_000_000u64)
                    )));
                }
                if rng.random_bool(0.2) {
                    addresses.push(Address::MeshNode(rng.random_range(1..u32::MAX)));
                }
                if rng.random_bool(0.1) {
                    addresses.push(Address::SbdImei(format!(
                        "{:015}",
                        rng.random_range(0..1_000_000_000_000_000u64)
                    )));
                }
                if rng.random_bool(0.1) {
                    addresses.push(Address::App(format!("app-{i}")));
                }
                Person {
                    id: PersonId(format!("p{i}")),
                    name: names[rng.random_range(0..names.len())].to_owned(),
                    role,
                    supervisor,
                    areas,
                    location,
                    town: towns[rng.random_range(0..towns.len())].to_owned(),
                    addresses,
                }
            })
            .collect()
    }

    /// The people CSV of these people, every column.
    fn people_csv(people: &[Person]) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "id",
            "name",
            "role",
            "supervisor",
            "areas",
            "lon",
            "lat",
            "town",
            "phones",
            "beidou",
            "mesh",
            "sbd",
            "app",
        ])
        .unwrap();
        for p in people {
            let join = |f: &dyn Fn(&Address) -> Option<String>| {
                p.addresses
                    .iter()
                    .filter_map(f)
                    .collect::<Vec<_>>()
                    .join(";")
            };
            let (lon, lat) = match p.location {
                // Display of an f64 reads back to the same f64.
                Some([lon, lat]) => (lon.to_string(), lat.to_string()),
                None => (String::new(), String::new()),
            };
            let areas: Vec<&str> = p.areas.iter().map(AreaId::as_str).collect();
            w.write_record([
                p.id.as_str(),
                &p.name,
                p.role.as_str(),
                p.supervisor.as_ref().map_or("", |s| s.as_str()),
                &areas.join(";"),
                &lon,
                &lat,
                &p.town,
                &join(&|a| match a {
                    Address::Phone(n) => Some(n.to_string()),
                    _ => None,
                }),
                &join(&|a| match a {
                    Address::BeidouCard(c) => Some(c.clone()),
                    _ => None,
                }),
                &join(&|a| match a {
                    Address::MeshNode(n) => Some(format!("!{n:08x}")),
                    _ => None,
                }),
                &join(&|a| match a {
                    Address::SbdImei(i) => Some(i.clone()),
                    _ => None,
                }),
                &join(&|a| match a {
                    Address::App(x) => Some(x.clone()),
                    _ => None,
                }),
            ])
            .unwrap();
        }
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn every_loaded_person_materializes_with_exactly_the_fields_of_their_row() {
        // Names that trim differently are left out: the loader trims every cell.
        let people: Vec<Person> = random_people(3_000, 31)
            .into_iter()
            .map(|mut p| {
                p.name = p.name.trim().to_owned();
                p
            })
            .collect();
        let csv = people_csv(&people);
        let dir = std::env::temp_dir().join(format!("tocsin-dir-roundtrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("areas.geojson"), GEOJSON).unwrap();
        std::fs::write(dir.join("people.csv"), &csv).unwrap();
        let (d, rejected) = load_from_dir_with(&dir, "86").unwrap();
        std::fs::remove_dir_all(&dir).ok();

        // Only the people without any address are reported, and they are kept.
        let unreachable = people.iter().filter(|p| p.addresses.is_empty()).count();
        assert!(unreachable > 0);
        assert_eq!(rejected.len(), unreachable, "{rejected:?}");
        assert!(rejected.iter().all(|r| r.kept));

        let all = d.people();
        assert_eq!(all.len(), people.len());
        assert_eq!(all.iter().len(), people.len());
        for (i, (got, want)) in all.iter().zip(&people).enumerate() {
            assert_eq!(&got, want, "row {}", i + 2);
            assert_eq!(all.get(i).as_ref(), Some(want));
            assert_eq!(all.id(i), Some(want.id.as_str()));
            assert_eq!(d.person(&want.id).as_ref(), Some(want));
            assert!(d.contains(&want.id));
        }
        assert_eq!(all.get(people.len()), None);
        assert!(!d.contains(&"nobody".into()));
        let backwards: Vec<Person> = all.iter().rev().collect();
        assert!(backwards.iter().rev().eq(people.iter()));
        let crews: Vec<Person> = all.with_role(Role::FieldCrew).collect();
        assert!(!crews.is_empty());
        assert!(
            crews
                .iter()
                .eq(people.iter().filter(|p| p.role == Role::FieldCrew))
        );
        // Supervisor chains are built from the same columns.
        for p in people.iter().step_by(37) {
            let mut want = Vec::new();
            let mut cur = p.supervisor.clone();
            while let Some(s) = cur {
                let sup = people.iter().find(|q| q.id == s).unwrap();
                want.push(sup.clone());
                cur = sup.supervisor.clone();
            }
            assert_eq!(d.supervisor_chain(&p.id), want, "{}", p.id);
        }

        // The plain CSV reader and a directory built from records agree.
        let (read, rejected) = load_people_csv(csv.as_bytes(), "86");
        assert_eq!(read, people);
        assert_eq!(rejected.len(), unreachable);
        let built = Directory::new(people.clone(), load_areas_geojson(GEOJSON).unwrap()).unwrap();
        assert!(built.people().iter().eq(people.iter().cloned()));
    }

    #[test]
    fn a_phone_number_that_does_not_pack_is_kept_as_written() {
        // A country code with a letter cannot pack into digits; such numbers keep their
        // text, in order, once each, around the ones that do pack.
        let csv = "id,name,role,phones\n\
                   a,A,resident,1234567;+8613800138000;1234567;+8613800138000\n\
                   b,B,resident,+8613800138000;7654321\n";
        let (people, rejected) = load_people_csv(csv.as_bytes(), "8a");
        assert!(rejected.is_empty(), "{rejected:?}");
        let phone = |s: &str| Address::Phone(PhoneNumber::parse(s, "8a").unwrap());
        assert_eq!(
            people[0].addresses,
            vec![phone("1234567"), phone("+8613800138000")]
        );
        assert_eq!(people[0].addresses[0].to_string(), "+8a1234567");
        assert_eq!(
            people[1].addresses,
            vec![phone("+8613800138000"), phone("7654321")]
        );
        let d = Directory::new(people.clone(), Vec::new()).unwrap();
        assert!(d.people().iter().eq(people.iter().cloned()));
    }

    const GEOJSON: &str = r#"{"type":"FeatureCollection","name":"synthetic test","features":[
      {"type":"Feature","properties":{"id":"town","kind":"town","name":"镇"},
       "geometry":{"type":"Polygon","coordinates":[[[116.0,40.0],[116.1,40.0],[116.1,40.1],[116.0,40.1],[116.0,40.0]]]}},
      {"type":"Feature","properties":{"id":"v1","kind":"village","name":"王家沟村","town":"镇","at_risk":true},
       "geometry":{"type":"MultiPolygon","coordinates":[[[[116.0,40.0],[116.05,40.0],[116.05,40.05],[116.0,40.05],[116.0,40.0]]]]}},
      {"type":"Feature","properties":{"id":"hp","kind":"hazard_point","name":"崩塌点","town":"镇","radius_m":300},
       "geometry":{"type":"Point","coordinates":[116.01,40.01,512.0]}}
    ]}"#;

    #[test]
    fn geojson_areas_load() {
        let areas = load_areas_geojson(GEOJSON).unwrap();
        assert_eq!(areas.len(), 3);
        assert_eq!(areas[1].name, "王家沟村");
        assert_eq!(areas[1].kind, AreaKind::Village);
        assert!(matches!(areas[1].geometry, AreaSpec::MultiPolygon { .. }));
        assert_eq!(
            areas[2].geometry,
            AreaSpec::Circle {
                center: [116.01, 40.01],
                radius_m: 300.0
            }
        );
        assert_eq!(areas[0].town, "");
    }

    #[test]
    fn geojson_errors_name_the_feature() {
        let bad_kind = GEOJSON.replace("\"kind\":\"village\"", "\"kind\":\"hamlet\"");
        assert!(
            load_areas_geojson(&bad_kind)
                .unwrap_err()
                .to_string()
                .starts_with("areas GeoJSON feature 1 (id \"v1\"): unknown kind \"hamlet\"")
        );
        let no_radius = GEOJSON.replace(",\"radius_m\":300", "");
        assert_eq!(
            load_areas_geojson(&no_radius).unwrap_err().to_string(),
            "areas GeoJSON feature 2 (id \"hp\"): a Point needs a numeric radius_m property"
        );
        let open_ring = GEOJSON.replace(
            "[116.0,40.1],[116.0,40.0]]]}}",
            "[116.0,40.1],[116.0,40.01]]]}}",
        );
        assert_eq!(
            load_areas_geojson(&open_ring).unwrap_err().to_string(),
            "areas GeoJSON feature 0 (id \"town\"): polygon 0, ring 0: not closed (first [116, 40] != last [116, 40.01])"
        );
        let dup = GEOJSON.replace("\"id\":\"hp\"", "\"id\":\"v1\"");
        assert_eq!(
            load_areas_geojson(&dup).unwrap_err().to_string(),
            "areas GeoJSON feature 2 (id \"v1\"): duplicate id (first in feature 1)"
        );
        assert!(load_areas_geojson("{\"type\":\"Point\",\"coordinates\":[1,2]}").is_err());
        assert!(load_areas_geojson("not json").is_err());
    }

    #[test]
    fn geojson_population_is_read_and_checked() {
        let with = |village: &str, town: &str| {
            GEOJSON
                .replace("\"at_risk\":true", &format!("\"at_risk\":true{village}"))
                .replace("\"name\":\"镇\"}", &format!("\"name\":\"镇\"{town}}}"))
        };
        let pops = |text: &str| -> Vec<Option<u64>> {
            load_areas_with_population(text)
                .unwrap()
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        };
        assert_eq!(pops(GEOJSON), vec![None, None, None]);
        assert_eq!(
            pops(&with(",\"population\":1250", ",\"population\":\" 8000 \"")),
            vec![Some(8000), Some(1250), None]
        );
        // Absent, null and empty all mean unknown, never 0.
        assert_eq!(
            pops(&with(",\"population\":null", ",\"population\":\"\"")),
            vec![None, None, None]
        );
        assert_eq!(
            pops(&with(",\"population\":0", "")),
            vec![None, Some(0), None]
        );
        // The plain loader still reads the same areas.
        assert_eq!(
            load_areas_geojson(&with(",\"population\":1250", "")).unwrap(),
            load_areas_geojson(GEOJSON).unwrap()
        );
        for bad in ["-3", "12.5", "\"many\"", "true", "[1]"] {
            let err = load_areas_with_population(&with(&format!(",\"population\":{bad}"), ""))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("areas GeoJSON feature 1 (id \"v1\"): population ")
                    && err.ends_with("is not a whole number of residents"),
                "{bad}: {err}"
            );
        }
    }

    /// A town of three villages (two with figures, one without), a hazard point in the
    /// first village, and a second town with no villages in the directory.
    fn populated() -> Directory {
        let named = |id: &str, kind, town: &str, geometry| NamedArea {
            id: AreaId::from(id),
            kind,
            name: format!("{id}-name"),
            town: town.to_owned(),
            geometry,
        };
        let areas = vec![
            named("town", AreaKind::Town, "", square(116.0, 40.0, 0.15)),
            named(
                "v1",
                AreaKind::Village,
                "town-name",
                square(116.0, 40.0, 0.05),
            ),
            named(
                "v2",
                AreaKind::Village,
                "town-name",
                square(116.05, 40.0, 0.05),
            ),
            named(
                "v3",
                AreaKind::Village,
                "town-name",
                square(116.10, 40.0, 0.05),
            ),
            named(
                "hp",
                AreaKind::HazardPoint,
                "town-name",
                AreaSpec::Circle {
                    center: [116.01, 40.01],
                    radius_m: 300.0,
                },
            ),
            named("lone", AreaKind::Town, "", square(117.0, 40.0, 0.1)),
        ];
        let mut d = Directory::new(Vec::new(), areas).unwrap();
        for (id, n) in [
            ("town", 9000),
            ("v1", 1200),
            ("v2", 800),
            ("hp", 50),
            ("lone", 3000),
        ] {
            assert!(d.set_population(&id.into(), Some(n)));
        }
        assert!(!d.set_population(&"nowhere".into(), Some(1)));
        d
    }

    #[test]
    fn population_counts_villages_whole_and_unknown_is_not_zero() {
        let d = populated();
        assert_eq!(d.population(&"v1".into()), Some(1200));
        assert_eq!(d.population(&"v3".into()), None);
        let estimate = |spec: AreaSpec| d.estimate_population(&d.resolve(&[spec]).unwrap().areas);
        // A small square in the corner of v1 (and the hazard point): v1 counts whole; the
        // town's own figure does not (its villages stand for it), nor does the hazard
        // point's.
        assert_eq!(
            estimate(square(116.005, 40.005, 0.01)),
            PopulationEstimate {
                population: Some(1200),
                unknown_areas: 0
            }
        );
        // Straddling v1 and v2: both whole.
        assert_eq!(estimate(square(116.04, 40.01, 0.02)).population, Some(2000));
        // All three villages: v3 has no figure, so 2000 is a lower bound.
        assert_eq!(
            estimate(AreaSpec::Named { id: "town".into() }),
            PopulationEstimate {
                population: Some(2000),
                unknown_areas: 1
            }
        );
        // Only v3: unknown, not 0.
        assert_eq!(
            estimate(square(116.12, 40.01, 0.01)),
            PopulationEstimate {
                population: None,
                unknown_areas: 1
            }
        );
        // A town with no villages in the directory counts whole.
        assert_eq!(estimate(square(117.01, 40.01, 0.01)).population, Some(3000));
        // No named area at all: unknown.
        assert_eq!(
            estimate(square(118.0, 40.0, 0.01)),
            PopulationEstimate::default()
        );
        // Ids count once; unknown ids are skipped.
        assert_eq!(
            d.estimate_population(&["v1".into(), "v1".into(), "gone".into()])
                .population,
            Some(1200)
        );
    }

    #[test]
    fn load_from_dir_keeps_people_with_dangling_references() {
        let dir = std::env::temp_dir().join(format!("tocsin-dir-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("areas.geojson"), GEOJSON).unwrap();
        std::fs::write(dir.join("people.csv"), CSV).unwrap();
        let (d, rejected) = load_from_dir(&dir).unwrap();
        std::fs::write(
            dir.join("areas.geojson"),
            GEOJSON.replace("\"at_risk\":true", "\"at_risk\":true,\"population\":640"),
        )
        .unwrap();
        let (populated, _) = load_from_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(d.population(&"v1".into()), None);
        assert_eq!(populated.population(&"v1".into()), Some(640));
        assert_eq!(populated.population(&"town".into()), None);
        let h7 = d.person(&"h7".into()).unwrap();
        assert_eq!(h7.supervisor, None);
        assert_eq!(h7.areas, Vec::<AreaId>::new());
        let kept: Vec<&str> = rejected
            .iter()
            .filter(|r| r.kept)
            .map(|r| r.reason.as_str())
            .collect();
        assert_eq!(
            kept,
            vec![
                "person r1: no address: cannot be reached",
                "person h7: supervisor gone is not in the directory; kept without a supervisor",
                "person h7: area v2 is not in areas.geojson; kept without it",
                "person h7: area v9 is not in areas.geojson; kept without it",
            ]
        );
        let r = d.resolve(&[AreaSpec::Named { id: "hp".into() }]).unwrap();
        let resp: Vec<&str> = r.responsible.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(resp, vec!["h1", "t1"]);
        assert!(matches!(
            load_from_dir(dir.join("missing")),
            Err(DirectoryError::Io { .. })
        ));
    }

    #[test]
    fn demo_district_loads_and_its_valley_alert_is_meaningful() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/district");
        let (d, rejected) = load_from_dir(&dir).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        assert!((1900..=2100).contains(&d.people().len()));
        let text = std::fs::read_to_string(dir.join("valley.geojson")).unwrap();
        let valley: AreaSpec = serde_json::from_str(&text).unwrap();
        let r = d.resolve(&[valley]).unwrap();
        let villages = r
            .areas
            .iter()
            .filter(|a| d.area(a).is_some_and(|x| x.kind == AreaKind::Village))
            .count();
        assert!((30..=60).contains(&villages), "{villages} villages");
        assert!(
            (150..=600).contains(&r.person_count()),
            "{} people",
            r.person_count()
        );
        let mut all: Vec<&PersonId> = r
            .located
            .iter()
            .chain(r.responsible.iter().map(|(p, _)| p))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        println!(
            "valley: {villages} villages, {} areas, {} responsible, {} located",
            r.areas.len(),
            r.responsible.len(),
            r.located.len()
        );
    }

    #[test]
    fn many_people_are_found_by_id_and_keep_no_spare_room() {
        let mut csv = String::from("id,name,role,supervisor,lon,lat,phones\n");
        csv.push_str("boss,B,town_official,,116.0,40.0,+8613800000000\n");
        for i in 0..2_000 {
            csv.push_str(&format!("p{i},N,grid_lead,boss,116.0,40.0,+86138{i:08}\n"));
        }
        csv.push_str("p7,again,resident,,,,+8613900000000\n");
        csv.push_str("p8,lost,resident,nobody,,,+8613900000001\n");
        let dir = std::env::temp_dir().join(format!("tocsin-dir-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("people.csv"), &csv).unwrap();
        std::fs::write(
            dir.join("areas.geojson"),
            r#"{"type":"FeatureCollection","features":[]}"#,
        )
        .unwrap();
        let (d, rejected) = load_from_dir_with(&dir, "86").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(d.people().len(), 2_001);
        for i in (0..2_000).step_by(97) {
            let p = d.person(&PersonId(format!("p{i}"))).unwrap();
            assert_eq!(p.addresses.len(), 1);
            assert_eq!(p.addresses.capacity(), 1);
            assert_eq!(d.supervisor_chain(&p.id)[0].id.as_str(), "boss");
        }
        assert!(d.person(&PersonId("p2000".into())).is_none());
        // The duplicate is named with the line of the first, and the directory keeps the first.
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert!(
            rejected[0]
                .reason
                .contains("duplicate id p7 (first on line 10)")
        );
        assert!(!rejected[0].kept);
        assert_eq!(
            d.person(&PersonId("p7".into())).unwrap().role,
            Role::GridLead
        );
    }
}
