//! Reports, computed from the event history itself:
//!
//! - `daily_game_statistics` — per UTC day, map and difficulty: games, win
//!   rate, average and best wave, average length, most built tower; from
//!   timesquare's `GameEnded` integration events (the `games` topic, never
//!   trimmed) that ended in the range;
//! - `player_activity` — per player who finished a game in the range:
//!   games, victories, kills, towers built, best wave, first and last game;
//! - `operations_summary` — the configuration changes, the maintenance
//!   performed, the reports generated in the range, and each system-metrics
//!   series' min / average / max / last over it.
//!
//! Each is a table rendered as CSV (RFC 4180 quoting) or JSON (an array of
//! objects). A `GameEnded` delivered twice on the topic counts once (by
//! event id). Progress is entries read of the topic's entries.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allies_contracts::command::events::v1::ReportSpec;
use allies_contracts::command::events::{CONFIGURATION_ID, CONFIGURATION_TYPE, ConfigurationEvent};
use allies_contracts::timesquare::integration::v1::GameEnded;
use allies_store::EventStore;
use command_domain::job::Artifact;
use serde_json::{Value, json};

use crate::attempt::{Attempt, CHUNK, Stop};
use crate::report_data::{GamesCursor, ReportData};

const DAY_MS: i64 = 86_400_000;

pub struct Reports {
    pub store: Arc<dyn EventStore>,
    /// The games topic, the job index, the metrics samples, the bytes.
    pub data: Arc<dyn ReportData>,
    /// How long a report's bytes are kept (COMMAND_REPORT_RETENTION_SECS).
    pub retention: Duration,
}

/// A report's rows.
#[derive(Debug, Default)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Value>>,
}

fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

impl Table {
    /// The report's bytes and content type.
    pub fn render(&self, format: &str) -> (Vec<u8>, &'static str) {
        if format == "json" {
            let rows: Vec<Value> = self
                .rows
                .iter()
                .map(|r| Value::Object(self.columns.iter().map(|c| c.to_string()).zip(r.iter().cloned()).collect()))
                .collect();
            let text = serde_json::to_vec_pretty(&rows).unwrap_or_default();
            return (text, "application/json");
        }
        let mut out = self.columns.join(",");
        out.push_str("\r\n");
        for r in &self.rows {
            out.push_str(&r.iter().map(csv_field).collect::<Vec<_>>().join(","));
            out.push_str("\r\n");
        }
        (out.into_bytes(), "text/csv")
    }
}

fn ratio(a: u64, b: u64) -> Value {
    if b == 0 { json!(0.0) } else { json!(((a as f64 / b as f64) * 10_000.0).round() / 10_000.0) }
}

#[derive(Default)]
struct Day {
    games: u64,
    victories: u64,
    defeats: u64,
    waves: u64,
    best_wave: u32,
    duration: i64,
    towers: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Activity {
    name: String,
    games: u64,
    victories: u64,
    kills: u64,
    towers: u64,
    best_wave: u32,
    first: i64,
    last: i64,
}

impl Reports {
    /// Generates the report of `spec` under `attempt` and records it.
    pub async fn run(&self, attempt: &Attempt, spec: &ReportSpec) -> Result<(), Stop> {
        let table = match spec.kind.as_str() {
            "daily_game_statistics" => self.daily(attempt, spec).await?,
            "player_activity" => self.players(attempt, spec).await?,
            _ => self.operations(attempt, spec).await?,
        };
        let (bytes, content_type) = table.render(&spec.format);
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        self.data.put_report(&attempt.id, attempt.attempt, &chunks, self.retention).await?;
        let artifact = Artifact {
            rows: table.rows.len() as u64,
            bytes: bytes.len() as u64,
            checksum: allies_store::checksum(&bytes),
            content_type: content_type.to_owned(),
            chunks: chunks.len().max(1) as u32,
        };
        match attempt.finish_report(artifact).await {
            Ok(()) => {
                // Earlier attempts' bytes (workers that died) are not the report.
                for n in 1..attempt.attempt {
                    self.data.drop_report(&attempt.id, n).await;
                }
                Ok(())
            }
            Err(Stop::Superseded) => {
                self.data.drop_report(&attempt.id, attempt.attempt).await;
                Err(Stop::Superseded)
            }
            Err(e) => Err(e),
        }
    }

    /// Calls `each` on every game that ended in the range, once each.
    async fn games(&self, attempt: &Attempt, spec: &ReportSpec, mut each: impl FnMut(&GameEnded)) -> Result<(), Stop> {
        let total = self.data.games_total().await?;
        // Entry ids are the times the events were recorded: games recorded
        // up to a day after they ended (or before) are still read.
        let (from_id, to_id) = ((spec.from_ms - DAY_MS).max(0), spec.to_ms.saturating_add(DAY_MS));
        let mut seen = HashSet::new();
        let (mut cursor, mut read) = (GamesCursor::default(), 0u64);
        attempt.progress(0, total, "reading games").await?;
        loop {
            let (games, covered) = self.data.games_page(&mut cursor, from_id, to_id).await?;
            if covered == 0 {
                break;
            }
            for (event_id, g) in &games {
                // A lobby abandoned before the start is no game.
                if g.started_at_ms <= 0 || g.ended_at_ms < spec.from_ms || g.ended_at_ms >= spec.to_ms {
                    continue;
                }
                if seen.insert(*event_id) {
                    each(g);
                }
            }
            read += covered;
            attempt.progress(read.min(total), total, "reading games").await?;
        }
        attempt.progress(total, total, "rendering").await
    }

    async fn daily(&self, attempt: &Attempt, spec: &ReportSpec) -> Result<Table, Stop> {
        let mut days: BTreeMap<(String, String, String), Day> = BTreeMap::new();
        self.games(attempt, spec, |g| {
            let d = days
                .entry((allies_core::calendar::utc_date(g.ended_at_ms), g.map.clone(), g.difficulty.clone()))
                .or_default();
            d.games += 1;
            match g.outcome.as_str() {
                "victory" => d.victories += 1,
                "defeat" => d.defeats += 1,
                _ => {}
            }
            d.waves += u64::from(g.waves_cleared);
            d.best_wave = d.best_wave.max(g.waves_cleared);
            d.duration += g.duration_ms.max(0);
            for t in &g.towers {
                *d.towers.entry(t.tower_type.clone()).or_default() += u64::from(t.count);
            }
        })
        .await?;
        let columns = vec![
            "day",
            "map",
            "difficulty",
            "games",
            "victories",
            "defeats",
            "win_rate",
            "average_wave",
            "best_wave",
            "average_duration_ms",
            "top_tower",
        ];
        let rows = days
            .into_iter()
            .map(|((day, map, difficulty), d)| {
                let top =
                    d.towers.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0))).map(|(t, _)| t.clone());
                vec![
                    json!(day),
                    json!(map),
                    json!(difficulty),
                    json!(d.games),
                    json!(d.victories),
                    json!(d.defeats),
                    ratio(d.victories, d.games),
                    ratio(d.waves, d.games),
                    json!(d.best_wave),
                    json!(d.duration / d.games.max(1) as i64),
                    json!(top.unwrap_or_default()),
                ]
            })
            .collect();
        Ok(Table { columns, rows })
    }

    async fn players(&self, attempt: &Attempt, spec: &ReportSpec) -> Result<Table, Stop> {
        let mut players: BTreeMap<String, Activity> = BTreeMap::new();
        self.games(attempt, spec, |g| {
            for p in &g.players {
                let a = players.entry(p.user_id.clone()).or_default();
                if a.games == 0 || g.ended_at_ms >= a.last {
                    a.name = p.display_name.clone();
                }
                a.games += 1;
                a.victories += u64::from(g.outcome == "victory");
                a.kills += u64::from(p.kills);
                a.towers += u64::from(p.towers_built);
                a.best_wave = a.best_wave.max(g.waves_cleared);
                a.first = if a.first == 0 { g.ended_at_ms } else { a.first.min(g.ended_at_ms) };
                a.last = a.last.max(g.ended_at_ms);
            }
        })
        .await?;
        let mut rows: Vec<(String, Activity)> = players.into_iter().collect();
        rows.sort_by(|a, b| b.1.games.cmp(&a.1.games).then_with(|| a.0.cmp(&b.0)));
        let columns = vec![
            "user_id",
            "display_name",
            "games",
            "victories",
            "win_rate",
            "kills",
            "towers_built",
            "best_wave",
            "first_game_ms",
            "last_game_ms",
        ];
        let rows = rows
            .into_iter()
            .map(|(id, a)| {
                vec![
                    json!(id),
                    json!(a.name),
                    json!(a.games),
                    json!(a.victories),
                    ratio(a.victories, a.games),
                    json!(a.kills),
                    json!(a.towers),
                    json!(a.best_wave),
                    json!(a.first),
                    json!(a.last),
                ]
            })
            .collect();
        Ok(Table { columns, rows })
    }

    async fn operations(&self, attempt: &Attempt, spec: &ReportSpec) -> Result<Table, Stop> {
        let in_range = |at: i64| at >= spec.from_ms && at < spec.to_ms;
        let mut rows = Vec::new();
        let mut row = |section: &str, name: String, value: Value, detail: String| {
            rows.push(vec![json!(section), json!(name), value, json!(detail)]);
        };
        attempt.progress(0, 3, "configuration").await?;
        let history = self.store.read(CONFIGURATION_TYPE, CONFIGURATION_ID, 1, usize::MAX).await?;
        let version = history.last().map(|r| r.envelope.version).unwrap_or(0);
        row("configuration", "version_now".into(), json!(version), String::new());
        for r in &history {
            let Ok(e) = r.typed::<ConfigurationEvent>() else { continue };
            let (kind, changes, reason, by, at) = match &e.payload {
                ConfigurationEvent::Updated(u) => ("update", &u.changes, &u.reason, &u.by, u.at_ms),
                ConfigurationEvent::RolledBack(b) => ("rollback", &b.changes, &b.reason, &b.by, b.at_ms),
            };
            if !in_range(at) {
                continue;
            }
            let diff: Vec<String> =
                changes.iter().map(|c| format!("{}: {} -> {}", c.key, c.old_value, c.new_value)).collect();
            row(
                "configuration",
                format!("version {}", r.envelope.version),
                json!(kind),
                format!("at {at} by {by}: {reason} ({})", diff.join("; ")),
            );
        }
        attempt.progress(1, 3, "jobs").await?;
        for (kind, section) in [("maintenance", "maintenance"), ("report", "reports")] {
            let ids = self.data.jobs_requested(kind, spec.from_ms, spec.to_ms).await?;
            row(section, "requested".into(), json!(ids.len()), String::new());
            if section != "maintenance" {
                continue;
            }
            for id in ids {
                let Ok(loaded) = allies_store::load::<command_domain::job::Job>(&*self.store, &id).await else {
                    continue;
                };
                let j = loaded.state;
                let what = j.maintenance().map(|m| m.operation.clone()).unwrap_or_default();
                let outcome = if j.error.is_empty() { j.result.clone() } else { j.error.clone() };
                row(section, what, json!(j.status.as_str()), format!("{id} by {}: {} => {outcome}", j.by, j.reason));
            }
        }
        attempt.progress(2, 3, "system metrics").await?;
        for series in crate::metrics::SERIES {
            let values = self.data.metric_samples(series, spec.from_ms, spec.to_ms).await?;
            let Some(last) = values.last() else { continue };
            let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let avg = values.iter().sum::<f64>() / values.len() as f64;
            row(
                "metrics",
                (*series).to_owned(),
                json!(last),
                format!("min {min} avg {avg:.2} max {max} over {} samples", values.len()),
            );
        }
        attempt.progress(3, 3, "rendering").await?;
        Ok(Table { columns: vec!["section", "name", "value", "detail"], rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_json_names_every_column() {
        let t = Table {
            columns: vec!["name", "games"],
            rows: vec![vec![json!("ann, the \"great\""), json!(3)], vec![json!("bob"), json!(1)]],
        };
        let (csv, ct) = t.render("csv");
        assert_eq!(ct, "text/csv");
        assert_eq!(String::from_utf8(csv).unwrap(), "name,games\r\n\"ann, the \"\"great\"\"\",3\r\nbob,1\r\n");
        let (j, ct) = t.render("json");
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v[0]["name"], "ann, the \"great\"");
        assert_eq!(v[1]["games"], 1);
    }
}
