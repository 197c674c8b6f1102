//! The 叫应 engine: a pure state machine that owns every (alert, person) record.
//!
//! Inputs are `handle_*` calls that take `now`; outputs are drained with
//! [`Router::poll_output`] and [`Router::poll_timeout`]. It does no I/O and reads no clock.
//!
//! # The contract with the daemon
//!
//! After every `handle_*` call (and after [`Router::restore`]) the daemon drains
//! [`Router::poll_output`] completely, appends all [`Output::Record`]s to the durable store
//! in ONE transaction, and only after the commit dispatches the [`Output::Command`]s to the
//! drivers (and answers the API caller). Then it sleeps until [`Router::poll_timeout`] and
//! calls [`Router::handle_timeout`].
//!
//! Every state change is a [`Record`], and the router's state changes only by applying
//! records — the same function live and in [`Router::restore`]. Restoring is applying the
//! log in order; the resume then adds records of its own only: attempts handed to a device
//! but without an outcome are abandoned and sent again (`possible_duplicate`), overdue
//! timers fire. Records carry every decision that depended on configuration (routes,
//! deadlines, texts, the whole [`AlertPlan`]), so a log replays the same under a changed
//! config. Device up/down is not carried over a restart: every device is assumed up until
//! its driver reports.
//!
//! # Records
//!
//! Per (alert, person): `planned → attempting → reached → acknowledged`, or
//! `→ escalated` (a door-knock task for the supervisor, with its own code and deadline,
//! climbing the supervisor chain while unanswered) `→ confirmed`, or finally `unreached`.
//! The task itself moves `assigned → accepted → confirmed` ([`TaskState`]): a bare ack the
//! router attributes to the task (key 1 in the task's call, 收到 when the task is all the
//! assignee has open) only ACCEPTS it — the record stays `escalated`, the task's answer
//! deadline stops, its calls are not redialled, and its visit window
//! ([`DoorKnockTask::visit_ms`], the policy's `door_knock_visit_s`) starts, after which it
//! goes one level further up as an unanswered task does. Only the task's code (`1 CODE`,
//! as the task's text asks once the visit is done) confirms the visit and closes the
//! record `confirmed`.
//! `cancelled` and `withdrawn` end records of cancelled alerts and of people an update no
//! longer covers. A late ack still counts and is marked late, even after escalation or
//! `unreached` (the door-knock task is then closed). When a record becomes final
//! (acknowledged, confirmed, cancelled, withdrawn, closed `reached` or `unreached` — not
//! when it merely escalates), every warning and door-knock attempt of it still with a
//! driver (started, accepted or sent; not delivered or failed) gets an `attempt_cancelled`
//! record and a `DriverCommand::Cancel`: an ack by SMS hangs up the call still ringing. A
//! later driver outcome for a cancelled attempt is recorded and changes nothing (a
//! `delivered` still counts the person as reached). Records that need no ack (residents by
//! default, every blue record) end `reached` when delivered, or `unreached` when every
//! route failed or no delivery report came by the deadline. [`Counts::reached`] counts the
//! people the warning actually reached (delivered on some bearer, or they acknowledged),
//! whatever state their record is in: an escalated or door-knock-confirmed record whose own
//! warning never arrived is not "reached".
//!
//! # Deadlines
//!
//! A record's ack window (without ack: the wait for a delivery report) and its reminders
//! run from its first warning attempt handed to a device — its first `attempt_started`
//! record — not from planning. Under-provisioned bearers therefore delay deadlines instead
//! of escalating or closing people whose first message is still queued: a record waiting in
//! the queue is `planned`, and is neither escalated nor closed. If that first attempt is
//! abandoned before any device accepted it (the device went down), nothing went out and
//! the window waits for the next attempt. A door-knock task's deadline likewise runs from
//! the task's first attempt. Everything is derived from records, so a replay gives the same
//! timers. A re-plan without re-notifying keeps the window (`window_from`); a re-notify
//! starts a new one with the first attempt of the new text.
//!
//! A record that needs no ack and was not delivered by its deadline is not closed while a
//! lane of its warning still waits for its first attempt and some device of that lane's
//! bearer is up: a resident's app push goes out at once (the app reports `sent`, never
//! `delivered`), their SMS waits behind the leads', and closing at the push's deadline
//! would cancel the SMS that reaches them. That lane's first attempt gives the record a
//! new deadline, one window from it. With every device of the waiting lanes' bearers down
//! at the deadline, nothing would move and the record closes `unreached` as before; a
//! record held while its devices go down later stays open with its send queued, like a
//! not-attempted record with nobody to escalate to. The decision is taken from the state
//! when the deadline fires and the new deadline from the attempt's record, so a restore
//! reproduces both.
//!
//! # Versions
//!
//! An update that raises the grade, changes the instruction text or the exercise mark, or
//! that the operator marks re-notify ([`Router::handle_update_with`]) gives every person
//! still inside the area a new version of their record ([`DeliveryPlan::version`]): the new
//! message with a fresh code ([`version_code`]) and a new ack window — those who already
//! acknowledged, were reached, were confirmed by a door knock or closed unreached
//! included. Their earlier ack stays on record as the ack of the earlier version. Every
//! `attempt_started` and ack says which version it belongs to; a reply carrying an
//! earlier version's code is judged against that version (an ack of it, or a duplicate)
//! and never closes the current one. A door-knock chain that ended with an earlier
//! version is over: the new version escalates from the person's own supervisor, with a
//! new task code ([`door_code_of`]); a chain still running carries on. Other updates (a
//! lower grade alone, a new headline) re-plan open records only.
//!
//! One exception keeps a dead network from hiding a person: a record that needs an ack
//! and escalates, and whose warning could not start on any device within one ack window
//! of its plan (every device of their bearers down or saturated), is escalated anyway —
//! the `escalated` record then says "not attempted: no device could send in time". Its
//! queued sends stay queued and go out when a device can take them (an ack within the
//! window of that first attempt is not late: the gateway was); the door-knock task's
//! own message waits for a device the same way (its deadline runs from its first
//! attempt). A person with nobody above them to escalate to is left open instead: closing
//! them would drop the warning still queued for them. Records that need no ack (residents)
//! are still never closed before an attempt.
//!
//! # Loudspeakers
//!
//! An [`AlertPlan`] lists the speakers in the alert's area ([`SpeakerTarget`]). When the
//! grade's policy sounds speakers ([`Policies::speakers`]: red and orange by default), each
//! gets one announcement: the warning text without a code, sent to the speaker's device
//! with `to = Address::Speaker(group)`, at once (speaker drivers queue and preempt
//! programmes by grade themselves, so no send budget applies), or when the device comes
//! back up. Announcements are not 叫应 records and never count as people; they move
//! `planned → playing` (handed to the device) `→ reached` (a `Delivered` from the driver:
//! a speaker's RTCP receiver report, kept as evidence) or `no_evidence` (no report within
//! the grade's `speaker_window_s` of the programme being handed over or starting, or the
//! driver failed it; a late report still turns it into `reached`). Cancelling the alert
//! cancels playing programmes on the device (the driver says "cancelled" where it was
//! heard) and sends the cancellation notice to speakers that already played it. After a
//! restart, announcements handed over but never started are handed over again.
//!
//! # The ack rule
//!
//! An inbound message counts as an ack when it comes from an address registered to that
//! person (exact match on the [`tocsin_core::Address`]) AND carries the code of one of that
//! person's open records: a 4-character token anywhere in the text, full-width and
//! lowercase folded ("1 K7QX", "K7QX", "收到k7qx", "1k7qx"). A bare acknowledgement without
//! a code — "1", "１", "收到", "确认", "ok"/"OK", "好" after trimming and folding — counts only
//! if that person has exactly one open record (an alert record or a door-knock task) that
//! needs an ack (a door-knock task counts only while not yet accepted, and not at all
//! while the person's own live warning is open: their "1" is about their own warning) —
//! except over a bearer that authenticates the sender
//! (`Capabilities::sender_authenticated`: BeiDou cards, Meshtastic nodes, later voice calls
//! answered in the person's own call): there a bare ack from an address registered to
//! exactly one person counts for that person's most urgent open record (a live alert's
//! before a drill's, then their own warning before a door-knock task, then the highest
//! grade, then the most recently opened; a door-knock task opens when escalated), even
//! when they
//! have several. An address shared by several people (a village terminal) keeps the strict
//! rule, and SMS, whose caller id can be forged, always does. When the bearer says which
//! attempt a reply answers (`DriverEvent::Inbound::in_reply_to`: key 1 pressed in the call
//! placed for that attempt), a bare ack, or a code of that record, goes to THAT attempt's
//! record (the person's warning or a door-knock task) whatever else is open, provided the
//! attempt was placed on the same device to the sender's address and the sender owns the
//! record; if that record has closed meanwhile the verdict is about it (duplicate, late,
//! closed), never about another. The reply record keeps `in_reply_to`. A door-knock task
//! is accepted the same way by any supervisor it was sent to (a bare ack), and its visit
//! confirmed with the task code: `AckCode::derive(key, alert, "{person}/door")` (see
//! [`door_code`]).
//! A bare ack from someone with nothing open is judged the same way against their records
//! that closed without their ack (`unreached`, or `confirmed` by a door knock): it counts as
//! a late ack. Everything else is recorded as a rejected reply with the reason and never counted:
//! unknown sender, wrong code, someone else's code (naming whose, for the audit only),
//! ambiguous bare ack, code of a cancelled or withdrawn record. A second ack for the same
//! record (e.g. over another bearer) is recorded as a duplicate and counts once.
//!
//! Guessing defence: of a reply that carries several codes only the first three are
//! tried, and once five wrong codes (each candidate tried counts) came from one address
//! within ten minutes, its replies in the next ten minutes are recorded as rejected
//! `rate_limited` without being tried — except a key pressed in the gateway's own call
//! (`in_reply_to`), which is no guess. A rejected reply counts against the alerts where
//! the sender has an open record or door-knock task; with none open, against the one
//! whose record of theirs closed last, if within the hour; else against none. Every
//! reply is recorded with its verdict, and the device's inbound receipt is released in the
//! same output batch, after the record.
//!
//! # Sending
//!
//! Each device has a token bucket of `Capabilities::per_minute` with burst 1. Sends wait in
//! a queue per bearer ordered live before drill (a drill of any grade waits behind every
//! live send), then by grade (red first), then urgency — warnings to responsible
//! persons (by role, or targeted for a named area they answer for), door-knock tasks, and
//! notices to them go before residents' sends of the same grade — then by due time (FIFO:
//! everyone's first warning, due at planning, goes before reminders and retries that fall
//! due later). Each device takes the next send as soon as its budget allows, and the first
//! sends go out within the `handle_alert` call itself. [`Router::poll_timeout`] includes
//! the next budget instant.
//!
//! # Texts
//!
//! Each attempt carries the text the chosen device takes in one attempt
//! (`Capabilities::max_chars`, 0 meaning no stated limit): the full text when it fits,
//! else a short form — `【红色预警】{headline} 回复1 {CODE}` for the warning, with `【演练】`
//! first for exercises — with the headline cut if even that is too long; the code and the
//! exercise mark are never cut (see [`text`]). The `attempt_started` record carries the
//! text actually sent.

pub mod plan;
pub mod policy;
pub mod record;
pub mod relays;
pub mod reply;
mod router;
mod speakers;
mod state;
pub mod text;
pub mod view;
mod views;

pub use plan::{
    AlertPlan, Contact, KitTarget, NamedAreaRef, SpeakerTarget, Target, TargetReason, Uplink,
};
pub use policy::{GradePolicy, KindOverride, KindPolicies, Policies, PolicyError, RoleOverride};
pub use record::{
    DEFAULT_VISIT_MS, DeliveryPlan, DoorKnockTask, NoticeKind, Outcome, Purpose, Record, Rejection,
    RelayFrame, Route, Verdict, version_code,
};
pub use relays::{RelayState, RelayView, RelayedAck};
pub use router::{DeviceInfo, Output, Router, RouterConfig, RouterError, door_code, door_code_of};
pub use view::{
    AlertState, AlertSummary, AttemptView, BearerLoad, Counts, DeliveryState, DeliveryView,
    DoorKnockView, Preview, SpeakerCounts, SpeakerState, SpeakerView, TaskState,
};
