//! Draws a game in the terminal: the grid with the path, rocks, build
//! zones, towers and enemies, and a header with the wave, lives and gold.

use std::collections::HashMap;

use allies_contracts::timesquare::v1::{Frame, GameView};

/// Milli-tiles per tile (enemy positions in frames).
const TILE: i64 = 1000;

/// What the board shows: the last snapshot and the last frame of its wave.
#[derive(Default)]
pub struct Board {
    pub view: GameView,
    pub frame: Option<Frame>,
    /// When playing from the board: the cursor's cell, the keys, the last answer.
    pub controls: Option<super::keys::Controls>,
}

fn tower_glyph(kind: &str, level: u32) -> String {
    let c = kind.chars().next().unwrap_or('?').to_ascii_uppercase();
    format!("{c}{}", level + 1)
}

impl Board {
    /// The board and its header as text (2 characters per cell).
    pub fn render(&self) -> String {
        let v = &self.view;
        let mut out = String::new();
        let wave = if v.phase == "in_wave" {
            format!("wave {} of {} running", v.wave, v.total_waves)
        } else {
            format!("{} of {} waves cleared", v.waves_cleared, v.total_waves)
        };
        let lives = self.frame.as_ref().map(|f| f.lives).unwrap_or(v.lives);
        out.push_str(&format!(
            "{} · {} on {} · {} · {wave} · lives {lives} · score {}{}\n",
            v.session_id,
            v.difficulty,
            v.map,
            v.phase,
            v.score,
            if v.outcome.is_empty() || v.outcome == v.phase {
                String::new()
            } else {
                format!(" · {}", v.outcome.to_uppercase())
            }
        ));
        let gold: HashMap<&str, i64> = match &self.frame {
            Some(f) => f.gold.iter().map(|g| (g.user_id.as_str(), g.gold)).collect(),
            None => v.players.iter().map(|p| (p.user_id.as_str(), p.gold)).collect(),
        };
        for p in &v.players {
            let seat = match (p.seat, p.zone.first()) {
                (s, Some(r)) if s >= 0 => format!("zone {} (x {}-{}, y {}-{})", s + 1, r.x0, r.x1, r.y0, r.y1),
                _ => "in the lobby".to_owned(),
            };
            let flags = [(!p.present).then_some("left"), (v.phase == "lobby" && p.ready).then_some("ready")];
            let flags: Vec<&str> = flags.into_iter().flatten().collect();
            out.push_str(&format!(
                "  {:<20} {seat:<26} gold {:>5}  kills {:>4}{}{}\n",
                p.display_name,
                gold.get(p.user_id.as_str()).copied().unwrap_or(p.gold),
                p.kills,
                if p.user_id == v.host { "  host" } else { "" },
                if flags.is_empty() { String::new() } else { format!("  ({})", flags.join(", ")) },
            ));
        }
        let Some(board) = &v.board else { return out };
        let (w, h) = (board.width.max(0) as usize, board.height.max(0) as usize);
        let mut grid = vec![vec!["· ".to_owned(); w]; h];
        let mut put = |x: i32, y: i32, s: String| {
            if let Some(cell) = usize::try_from(y)
                .ok()
                .and_then(|y| grid.get_mut(y))
                .and_then(|row| usize::try_from(x).ok().and_then(|x| row.get_mut(x)))
            {
                *cell = s;
            }
        };
        for c in &board.path {
            put(c.x, c.y, "==".into());
        }
        for c in &board.blocked {
            put(c.x, c.y, "##".into());
        }
        if let (Some(first), Some(last)) = (board.waypoints.first(), board.waypoints.last()) {
            put(first.x, first.y, ">>".into());
            put(last.x, last.y, "[]".into());
        }
        for t in &v.towers {
            put(t.x, t.y, tower_glyph(&t.tower_type, t.level));
        }
        if let Some(f) = &self.frame {
            let mut at: HashMap<(i64, i64), (char, usize)> = HashMap::new();
            for e in &f.enemies {
                let cell = (e.x.div_euclid(TILE), e.y.div_euclid(TILE));
                let entry = at.entry(cell).or_insert((e.kind.chars().next().unwrap_or('e'), 0));
                entry.1 += 1;
            }
            for ((x, y), (c, n)) in at {
                let count = if n > 9 {
                    '+'
                } else if n > 1 {
                    char::from(b'0' + n as u8)
                } else {
                    ' '
                };
                put(x as i32, y as i32, format!("{c}{count}"));
            }
        }
        if let Some(c) = &self.controls
            && let Some(cell) = usize::try_from(c.cursor.1)
                .ok()
                .and_then(|y| grid.get_mut(y))
                .and_then(|row| usize::try_from(c.cursor.0).ok().and_then(|x| row.get_mut(x)))
        {
            // Reverse video: the cell the keys act on.
            *cell = format!("\x1b[7m{cell}\x1b[0m");
        }
        // Column numbers above (x), row numbers left (y): what `game place <type> <x> <y>` takes.
        let header: String = (0..w).map(|x| format!("{:<2}", x % 100)).collect();
        out.push_str(&format!("   {}\n", header.trim_end()));
        for (y, row) in grid.into_iter().enumerate() {
            out.push_str(&format!("{y:>2} {}\n", row.concat()));
        }
        if let Some(f) = &self.frame {
            out.push_str(&format!("tick {} · {} enemies · {} shots\n", f.tick, f.enemies.len(), f.shots.len()));
            // The most hurt first: hit points (and shield) as they are now.
            let mut hurt: Vec<&allies_contracts::timesquare::v1::EnemyView> = f.enemies.iter().collect();
            hurt.sort_by_key(|e| (e.hp * 1000 / e.max_hp.max(1), e.id));
            let shown: Vec<String> = hurt
                .iter()
                .take(6)
                .map(|e| {
                    let shield = if e.shield > 0 { format!("+{}", e.shield) } else { String::new() };
                    format!("{} #{} {}/{}{shield} hp", e.kind, e.id, e.hp, e.max_hp)
                })
                .collect();
            if !shown.is_empty() {
                out.push_str(&format!("  enemies: {}\n", shown.join(", ")));
            }
        }
        // Tower ids: what `game upgrade <id>` and `game sell <id>` take.
        let owners: HashMap<&str, &str> =
            v.players.iter().map(|p| (p.user_id.as_str(), p.display_name.as_str())).collect();
        for t in &v.towers {
            out.push_str(&format!(
                "  tower {:>3}  {} at ({}, {})  {}  {} kills\n",
                t.tower_id,
                tower_glyph(&t.tower_type, t.level),
                t.x,
                t.y,
                owners.get(t.owner.as_str()).copied().unwrap_or(t.owner.as_str()),
                t.kills
            ));
        }
        out.push_str(
            "== path  >> spawn  [] exit  ## rock  A2 tower (type initial, level)  g3 enemies (kind initial, count)\n",
        );
        if let Some(c) = &self.controls {
            out.push_str(&format!("{}\ncursor ({}, {})  {}\n", c.help(), c.cursor.0, c.cursor.1, c.status));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use allies_contracts::timesquare::v1::{Board as B, Cell, EnemyView, PlayerView, Rect, TowerView};

    use super::*;

    #[test]
    fn draws_path_zones_towers_and_enemies() {
        let cell = |x, y| Cell { x, y };
        let view = GameView {
            session_id: "s".into(),
            phase: "in_wave".into(),
            map: "m".into(),
            wave: 1,
            total_waves: 20,
            lives: 20,
            players: vec![PlayerView {
                user_id: "u".into(),
                display_name: "ann".into(),
                seat: 0,
                gold: 50,
                present: true,
                zone: vec![Rect { x0: 0, y0: 0, x1: 1, y1: 0 }],
                ..Default::default()
            }],
            towers: vec![TowerView {
                tower_id: 7,
                owner: "u".into(),
                tower_type: "arrow".into(),
                level: 1,
                x: 1,
                y: 0,
                kills: 3,
            }],
            board: Some(B {
                width: 3,
                height: 2,
                path: vec![cell(0, 1), cell(1, 1), cell(2, 1)],
                blocked: vec![],
                waypoints: vec![cell(0, 1), cell(2, 1)],
            }),
            ..Default::default()
        };
        let frame = Frame {
            lives: 19,
            enemies: vec![
                EnemyView { id: 1, kind: "grunt".into(), x: 1500, y: 1500, hp: 20, max_hp: 60, shield: 0 },
                EnemyView { id: 2, kind: "grunt".into(), x: 1400, y: 1500, hp: 60, max_hp: 60, shield: 5 },
            ],
            ..Default::default()
        };
        let text = Board { view, frame: Some(frame), controls: None }.render();
        assert!(text.contains("lives 19"), "{text}");
        assert!(text.contains("   0 1 2\n 0 · A2· \n 1 >>g2[]\n"), "columns and rows are numbered: {text}");
        assert!(text.contains("enemies: grunt #1 20/60 hp, grunt #2 60/60+5 hp"), "the most hurt first: {text}");
        assert!(text.contains("tower   7  A2 at (1, 0)  ann  3 kills"), "tower ids and owners: {text}");
        assert!(text.contains("zone 1 (x 0-1, y 0-0)"), "{text}");
    }

    #[test]
    fn a_played_board_shows_its_cursor_keys_and_last_answer() {
        let view = GameView { board: Some(B { width: 2, height: 1, ..Default::default() }), ..Default::default() };
        let mut controls = crate::commands::keys::Controls::new(vec![]);
        controls.cursor = (1, 0);
        controls.status = "refused: not enough gold".into();
        let text = Board { view, frame: None, controls: Some(controls) }.render();
        assert!(text.contains(" 0 · \x1b[7m· \x1b[0m\n"), "the cursor's cell in reverse video: {text:?}");
        assert!(text.contains("w start wave · q quit\ncursor (1, 0)  refused: not enough gold"), "{text}");
    }
}
