//! A setting replaced whole while the service runs (the live
//! configuration's values): readers take a copy, a writer swaps the value;
//! a reader sees the old value or the new one, never a mix. Clones share
//! the value, so every partition reader of a subscription follows one change.

use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Default)]
pub struct Tunable<T>(Arc<RwLock<T>>);

impl<T: Clone> Tunable<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(value)))
    }

    /// The value in force now.
    pub fn get(&self) -> T {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value for every holder.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}
