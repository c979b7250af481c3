//! The game's deterministic randomness and hashing: FNV-1a and a seeded
//! SplitMix64 — no dependency, so the rules and the simulation both stand on it.

use serde::{Deserialize, Serialize};

/// FNV-1a 64: stable across platforms and releases.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64: a small, well-mixed, seedable PRNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    pub fn up_to(&mut self, max: u32) -> u32 {
        if max == 0 { 0 } else { (self.next_u64() % (u64::from(max) + 1)) as u32 }
    }
}

/// The seed of a wave: the session's seed mixed with the wave number.
pub fn wave_seed(session_seed: u64, wave: u32) -> u64 {
    let mut r = Rng(session_seed ^ (u64::from(wave) << 32 | u64::from(wave)));
    r.next_u64()
}
