//! The people of a directory, kept column by column.
//!
//! A district holds up to a million people, nearly all of them residents with an id, a
//! name, a town, a location and one phone number, and nothing else. As [`Person`]
//! records they cost about 350 bytes each (five heap allocations of 32–48 bytes plus a
//! 176-byte record). Here they cost about 60: ids and names are concatenated into two
//! strings with one end offset each, towns and area ids are interned (a district has a
//! few dozen towns and a few hundred areas), the first phone number is packed into a
//! `u64`, and what only a few people have (a supervisor, more addresses) lives in short
//! side lists sorted by position. A [`Person`] is built again when someone asks for one,
//! with exactly the fields it was stored with.

use crate::address::{Address, PhoneNumber};
use crate::ids::{AreaId, PersonId};
use crate::person::{Person, Role};
use std::collections::HashMap;

/// One person as parsed, borrowing its text from the CSV record (or from a [`Person`]),
/// so that storing it copies each string once, into the columns.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    /// The district's id.
    pub id: &'a str,
    /// Name shown to operators.
    pub name: &'a str,
    /// Role.
    pub role: Role,
    /// Supervisor's id, if any (not checked here).
    pub supervisor: Option<&'a str>,
    /// Ids of the areas the person answers for (not checked here).
    pub areas: Vec<&'a str>,
    /// `[lon, lat]`, already validated by the caller.
    pub location: Option<[f64; 2]>,
    /// Town name.
    pub town: &'a str,
    /// The first address, when it is a phone number packed by [`PhoneNumber::pack`].
    pub phone: Option<u64>,
    /// Addresses in order of preference (after `phone`, if any).
    pub addresses: Vec<Address>,
}

impl<'a> Row<'a> {
    /// The row of an existing person (their addresses are copied).
    pub fn of(p: &'a Person) -> Row<'a> {
        let phone = match p.addresses.first() {
            Some(Address::Phone(n)) => n.pack(),
            _ => None,
        };
        let rest = if phone.is_some() {
            p.addresses.get(1..).unwrap_or(&[])
        } else {
            &p.addresses[..]
        };
        Row {
            id: p.id.as_str(),
            name: &p.name,
            role: p.role,
            supervisor: p.supervisor.as_ref().map(PersonId::as_str),
            areas: p.areas.iter().map(AreaId::as_str).collect(),
            location: p.location,
            town: &p.town,
            phone,
            addresses: rest.to_vec(),
        }
    }
}

/// The roster cannot take another person: more than `u32::MAX` people, or more than
/// 4 GB of ids, names or area references. A district is many orders of magnitude
/// smaller; the check keeps the 4-byte offsets honest rather than wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RosterFull;

/// Longest stored list (people, offsets): positions are `u32`, and `u32::MAX` is kept
/// free as a "none" marker by callers.
const MAX_LEN: usize = u32::MAX as usize - 1;

/// The people of a directory in columns; position `i` in every column is person `i`.
#[derive(Default)]
pub(crate) struct Roster {
    /// Every id, concatenated.
    ids: String,
    /// End of each id in `ids` (its start is the previous end).
    id_ends: Vec<u32>,
    /// Every name, concatenated.
    names: String,
    /// End of each name in `names`.
    name_ends: Vec<u32>,
    roles: Vec<Role>,
    /// Position in `towns` of each person's town.
    town_of: Vec<u32>,
    /// Distinct town names, in order of first appearance.
    towns: Vec<Box<str>>,
    /// Town name -> position in `towns`; only while people are being added.
    town_at: HashMap<Box<str>, u32>,
    /// `[lon, lat]`, or NaNs for no location (a stored location is always finite).
    locations: Vec<[f64; 2]>,
    /// The first address when it is a phone number that packs (see
    /// [`PhoneNumber::pack`]), else 0.
    phones: Vec<u64>,
    /// The addresses not in `phones` (all of them when the first is not a packed phone),
    /// by person position, sorted; most people have none.
    more_addresses: Vec<(u32, Box<[Address]>)>,
    /// Supervisors by person position, sorted; most people have none.
    supervisors: Vec<(u32, PersonId)>,
    /// End of each person's list in `area_list`.
    area_ends: Vec<u32>,
    /// Each person's areas, as positions in `area_ids`, concatenated.
    area_list: Vec<u32>,
    /// Distinct area ids, in order of first appearance.
    area_ids: Vec<AreaId>,
    /// Area id -> position in `area_ids`; only while people are being added.
    area_at: HashMap<Box<str>, u32>,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roster")
            .field("people", &self.len())
            .field("towns", &self.towns.len())
            .field("areas", &self.area_ids.len())
            .finish()
    }
}

/// The range `[start, end)` of entry `i` of a concatenated column with these ends.
fn span(ends: &[u32], i: usize) -> Option<std::ops::Range<usize>> {
    let end = *ends.get(i)? as usize;
    let start = match i.checked_sub(1) {
        Some(prev) => *ends.get(prev)? as usize,
        None => 0,
    };
    Some(start..end)
}

/// The new end offset after appending `extra` items to a column of `len` items.
fn next_end(len: usize, extra: usize) -> Result<u32, RosterFull> {
    let end = len.checked_add(extra).ok_or(RosterFull)?;
    if end > MAX_LEN {
        return Err(RosterFull);
    }
    u32::try_from(end).map_err(|_| RosterFull)
}

/// Interns `key` in `list`/`at`, returning its position.
fn intern<K>(
    list: &mut Vec<K>,
    at: &mut HashMap<Box<str>, u32>,
    key: &str,
) -> Result<u32, RosterFull>
where
    K: for<'k> From<&'k str>,
{
    if let Some(&i) = at.get(key) {
        return Ok(i);
    }
    let i = next_end(list.len(), 0)?;
    list.push(K::from(key));
    at.insert(Box::from(key), i);
    Ok(i)
}

impl Roster {
    /// Number of people.
    pub fn len(&self) -> usize {
        self.id_ends.len()
    }

    /// Adds a person at the end; returns their position. Nothing is added on error.
    pub fn push(&mut self, row: Row<'_>) -> Result<usize, RosterFull> {
        let at = self.len();
        let at_u32 = next_end(at, 0)?;
        let id_end = next_end(self.ids.len(), row.id.len())?;
        let name_end = next_end(self.names.len(), row.name.len())?;
        let area_end = next_end(self.area_list.len(), row.areas.len())?;
        let mut areas = Vec::with_capacity(row.areas.len());
        for a in &row.areas {
            areas.push(intern(&mut self.area_ids, &mut self.area_at, a)?);
        }
        let town = intern(&mut self.towns, &mut self.town_at, row.town)?;

        // Only infallible steps from here on, so a refused row leaves no trace (an
        // interned town or area id is harmless).
        self.ids.push_str(row.id);
        self.id_ends.push(id_end);
        self.names.push_str(row.name);
        self.name_ends.push(name_end);
        self.roles.push(row.role);
        self.town_of.push(town);
        self.locations.push(row.location.unwrap_or([f64::NAN; 2]));
        self.area_list.extend(areas);
        self.area_ends.push(area_end);
        self.phones.push(row.phone.unwrap_or(0));
        if !row.addresses.is_empty() {
            self.more_addresses
                .push((at_u32, row.addresses.into_boxed_slice()));
        }
        if let Some(s) = row.supervisor {
            self.supervisors.push((at_u32, PersonId::from(s)));
        }
        Ok(at)
    }

    /// Makes room for `n` more people in the per-person columns (not the text).
    pub fn reserve(&mut self, n: usize) {
        self.id_ends.reserve(n);
        self.name_ends.reserve(n);
        self.roles.reserve(n);
        self.town_of.reserve(n);
        self.locations.reserve(n);
        self.phones.reserve(n);
        self.area_ends.reserve(n);
    }

    /// Frees the spare room of every column and the interning maps: call once everyone
    /// is added (adding more afterwards still works, it only re-hashes).
    pub fn finish(&mut self) {
        self.ids.shrink_to_fit();
        self.id_ends.shrink_to_fit();
        self.names.shrink_to_fit();
        self.name_ends.shrink_to_fit();
        self.roles.shrink_to_fit();
        self.town_of.shrink_to_fit();
        self.towns.shrink_to_fit();
        self.town_at = HashMap::new();
        self.locations.shrink_to_fit();
        self.phones.shrink_to_fit();
        self.more_addresses.shrink_to_fit();
        self.supervisors.shrink_to_fit();
        self.area_ends.shrink_to_fit();
        self.area_list.shrink_to_fit();
        self.area_ids.shrink_to_fit();
        self.area_at = HashMap::new();
    }

    /// Person `i`'s id.
    pub fn id(&self, i: usize) -> Option<&str> {
        self.ids.get(span(&self.id_ends, i)?)
    }

    /// Person `i`'s role.
    pub fn role(&self, i: usize) -> Option<Role> {
        self.roles.get(i).copied()
    }

    /// Person `i`'s location.
    pub fn location(&self, i: usize) -> Option<[f64; 2]> {
        self.locations
            .get(i)
            .copied()
            .filter(|[lon, lat]| !lon.is_nan() && !lat.is_nan())
    }

    /// Every located person: position and `[lon, lat]`.
    pub fn located(&self) -> impl Iterator<Item = (u32, [f64; 2])> + '_ {
        self.locations
            .iter()
            .enumerate()
            .filter(|(_, [lon, lat])| !lon.is_nan() && !lat.is_nan())
            .map(|(i, &loc)| (u32::try_from(i).unwrap_or(u32::MAX), loc))
    }

    /// Person `i`'s supervisor, as written.
    pub fn supervisor(&self, i: usize) -> Option<&PersonId> {
        let i = u32::try_from(i).ok()?;
        let at = self
            .supervisors
            .binary_search_by_key(&i, |(p, _)| *p)
            .ok()?;
        self.supervisors.get(at).map(|(_, s)| s)
    }

    /// Everyone who has a supervisor: position and supervisor's id, by position.
    pub fn supervised(&self) -> impl Iterator<Item = (usize, &PersonId)> + '_ {
        self.supervisors.iter().map(|(p, s)| (*p as usize, s))
    }

    /// Person `i`'s areas, as positions in [`Roster::area_ids`] (as written, in order).
    pub fn areas(&self, i: usize) -> &[u32] {
        span(&self.area_ends, i)
            .and_then(|r| self.area_list.get(r))
            .unwrap_or(&[])
    }

    /// The distinct area ids people answer for, in order of first appearance.
    pub fn area_ids(&self) -> &[AreaId] {
        &self.area_ids
    }

    /// Person `i`, materialized with exactly the fields they were added with.
    pub fn get(&self, i: usize) -> Option<Person> {
        let id = self.id(i)?;
        let name = self.names.get(span(&self.name_ends, i)?)?;
        let town = self.towns.get(*self.town_of.get(i)? as usize)?;
        let areas = self
            .areas(i)
            .iter()
            .filter_map(|&a| self.area_ids.get(a as usize).cloned())
            .collect();
        let more = u32::try_from(i)
            .ok()
            .and_then(|k| {
                self.more_addresses
                    .binary_search_by_key(&k, |(p, _)| *p)
                    .ok()
            })
            .and_then(|at| self.more_addresses.get(at))
            .map(|(_, list)| &list[..])
            .unwrap_or(&[]);
        let phone = self
            .phones
            .get(i)
            .copied()
            .and_then(PhoneNumber::unpack)
            .map(Address::Phone);
        let mut addresses = Vec::with_capacity(usize::from(phone.is_some()) + more.len());
        addresses.extend(phone);
        addresses.extend(more.iter().cloned());
        Some(Person {
            id: PersonId::from(id),
            name: name.to_owned(),
            role: self.role(i)?,
            supervisor: self.supervisor(i).cloned(),
            areas,
            location: self.location(i),
            town: town.to_string(),
            addresses,
        })
    }

    /// Forgets the supervisors of the people for which `keep` is false, `keep` being
    /// in [`Roster::supervised`] order (missing entries count as kept); returns them
    /// (position and id), by position.
    pub fn retain_supervisors(&mut self, keep: &[bool]) -> Vec<(usize, PersonId)> {
        let mut dropped = Vec::new();
        let mut k = 0;
        self.supervisors.retain(|(p, s)| {
            let kept = keep.get(k).copied().unwrap_or(true);
            k += 1;
            if !kept {
                dropped.push((*p as usize, s.clone()));
            }
            kept
        });
        dropped
    }

    /// Removes from everyone's areas the area ids for which `keep` is false; returns
    /// what was removed (position and area id), by position then order in the row.
    pub fn retain_areas(&mut self, mut keep: impl FnMut(&AreaId) -> bool) -> Vec<(usize, AreaId)> {
        let kept: Vec<bool> = self.area_ids.iter().map(&mut keep).collect();
        if kept.iter().all(|&k| k) {
            return Vec::new();
        }
        let mut dropped = Vec::new();
        let mut write = 0usize;
        let mut start = 0usize;
        for (i, end) in self.area_ends.iter_mut().enumerate() {
            let stop = *end as usize;
            for read in start..stop {
                let Some(&a) = self.area_list.get(read) else {
                    continue;
                };
                if kept.get(a as usize).copied().unwrap_or(false) {
                    if let Some(slot) = self.area_list.get_mut(write) {
                        *slot = a;
                    }
                    write += 1;
                } else if let Some(id) = self.area_ids.get(a as usize) {
                    dropped.push((i, id.clone()));
                }
            }
            start = stop;
            // `write` never exceeds `stop`, which fits in a u32.
            *end = u32::try_from(write).unwrap_or(*end);
        }
        self.area_list.truncate(write);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Address {
        Address::Phone(PhoneNumber::parse(s, "86").unwrap())
    }

    fn people() -> Vec<Person> {
        vec![
            Person {
                id: "r1".into(),
                name: "王伟".into(),
                role: Role::Resident,
                supervisor: None,
                areas: vec![],
                location: Some([116.25, 40.5]),
                town: "东镇".into(),
                addresses: vec![phone("13800138000")],
            },
            Person {
                id: "h1".into(),
                name: String::new(),
                role: Role::VillageHead,
                supervisor: Some("t1".into()),
                areas: vec!["v1".into(), "v2".into(), "v1".into()],
                location: None,
                town: String::new(),
                addresses: vec![
                    Address::BeidouCard("1234567".into()),
                    phone("+441234567890"),
                    Address::MeshNode(7),
                ],
            },
            Person {
                id: "t1".into(),
                name: "李芳".into(),
                role: Role::TownOfficial,
                supervisor: Some("nobody".into()),
                areas: vec!["v2".into()],
                location: Some([-0.0, -90.0]),
                town: "东镇".into(),
                addresses: vec![phone("+0123456"), phone("13900139000")],
            },
            Person {
                id: "n1".into(),
                name: "no address".into(),
                role: Role::Resident,
                supervisor: None,
                areas: vec![],
                location: Some([180.0, 90.0]),
                town: "西镇".into(),
                addresses: vec![],
            },
        ]
    }

    #[test]
    fn every_person_comes_back_with_exactly_their_fields() {
        let people = people();
        let mut r = Roster::default();
        for (i, p) in people.iter().enumerate() {
            assert_eq!(r.push(Row::of(p)), Ok(i));
        }
        r.finish();
        assert_eq!(r.len(), people.len());
        for (i, p) in people.iter().enumerate() {
            assert_eq!(r.get(i).as_ref(), Some(p), "person {i}");
            assert_eq!(r.id(i), Some(p.id.as_str()));
            assert_eq!(r.location(i), p.location);
        }
        assert_eq!(r.get(people.len()), None);
        assert_eq!(r.id(people.len()), None);
        // Towns and areas are stored once each.
        assert_eq!(r.towns.len(), 3);
        assert_eq!(r.area_ids().len(), 2);
        assert_eq!(r.areas(1), &[0, 1, 0]);
        // Only the packed first phone is out of the side list.
        assert_eq!(r.more_addresses.len(), 2);
        assert_eq!(
            r.located().map(|(i, _)| i).collect::<Vec<_>>(),
            vec![0, 2, 3]
        );
    }

    #[test]
    fn references_are_dropped_by_predicate() {
        let people = people();
        let mut r = Roster::default();
        for p in &people {
            r.push(Row::of(p)).unwrap();
        }
        let keep: Vec<bool> = r
            .supervised()
            .map(|(_, s)| s.as_str() != "nobody")
            .collect();
        let dropped = r.retain_supervisors(&keep);
        assert_eq!(dropped, vec![(2, PersonId::from("nobody"))]);
        assert_eq!(r.supervisor(2), None);
        assert_eq!(r.supervisor(1), Some(&PersonId::from("t1")));
        let dropped = r.retain_areas(|a| a.as_str() != "v1");
        assert_eq!(
            dropped,
            vec![(1, AreaId::from("v1")), (1, AreaId::from("v1"))]
        );
        let h1 = r.get(1).unwrap();
        assert_eq!(h1.areas, vec![AreaId::from("v2")]);
        assert_eq!(r.get(2).unwrap().areas, vec![AreaId::from("v2")]);
        assert_eq!(r.get(0).unwrap(), people[0]);
        assert_eq!(r.get(3).unwrap(), people[3]);
        assert!(r.retain_areas(|_| true).is_empty());
    }
}
