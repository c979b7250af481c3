//! One matchmaker pass, as a pure function: the waiting tickets in, the
//! groups to form and the tickets to expire out.
//!
//! Oldest ticket first, each becomes the anchor of a group: candidates are
//! the tickets of the same difficulty whose preferred maps share one with
//! the group, taken nearest in rating first, as long as the group's rating
//! spread (highest − lowest ticket rating) stays within the anchor's window
//! and its players fit every ticket's maximum. The window widens with the
//! anchor's waiting time: `base + per_second × waited`, at most `max`. A
//! group forms when it reaches the smallest maximum of its tickets, or —
//! once the anchor has waited `fill_after` — as soon as it has the largest
//! minimum. (Nakama's matchmaker: min/max counts, criteria that widen over
//! time, ticket expiry, parties as one ticket.)

use std::collections::{BTreeMap, BTreeSet};

/// A waiting ticket as the matchmaker sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Waiting {
    pub ticket_id: String,
    /// (user id, rating).
    pub players: Vec<(String, i32)>,
    pub rating: i32,
    /// Preferred maps; empty: any.
    pub maps: Vec<String>,
    pub difficulty: String,
    pub min_players: u32,
    pub max_players: u32,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub base_window: i32,
    pub widen_per_second: i32,
    pub max_window: i32,
    pub fill_after_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { base_window: 100, widen_per_second: 20, max_window: 1_000, fill_after_ms: 10_000 }
    }
}

impl Settings {
    /// The rating window of a ticket waiting since `created_at_ms`.
    pub fn window(&self, created_at_ms: i64, now_ms: i64) -> i32 {
        let waited = ((now_ms - created_at_ms).max(0) / 1000).min(i64::from(i32::MAX)) as i32;
        self.base_window.saturating_add(self.widen_per_second.saturating_mul(waited)).min(self.max_window)
    }
}

/// A group to form into a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub tickets: Vec<String>,
    /// (user id, rating, ticket id).
    pub players: Vec<(String, i32, String)>,
    pub map: String,
    pub difficulty: String,
    pub window: i32,
    pub spread: i32,
}

/// The outcome of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub groups: Vec<Group>,
    pub expired: Vec<String>,
}

fn maps_of(t: &Waiting, all: &BTreeSet<String>) -> BTreeSet<String> {
    if t.maps.is_empty() { all.clone() } else { t.maps.iter().filter(|m| all.contains(*m)).cloned().collect() }
}

/// Runs one pass over `waiting` at `now_ms`; `all_maps` are the maps a
/// ticket without preference accepts.
pub fn pass(waiting: &[Waiting], now_ms: i64, settings: &Settings, all_maps: &[String]) -> Pass {
    let all: BTreeSet<String> = all_maps.iter().cloned().collect();
    let mut out = Pass::default();
    let mut live: Vec<&Waiting> = Vec::with_capacity(waiting.len());
    for t in waiting {
        if now_ms >= t.expires_at_ms {
            out.expired.push(t.ticket_id.clone());
        } else {
            live.push(t);
        }
    }
    // Oldest first (ties by id): the anchors' order.
    live.sort_by(|a, b| (a.created_at_ms, &a.ticket_id).cmp(&(b.created_at_ms, &b.ticket_id)));
    // Per difficulty, the unassigned tickets by (rating, age, id).
    let mut pools: BTreeMap<&str, BTreeSet<(i32, i64, usize)>> = BTreeMap::new();
    for (i, t) in live.iter().enumerate() {
        pools.entry(t.difficulty.as_str()).or_default().insert((t.rating, t.created_at_ms, i));
    }
    let mut taken = vec![false; live.len()];
    for (ai, anchor) in live.iter().enumerate() {
        if taken[ai] {
            continue;
        }
        if anchor.players.len() as u32 > anchor.max_players {
            continue; // cannot fit any game it accepts (FindMatch refuses such tickets)
        }
        let Some(pool) = pools.get_mut(anchor.difficulty.as_str()) else { continue };
        let window = settings.window(anchor.created_at_ms, now_ms);
        let mut maps = maps_of(anchor, &all);
        if maps.is_empty() {
            continue;
        }
        let mut members = vec![ai];
        let mut players = anchor.players.len() as u32;
        let mut max = anchor.max_players;
        let mut min = anchor.min_players;
        let (mut lo, mut hi) = (anchor.rating, anchor.rating);
        let key = (anchor.rating, anchor.created_at_ms, ai);
        // Nearest in rating first: walk down and up from the anchor at once.
        let mut down = pool.range(..key).rev().peekable();
        let mut up = pool.range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)).peekable();
        while players < max {
            let pick = match (down.peek(), up.peek()) {
                (Some(d), Some(u)) => {
                    if anchor.rating - d.0 <= u.0 - anchor.rating {
                        down.next()
                    } else {
                        up.next()
                    }
                }
                (Some(_), None) => down.next(),
                (None, Some(_)) => up.next(),
                (None, None) => None,
            };
            let Some(&(rating, _, ci)) = pick else { break };
            if (rating - anchor.rating).abs() > window {
                // Both directions are sorted: once one side leaves the
                // window, only the other can still give candidates.
                if down.peek().is_none_or(|d| anchor.rating - d.0 > window)
                    && up.peek().is_none_or(|u| u.0 - anchor.rating > window)
                {
                    break;
                }
                continue;
            }
            let c = live[ci];
            let size = c.players.len() as u32;
            let (nlo, nhi) = (lo.min(rating), hi.max(rating));
            if nhi - nlo > window
                || players + size > max.min(c.max_players)
                || min.max(c.min_players) > max.min(c.max_players)
            {
                continue;
            }
            let shared: BTreeSet<String> = maps.intersection(&maps_of(c, &all)).cloned().collect();
            if shared.is_empty()
                || c.players.iter().any(|(u, _)| members.iter().any(|m| live[*m].players.iter().any(|(v, _)| v == u)))
            {
                continue;
            }
            maps = shared;
            members.push(ci);
            players += size;
            max = max.min(c.max_players);
            min = min.max(c.min_players);
            (lo, hi) = (nlo, nhi);
        }
        let waited = now_ms - anchor.created_at_ms;
        let complete = players == max || (waited >= settings.fill_after_ms && players >= min.max(2));
        if !complete || players < min {
            continue;
        }
        for m in &members {
            taken[*m] = true;
            let t = live[*m];
            pool.remove(&(t.rating, t.created_at_ms, *m));
        }
        let map = anchor.maps.iter().find(|m| maps.contains(*m)).cloned().or_else(|| maps.iter().next().cloned());
        out.groups.push(Group {
            tickets: members.iter().map(|m| live[*m].ticket_id.clone()).collect(),
            players: members
                .iter()
                .flat_map(|m| {
                    let t = live[*m];
                    t.players.iter().map(|(u, r)| (u.clone(), *r, t.ticket_id.clone()))
                })
                .collect(),
            map: map.unwrap_or_default(),
            difficulty: anchor.difficulty.clone(),
            window,
            spread: hi - lo,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Rng;

    fn ticket(id: &str, rating: i32, created: i64, players: usize) -> Waiting {
        Waiting {
            ticket_id: id.into(),
            players: (0..players).map(|i| (format!("{id}-p{i}"), rating)).collect(),
            rating,
            maps: vec![],
            difficulty: "normal".into(),
            min_players: 2,
            max_players: 4,
            created_at_ms: created,
            expires_at_ms: created + 60_000,
        }
    }

    fn maps() -> Vec<String> {
        vec!["canyon".into(), "meadow".into()]
    }

    #[test]
    fn full_groups_form_at_once_and_small_ones_after_waiting() {
        let s = Settings::default();
        let t: Vec<Waiting> = (0..4).map(|i| ticket(&format!("t{i}"), 1500 + i * 10, 0, 1)).collect();
        let p = pass(&t, 1_000, &s, &maps());
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].players.len(), 4);
        assert_eq!(p.groups[0].spread, 30);
        // Three players wait for a fourth, until fill_after.
        let three = &t[..3];
        assert!(pass(three, 1_000, &s, &maps()).groups.is_empty());
        assert_eq!(pass(three, 10_000, &s, &maps()).groups[0].players.len(), 3);
    }

    #[test]
    fn the_window_widens_with_waiting_and_bounds_the_spread() {
        let s = Settings::default();
        let t = vec![ticket("a", 1500, 0, 2), ticket("b", 1800, 0, 2)];
        assert!(pass(&t, 1_000, &s, &maps()).groups.is_empty(), "300 apart, window 120");
        // 10 s later the window is 300: they match.
        let p = pass(&t, 10_000, &s, &maps());
        assert_eq!((p.groups.len(), p.groups[0].window, p.groups[0].spread), (1, 300, 300));
    }

    #[test]
    fn parties_stay_together_maps_must_meet_and_tickets_expire() {
        let s = Settings::default();
        let mut a = ticket("a", 1500, 0, 3);
        a.maps = vec!["canyon".into()];
        let mut b = ticket("b", 1500, 0, 1);
        b.maps = vec!["meadow".into()];
        let c = ticket("c", 1500, 0, 1);
        let p = pass(&[a.clone(), b, c], 1_000, &s, &maps());
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].tickets, vec!["a", "c"]);
        assert_eq!(p.groups[0].map, "canyon");
        let mut old = ticket("old", 1500, 0, 1);
        old.expires_at_ms = 500;
        let p = pass(&[old], 1_000, &s, &maps());
        assert_eq!(p.expired, vec!["old"]);
    }

    /// Random queues: no ticket in two groups, every group within its
    /// window and its players' limits, nothing formed that was not waiting.
    #[test]
    fn random_queues_respect_every_limit() {
        let s = Settings::default();
        for seed in 1..=30u64 {
            let mut rng = Rng(seed);
            let n = 50 + rng.up_to(400) as usize;
            let t: Vec<Waiting> = (0..n)
                .map(|i| {
                    let mut w = ticket(
                        &format!("t{i}"),
                        1000 + rng.up_to(1000) as i32,
                        i64::from(rng.up_to(30_000)),
                        1 + rng.up_to(2) as usize,
                    );
                    w.min_players = 2 + rng.up_to(1);
                    w.max_players = (w.min_players + rng.up_to(4 - w.min_players)).max(w.players.len() as u32);
                    w.difficulty = ["easy", "normal"][rng.up_to(1) as usize].into();
                    w
                })
                .collect();
            let p = pass(&t, 30_000, &s, &maps());
            let mut seen = BTreeSet::new();
            for g in &p.groups {
                let ts: Vec<&Waiting> =
                    g.tickets.iter().map(|id| t.iter().find(|w| &w.ticket_id == id).unwrap()).collect();
                let ratings: Vec<i32> = ts.iter().map(|w| w.rating).collect();
                let spread = ratings.iter().max().unwrap() - ratings.iter().min().unwrap();
                assert!(spread <= g.window && spread == g.spread, "{g:?}");
                let size: u32 = ts.iter().map(|w| w.players.len() as u32).sum();
                assert!(ts.iter().all(|w| size >= w.min_players && size <= w.max_players), "{g:?}");
                assert!(ts.iter().all(|w| w.difficulty == g.difficulty));
                for id in &g.tickets {
                    assert!(seen.insert(id.clone()), "{id} in two groups");
                }
            }
            assert!(!p.groups.is_empty(), "seed {seed}: something matched");
        }
    }
}
