//! Playing from the terminal board: while `game watch` draws a game on a
//! terminal, keys move a cursor over the grid and act on it — place a tower
//! (its number in the legend), upgrade or sell the tower under the cursor,
//! start the next wave, quit. The terminal is put in non-canonical mode
//! without echo for as long as the board runs, and restored after.

use allies_contracts::timesquare::v1::{GameView, TowerTypeView};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Key {
    Up,
    Down,
    Left,
    Right,
    Char(char),
}

/// What a key asks of the game.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Only the board changes (the cursor moved).
    Redraw,
    Place {
        tower_type: String,
        x: i32,
        y: i32,
    },
    Upgrade(u32),
    Sell(u32),
    Wave,
    Quit,
    /// Nothing to send; the reason is shown.
    Explain(String),
}

/// The keys a terminal sends in `bytes` (arrows as `ESC [ A`…`D`).
pub fn parse(bytes: &[u8]) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') && i + 2 < bytes.len() {
            let arrow = match bytes[i + 2] {
                b'A' => Some(Key::Up),
                b'B' => Some(Key::Down),
                b'C' => Some(Key::Right),
                b'D' => Some(Key::Left),
                _ => None,
            };
            if let Some(k) = arrow {
                keys.push(k);
            }
            i += 3;
            continue;
        }
        let k = match bytes[i] {
            b'k' => Key::Up,
            b'j' => Key::Down,
            b'h' => Key::Left,
            b'l' => Key::Right,
            b => Key::Char(char::from(b)),
        };
        keys.push(k);
        i += 1;
    }
    keys
}

/// The player's cursor and what the keys mean.
#[derive(Default)]
pub struct Controls {
    pub cursor: (i32, i32),
    /// The tower types in the rules' order: key 1 is the first.
    pub towers: Vec<TowerTypeView>,
    /// What the last action answered (or why it was refused).
    pub status: String,
}

impl Controls {
    pub fn new(towers: Vec<TowerTypeView>) -> Self {
        Self { cursor: (0, 0), towers, status: String::new() }
    }

    /// What `key` does on `view`.
    pub fn key(&mut self, key: Key, view: &GameView) -> Action {
        let (w, h) = view.board.as_ref().map_or((1, 1), |b| (b.width.max(1), b.height.max(1)));
        let (x, y) = self.cursor;
        let tower_here = || view.towers.iter().find(|t| t.x == x && t.y == y);
        match key {
            Key::Up => self.cursor.1 = (y - 1).rem_euclid(h),
            Key::Down => self.cursor.1 = (y + 1).rem_euclid(h),
            Key::Left => self.cursor.0 = (x - 1).rem_euclid(w),
            Key::Right => self.cursor.0 = (x + 1).rem_euclid(w),
            Key::Char(c @ '1'..='9') => {
                let n = c as usize - '1' as usize;
                return match self.towers.get(n) {
                    Some(t) => Action::Place { tower_type: t.name.clone(), x, y },
                    None => Action::Explain(format!("no tower {c}: the rules have {}", self.towers.len())),
                };
            }
            Key::Char('u') => {
                return match tower_here() {
                    Some(t) => Action::Upgrade(t.tower_id),
                    None => Action::Explain(format!("no tower at ({x}, {y}) to upgrade")),
                };
            }
            Key::Char('s') => {
                return match tower_here() {
                    Some(t) => Action::Sell(t.tower_id),
                    None => Action::Explain(format!("no tower at ({x}, {y}) to sell")),
                };
            }
            Key::Char('w') | Key::Char(' ') => return Action::Wave,
            Key::Char('q') | Key::Char('\u{3}') | Key::Char('\u{4}') => return Action::Quit,
            Key::Char(_) => return Action::Explain(self.help()),
        }
        Action::Redraw
    }

    /// The legend under the board.
    pub fn help(&self) -> String {
        let towers: Vec<String> =
            self.towers.iter().enumerate().map(|(i, t)| format!("{} {} ({}g)", i + 1, t.name, t.cost)).collect();
        format!("keys: arrows/hjkl move · {} place · u upgrade · s sell · w start wave · q quit", towers.join(" · "))
    }
}

/// The terminal in non-canonical mode without echo (keys arrive one by
/// one, unseen) until this is dropped.
pub struct RawInput {
    saved: libc::termios,
}

impl RawInput {
    /// On a terminal stdin: raw input and a channel of its keys (read on a
    /// thread of their own). None when stdin is not a terminal.
    pub fn start() -> Option<(Self, tokio::sync::mpsc::UnboundedReceiver<Key>)> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios this function
        // owns; zeroed is a valid bit pattern for the plain C struct.
        let saved = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            saved
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || parse(&buf[..n]).into_iter().any(|k| tx.send(k).is_err()) {
                    break;
                }
            }
        });
        Some((Self { saved }, rx))
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `start` on the same fd.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allies_contracts::timesquare::v1::{Board, TowerView};

    fn view() -> GameView {
        GameView {
            board: Some(Board { width: 4, height: 3, ..Default::default() }),
            towers: vec![TowerView { tower_id: 7, x: 1, y: 0, ..Default::default() }],
            ..Default::default()
        }
    }

    fn towers() -> Vec<TowerTypeView> {
        ["arrow", "cannon"]
            .iter()
            .map(|n| TowerTypeView { name: (*n).into(), cost: 50, ..Default::default() })
            .collect()
    }

    #[test]
    fn arrows_and_letters_are_read_from_what_a_terminal_sends() {
        assert_eq!(
            parse(b"\x1b[A\x1b[Bhl2q"),
            [Key::Up, Key::Down, Key::Left, Key::Right, Key::Char('2'), Key::Char('q')]
        );
    }

    #[test]
    fn keys_move_the_cursor_within_the_board_and_act_on_its_cell() {
        let v = view();
        let mut c = Controls::new(towers());
        assert_eq!(c.key(Key::Up, &v), Action::Redraw);
        assert_eq!(c.cursor, (0, 2), "wraps around the top");
        c.cursor = (0, 0);
        assert_eq!(c.key(Key::Char('u'), &v), Action::Explain("no tower at (0, 0) to upgrade".into()));
        assert_eq!(c.key(Key::Char('2'), &v), Action::Place { tower_type: "cannon".into(), x: 0, y: 0 });
        assert_eq!(c.key(Key::Right, &v), Action::Redraw);
        assert_eq!(c.key(Key::Char('u'), &v), Action::Upgrade(7));
        assert_eq!(c.key(Key::Char('s'), &v), Action::Sell(7));
        assert_eq!(c.key(Key::Char('w'), &v), Action::Wave);
        assert!(matches!(c.key(Key::Char('9'), &v), Action::Explain(m) if m.contains("the rules have 2")));
        assert_eq!(c.key(Key::Char('q'), &v), Action::Quit);
    }
}
