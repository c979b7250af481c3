//! The rules a replica plays with: every version by number, and each map's
//! path — a value the service builds and hands to its sessions.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::rules::{Rules, RulesError, bad};
use crate::sim::Path;

/// The rules versions a game can be played or replayed with, by number: the
/// current one and the older ones old games were created with. A value,
/// cheap to clone: the service builds it from its rules files (and uploads)
/// and hands it to every session it loads (`GameSession::with_rules`); the
/// domain keeps no rules of its own and reads no file. Rules are immutable
/// data addressed by version and checked by content hash.
/// Each (rules version, map)'s path.
type Paths = BTreeMap<(u32, String), Arc<Path>>;

#[derive(Clone, Default)]
pub struct Book {
    versions: Arc<BTreeMap<u32, Arc<Rules>>>,
    /// Each (version, map)'s path, computed once.
    paths: Arc<std::sync::Mutex<Paths>>,
}

impl Book {
    /// This book with `rules` added. A different content under a number
    /// the book has is refused; the same content is no change.
    pub fn with(&self, rules: Rules) -> Result<Self, RulesError> {
        if let Some(existing) = self.versions.get(&rules.rules_version) {
            if existing.content_hash() != rules.content_hash() {
                return Err(bad(
                    "rules_version",
                    format!("version {} is already loaded with a different content", rules.rules_version),
                ));
            }
            return Ok(self.clone());
        }
        let mut versions = (*self.versions).clone();
        versions.insert(rules.rules_version, Arc::new(rules));
        Ok(Self { versions: Arc::new(versions), paths: self.paths.clone() })
    }

    /// A book of the current rules text and older versions' texts, each
    /// given with the name to show when it is unusable (a file name).
    /// Returns the book and the current version.
    pub fn of_texts(current: (&str, &str), older: &[(String, String)]) -> Result<(Self, u32), (String, RulesError)> {
        let mut book = Self::default();
        for (name, text) in older {
            book = Rules::parse(text).and_then(|r| book.with(r)).map_err(|e| (name.clone(), e))?;
        }
        let rules = Rules::parse(current.1).map_err(|e| (current.0.to_owned(), e))?;
        let version = rules.rules_version;
        Ok((book.with(rules).map_err(|e| (current.0.to_owned(), e))?, version))
    }

    pub fn get(&self, version: u32) -> Option<Arc<Rules>> {
        self.versions.get(&version).cloned()
    }

    /// The highest version.
    pub fn latest(&self) -> Option<Arc<Rules>> {
        self.versions.values().next_back().cloned()
    }

    pub fn versions(&self) -> Vec<u32> {
        self.versions.keys().copied().collect()
    }

    /// The path enemies walk on `map` of rules `version`, computed once.
    pub fn path(&self, version: u32, map: &str) -> Option<Arc<Path>> {
        let key = (version, map.to_owned());
        let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = paths.get(&key) {
            return Some(p.clone());
        }
        let path = Arc::new(Path::of(self.get(version)?.maps.get(map)?));
        paths.insert(key, path.clone());
        Some(path)
    }
}

/// A book is what a session is played with, not part of its state: two
/// states are equal whatever books they carry.
impl PartialEq for Book {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Book {}

impl std::fmt::Debug for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Book").field(&self.versions()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::SHIPPED;

    #[test]
    fn the_book_keeps_versions_and_refuses_a_changed_content_under_one_number() {
        let mut r = Rules::parse(SHIPPED).unwrap();
        r.rules_version = 901;
        let book = Book::default().with(r.clone()).unwrap();
        assert_eq!(book.get(901).unwrap().content_hash(), r.content_hash());
        assert_eq!(book.with(r.clone()).unwrap().versions(), vec![901], "the same content: no change");
        r.economy.start_gold += 1;
        assert_eq!(book.with(r).unwrap_err().key, "rules_version");
        assert!(Book::default().get(901).is_none(), "a book is a value: no process-wide registry");
    }
}
