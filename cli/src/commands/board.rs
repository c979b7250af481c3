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
        for row in grid {
            out.push_str(&row.concat());
            out.push('\n');
        }
        if let Some(f) = &self.frame {
            out.push_str(&format!("tick {} · {} enemies · {} shots\n", f.tick, f.enemies.len(), f.shots.len()));
        }
        out.push_str(
            "== path  >> spawn  [] exit  ## rock  A2 tower (type initial, level)  g3 enemies (kind initial, count)\n",
        );
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
            towers: vec![TowerView { tower_type: "arrow".into(), level: 1, x: 1, y: 0, ..Default::default() }],
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
                EnemyView { kind: "grunt".into(), x: 1500, y: 1500, ..Default::default() },
                EnemyView { kind: "grunt".into(), x: 1400, y: 1500, ..Default::default() },
            ],
            ..Default::default()
        };
        let text = Board { view, frame: Some(frame) }.render();
        assert!(text.contains("lives 19"), "{text}");
        assert!(text.contains("· A2· \n>>g2[]\n"), "{text}");
        assert!(text.contains("zone 1 (x 0-1, y 0-0)"), "{text}");
    }
}
