//! Replay verification: re-runs a session from its events and checks every
//! recorded wave hash — replays, spectating and anti-cheat from the same
//! data. A recorded `WaveCompleted` whose hash, outcome, end tick or lives the
//! simulation does not reproduce is a mismatch.

use allies_contracts::timesquare::events::GameEvent;
use allies_core::Aggregate;

use crate::session::GameSession;

/// One wave as recorded and as replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveCheck {
    pub wave: u32,
    pub recorded_hash: String,
    pub replayed_hash: String,
    pub recorded_outcome: String,
    pub replayed_outcome: String,
    pub ok: bool,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub events: u64,
    pub waves: Vec<WaveCheck>,
    /// Problems that are not a wave's (missing rules, a changed rules content).
    pub problems: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.waves.iter().all(|w| w.ok)
    }
}

/// Replays `events` (versions 1..) with `book`'s rules and checks every wave.
pub fn verify(events: &[GameEvent], book: &crate::book::Book) -> Verification {
    let mut state = GameSession::with_rules(book.clone());
    let mut report = Verification::default();
    for e in events {
        report.events += 1;
        match e {
            GameEvent::Created(c) => match book.get(c.rules_version) {
                None => report.problems.push(format!("rules version {} is not loaded", c.rules_version)),
                Some(r) if r.content_hash() != c.rules_hash => report.problems.push(format!(
                    "rules version {} has content {} here, the session was created with {}",
                    c.rules_version,
                    r.content_hash(),
                    c.rules_hash
                )),
                Some(_) => {}
            },
            GameEvent::WaveCompleted(w) => {
                let mut probe = state.clone();
                probe.advance(w.end_tick);
                let hash = probe.state_hash();
                let (tick, how) = probe
                    .battle
                    .as_ref()
                    .and_then(|b| b.ended)
                    .map(|(t, h)| (t, h.as_str().to_owned()))
                    .unwrap_or((probe.battle.as_ref().map(|b| b.tick).unwrap_or(0), "running".into()));
                let ok = hash == w.state_hash && how == w.outcome && tick == w.end_tick && probe.lives == w.lives;
                report.waves.push(WaveCheck {
                    wave: w.wave,
                    recorded_hash: w.state_hash.clone(),
                    replayed_hash: hash,
                    recorded_outcome: w.outcome.clone(),
                    replayed_outcome: how,
                    ok,
                });
            }
            _ => {}
        }
        state.evolve(e);
    }
    report
}
