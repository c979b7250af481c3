//! Player ratings: Elo against the game.
//!
//! Defense Allies is co-operative: players do not beat each other, a team
//! plays a map at a difficulty. Each finished game is one Elo match of the
//! player against the difficulty, which has a fixed rating (easy 1200,
//! normal 1500, hard 1800):
//!
//! - score `S`: 1 for a victory; otherwise `0.75 × waves cleared / waves`
//!   (reaching the last waves of a hard map is worth something, never as
//!   much as winning);
//! - expected `E = 1 / (1 + 10^((R_difficulty − R) / 400))`;
//! - `R' = R + K × (S − E)`, rounded, with `K` 40 for a player's first 10
//!   games, 24 up to 30, then 16 (new players find their level fast, settled
//!   ones move slowly).
//!
//! Why Elo and not Glicko-2: one number the matchmaker can window on, a
//! formula a player can check by hand, and no rating periods to schedule;
//! the decreasing `K` gives most of what Glicko's deviation would. A
//! forfeit, a termination or an abandoned game before the start changes
//! nothing. Every result is recorded in the event (`rating_before`,
//! `rating_after`), so replays never recompute it.

/// The rating of a new player.
pub const START: i32 = 1500;

/// The fixed rating of a difficulty.
pub fn of_difficulty(difficulty: &str) -> i32 {
    match difficulty {
        "easy" => 1200,
        "hard" => 1800,
        _ => 1500,
    }
}

/// Whether a game's outcome rates: victories and defeats do; forfeits,
/// terminations and abandoned games do not.
pub fn rates(outcome: &str) -> bool {
    matches!(outcome, "victory" | "defeat")
}

/// The score of a result, in thousandths.
pub fn score_pm(outcome: &str, waves_cleared: u32, total_waves: u32) -> i64 {
    if outcome == "victory" {
        1000
    } else if total_waves == 0 {
        0
    } else {
        750 * i64::from(waves_cleared.min(total_waves)) / i64::from(total_waves)
    }
}

/// The K factor after `games_played` rated games.
pub fn k(games_played: u32) -> f64 {
    match games_played {
        0..10 => 40.0,
        10..30 => 24.0,
        _ => 16.0,
    }
}

/// The expected score of `rating` against `opponent`, 0..1.
pub fn expected(rating: i32, opponent: i32) -> f64 {
    1.0 / (1.0 + 10f64.powf(f64::from(opponent - rating) / 400.0))
}

/// The rating after one game.
pub fn update(rating: i32, opponent: i32, score_pm: i64, games_played: u32) -> i32 {
    let s = score_pm as f64 / 1000.0;
    let next = f64::from(rating) + k(games_played) * (s - expected(rating, opponent));
    next.round().clamp(0.0, 5000.0) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_by_hand() {
        // Even match: E = 0.5; a win moves a new player up by 20.
        assert_eq!(update(1500, 1500, 1000, 0), 1520);
        assert_eq!(update(1500, 1500, 0, 0), 1480);
        // A hard victory is worth more than an easy one.
        assert!(update(1500, of_difficulty("hard"), 1000, 0) > update(1500, of_difficulty("easy"), 1000, 0));
        // Losing on easy costs, reaching wave 15 of 20 on hard pays a little.
        assert!(update(1500, of_difficulty("easy"), score_pm("defeat", 3, 20), 0) < 1500);
        assert!(update(1500, of_difficulty("hard"), score_pm("defeat", 15, 20), 0) > 1500);
        // Settled players move less.
        assert!(update(1500, 1500, 1000, 50) - 1500 < update(1500, 1500, 1000, 0) - 1500);
        assert_eq!(score_pm("defeat", 10, 20), 375);
        assert!(rates("victory") && rates("defeat") && !rates("forfeit") && !rates("abandoned"));
    }
}
