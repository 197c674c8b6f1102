//! Loudspeaker announcements: one per speaker in the alert's area, for grades whose
//! policy sounds speakers. They are not 叫应 records (speakers take no replies and are never
//! counted as people); each moves `planned → playing → reached` (a receiver report from
//! the speaker) or `no_evidence` (none within the window, or the programme failed), or
//! `cancelled`. Like everything else, their state changes only by applying records.

use crate::record::Record;
use crate::router::Router;
use crate::text;
use crate::view::{AlertState, SpeakerCounts, SpeakerState, SpeakerView};
use tocsin_channel::{DriverCommand, Outbound};
use tocsin_core::{AlertId, AttemptId, DeviceId, SpeakerId, Timestamp};

impl Router {
    /// Plans an announcement for every speaker of the alert's plan that has none yet,
    /// when the grade's policy sounds speakers, and hands them to their devices.
    pub(crate) fn plan_announcements(&mut self, now: Timestamp, a: u32) {
        let entry = self.state.alert(a);
        let alert = entry.plan.alert.clone();
        if !self.config.policies.speakers_for(alert.grade, &alert.kind) {
            return;
        }
        let window_ms = self
            .config
            .policies
            .speaker_window_ms_for(alert.grade, &alert.kind);
        // Speakers take no reply: the warning without a code (the driver drops the reply
        // instruction anyway).
        let text = text::alert_message(&alert, None);
        let new: Vec<_> = entry
            .plan
            .speakers
            .iter()
            .filter(|t| !entry.by_speaker.contains_key(&t.id))
            .cloned()
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for t in new {
            if !seen.insert(t.id.clone()) {
                continue;
            }
            self.emit(Record::AnnouncementPlanned {
                at: now,
                alert: alert.id.clone(),
                speaker: t.id,
                device: t.device,
                to: t.address,
                text: text.clone(),
                window_ms,
            });
        }
        self.start_announcements(now, None);
    }

    /// Hands planned announcements (of `only` this device, or all) to their devices when
    /// those are up; an announcement whose device is not configured ends as no evidence.
    pub(crate) fn start_announcements(&mut self, now: Timestamp, only: Option<&DeviceId>) {
        let mut todo = Vec::new();
        for (a, entry) in self.state.alerts.iter().enumerate() {
            if entry.state == AlertState::Cancelled {
                continue;
            }
            for (s, ann) in entry.announcements.iter().enumerate() {
                if ann.state == SpeakerState::Planned && only.is_none_or(|d| d == &ann.device) {
                    todo.push((a as u32, s as u32));
                }
            }
        }
        for (a, s) in todo {
            self.start_announcement(now, a, s, false);
        }
    }

    /// Hands one announcement (or its cancellation notice) to its device.
    fn start_announcement(&mut self, now: Timestamp, a: u32, s: u32, notice: bool) {
        let entry = self.state.alert(a);
        let Some(ann) = entry.announcements.get(s as usize) else {
            return;
        };
        let (alert, speaker, device, to) = (
            entry.plan.alert.id.clone(),
            ann.speaker.clone(),
            ann.device.clone(),
            ann.to.clone(),
        );
        let text = if notice {
            text::cancel_message(&entry.plan.alert)
        } else {
            ann.text.clone()
        };
        if !self.config.devices.iter().any(|d| d.id == device) {
            if !notice {
                self.emit(Record::AnnouncementClosed {
                    at: now,
                    alert,
                    speaker,
                    state: SpeakerState::NoEvidence,
                    reason: format!("device {device} is not configured"),
                });
            }
            return;
        }
        if !self.state.is_up(&device) {
            return;
        }
        let attempt = AttemptId(self.state.next_attempt.max(1));
        self.emit(Record::AnnouncementStarted {
            at: now,
            alert,
            speaker,
            attempt,
            device: device.clone(),
            to: to.clone(),
            text: text.clone(),
            notice,
        });
        self.command(
            device,
            DriverCommand::Send(Outbound {
                attempt,
                to,
                text,
                want_report: true,
            }),
        );
    }

    /// After a restore: announcements whose programme never started are handed over
    /// again, planned ones for the first time.
    pub(crate) fn resume_announcements(&mut self, now: Timestamp) {
        let mut again = Vec::new();
        for (a, entry) in self.state.alerts.iter().enumerate() {
            if entry.state == AlertState::Cancelled {
                continue;
            }
            for (s, ann) in entry.announcements.iter().enumerate() {
                if ann.state == SpeakerState::Playing && !ann.sent {
                    again.push((a as u32, s as u32));
                }
            }
        }
        for (a, s) in again {
            self.start_announcement(now, a, s, false);
        }
        self.start_announcements(now, None);
    }

    /// Before an alert is cancelled: what to tell each speaker device. Playing
    /// announcements are cancelled on the device (the driver stops the programme and says
    /// it is cancelled where it was heard); finished ones that may have been heard get the
    /// cancellation notice as a programme of its own.
    pub(crate) fn speaker_cancels(&self, a: u32) -> Vec<(u32, Option<(DeviceId, AttemptId)>)> {
        let entry = self.state.alert(a);
        let mut out = Vec::new();
        for (s, ann) in entry.announcements.iter().enumerate() {
            match (ann.state, ann.attempt) {
                (SpeakerState::Playing, Some(attempt)) => {
                    out.push((s as u32, Some((ann.device.clone(), attempt))))
                }
                (SpeakerState::Reached | SpeakerState::NoEvidence, Some(_)) if !ann.notice_sent => {
                    out.push((s as u32, None))
                }
                _ => {}
            }
        }
        out
    }

    /// After the cancellation is recorded: the commands and notices [`Router::speaker_cancels`]
    /// decided on.
    pub(crate) fn cancel_announcements(
        &mut self,
        now: Timestamp,
        a: u32,
        todo: Vec<(u32, Option<(DeviceId, AttemptId)>)>,
    ) {
        for (s, cancel) in todo {
            match cancel {
                Some((device, attempt)) => self.command(device, DriverCommand::Cancel(attempt)),
                None => self.start_announcement(now, a, s, true),
            }
        }
    }

    /// The (alert, speaker) an announcement attempt belongs to.
    pub(crate) fn announcement_owner(&self, attempt: AttemptId) -> Option<(AlertId, SpeakerId)> {
        let &(a, s, _) = self.state.announce_attempts.get(&attempt)?;
        let entry = self.state.alerts.get(a as usize)?;
        let ann = entry.announcements.get(s as usize)?;
        Some((entry.plan.alert.id.clone(), ann.speaker.clone()))
    }

    /// The "no evidence" window of an announcement ran out.
    pub(crate) fn announcement_window_over(&mut self, now: Timestamp, a: u32, s: u32) {
        let Some(entry) = self.state.alerts.get(a as usize) else {
            return;
        };
        let Some(ann) = entry.announcements.get(s as usize) else {
            return;
        };
        if ann.state != SpeakerState::Playing {
            return;
        }
        let secs = ann.window_ms / 1000;
        let reason = if ann.sent {
            format!("no receiver report within {secs} s of the programme starting")
        } else {
            format!("the programme did not start within {secs} s")
        };
        let (alert, speaker) = (entry.plan.alert.id.clone(), ann.speaker.clone());
        self.emit(Record::AnnouncementClosed {
            at: now,
            alert,
            speaker,
            state: SpeakerState::NoEvidence,
            reason,
        });
    }

    /// The loudspeaker announcements of one alert, or `None` if unknown.
    pub fn speakers(&self, alert: &AlertId) -> Option<Vec<SpeakerView>> {
        let a = *self.state.alert_ix.get(alert)?;
        Some(
            self.state
                .alert(a)
                .announcements
                .iter()
                .map(|ann| SpeakerView {
                    id: ann.speaker.clone(),
                    name: ann.name.clone(),
                    town: ann.town.clone(),
                    device: ann.device.clone(),
                    state: ann.state,
                    evidence: ann.evidence.clone(),
                    reports: ann.reports,
                    reason: ann.reason.clone(),
                    attempt: ann.attempt,
                    since: ann.since,
                })
                .collect(),
        )
    }

    /// Announcements of alert `a` per state.
    pub(crate) fn speaker_counts(&self, a: u32) -> SpeakerCounts {
        let mut c = SpeakerCounts::default();
        for ann in &self.state.alert(a).announcements {
            c.speakers += 1;
            match ann.state {
                SpeakerState::Planned => c.planned += 1,
                SpeakerState::Playing => c.playing += 1,
                SpeakerState::Reached => c.reached += 1,
                SpeakerState::NoEvidence => c.no_evidence += 1,
                SpeakerState::Cancelled => c.cancelled += 1,
            }
        }
        c
    }
}
