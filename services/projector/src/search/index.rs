//! One search index on disk (tantivy): its schema, the writer that folds a
//! batch of events into documents and commits them **with the positions
//! reached in the partition logs as the commit's payload** — so the index
//! and its checkpoint move together, and a crash between two commits replays
//! exactly the events after the last one (no event skipped, none applied
//! twice) — and the searcher the queries read.
//!
//! Every document carries its whole state (`state`, JSON): an update reads
//! the document's state (from this batch, else the index), folds the event,
//! and replaces the document (delete by id, add), so upserts are idempotent.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use allies_store::RecordedEvent;
use tantivy::collector::DocSetCollector;
use tantivy::directory::MmapDirectory;
use tantivy::query::TermQuery;
use tantivy::schema::{
    FAST, Facet, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::{LowerCaser, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::docs::{GameDoc, Kind, PlayerDoc, apply_game, apply_player, games_band, rating_band};

/// The tokenizer of names: words of letters and digits, lower-cased (no
/// stemming: names are not English).
pub const NAMES: &str = "names";

/// The fields of both kinds of document (each kind fills its own).
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub id: Field,
    pub state: Field,
    pub names: Field,
    pub facets: Field,
    pub viewers: Field,
    pub rating: Field,
    pub games: Field,
    pub created: Field,
    pub waves: Field,
    pub score: Field,
}

pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let names = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(NAMES).set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        state: b.add_text_field("state", STORED),
        names: b.add_text_field("names", names),
        facets: b.add_facet_field("facets", FacetOptions::default()),
        viewers: b.add_text_field("viewers", STRING),
        rating: b.add_i64_field("rating", INDEXED | FAST),
        games: b.add_u64_field("games", INDEXED | FAST),
        created: b.add_i64_field("created", INDEXED | FAST),
        waves: b.add_u64_field("waves", INDEXED | FAST),
        score: b.add_i64_field("score", FAST),
    };
    (b.build(), fields)
}

/// Anyone may see the document (public game, every player).
pub const EVERYONE: &str = "*";

/// A folded document of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    Player(PlayerDoc),
    Game(GameDoc),
}

impl Doc {
    fn empty(kind: Kind) -> Self {
        match kind {
            Kind::Players => Self::Player(PlayerDoc::default()),
            Kind::Games => Self::Game(GameDoc::default()),
        }
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<bool, allies_store::subscriber::HandlerError> {
        match self {
            Self::Player(d) => apply_player(d, event),
            Self::Game(d) => apply_game(d, event),
        }
    }

    fn state(&self) -> String {
        match self {
            Self::Player(d) => serde_json::to_string(d),
            Self::Game(d) => serde_json::to_string(d),
        }
        .unwrap_or_default()
    }

    fn parse(kind: Kind, state: &str) -> Option<Self> {
        match kind {
            Kind::Players => serde_json::from_str(state).ok().map(Self::Player),
            Kind::Games => serde_json::from_str(state).ok().map(Self::Game),
        }
    }

    /// The tantivy document: what is searched, filtered, counted and sorted.
    fn document(&self, f: &Fields, id: &str) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, id);
        doc.add_text(f.state, self.state());
        match self {
            Self::Player(p) => {
                doc.add_text(f.names, &p.username);
                doc.add_text(f.names, &p.display_name);
                doc.add_text(f.viewers, EVERYONE);
                doc.add_facet(f.facets, Facet::from_path(["rating", &rating_band(p.rating)]));
                doc.add_facet(f.facets, Facet::from_path(["games", games_band(p.games_played)]));
                let favourite = p.favourite_map();
                if !favourite.is_empty() {
                    doc.add_facet(f.facets, Facet::from_path(["favourite_map", &favourite]));
                }
                doc.add_i64(f.rating, i64::from(p.rating));
                doc.add_u64(f.games, u64::from(p.games_played));
            }
            Self::Game(g) => {
                for (user, name) in &g.players {
                    doc.add_text(f.names, name);
                    if g.private {
                        doc.add_text(f.viewers, user);
                    }
                }
                if !g.private {
                    doc.add_text(f.viewers, EVERYONE);
                }
                doc.add_facet(f.facets, Facet::from_path(["map", &g.map]));
                doc.add_facet(f.facets, Facet::from_path(["difficulty", &g.difficulty]));
                doc.add_facet(f.facets, Facet::from_path(["status", g.status_group()]));
                if !g.outcome.is_empty() {
                    doc.add_facet(f.facets, Facet::from_path(["outcome", &g.outcome]));
                }
                doc.add_i64(f.created, g.created_at_ms);
                doc.add_u64(f.waves, u64::from(g.waves_cleared));
                doc.add_i64(f.score, g.score);
            }
        }
        doc
    }
}

/// What a commit's payload records: per partition log, the id of the last
/// entry folded into this commit.
pub type Positions = BTreeMap<String, String>;

/// One index: open for writing (by the indexer thread) and reading.
pub struct SearchIndex {
    pub kind: Kind,
    pub dir: PathBuf,
    pub fields: Fields,
    index: Index,
    writer: IndexWriter,
    pub reader: IndexReader,
    /// Documents changed since the last commit (not visible to a searcher yet).
    pending: HashMap<String, Doc>,
    /// Positions folded so far (committed and pending).
    pub positions: Positions,
    pub committed: Positions,
}

impl SearchIndex {
    /// Opens the index in `dir` (created when empty) and reads the positions
    /// its last commit recorded.
    pub fn open(kind: Kind, dir: &Path) -> tantivy::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let index = Index::open_or_create(MmapDirectory::open(dir)?, schema)?;
        index
            .tokenizers()
            .register(NAMES, TextAnalyzer::builder(SimpleTokenizer::default()).filter(LowerCaser).build());
        // One indexing thread, 30 MB of buffer: this is one of several tasks
        // on a small replica.
        let writer = index.writer_with_num_threads(1, 30_000_000)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let committed: Positions =
            index.load_metas()?.payload.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_default();
        Ok(Self {
            kind,
            dir: dir.to_owned(),
            fields,
            index,
            writer,
            reader,
            pending: HashMap::new(),
            positions: committed.clone(),
            committed,
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The current state of document `id`: this batch's, else the index's.
    fn current(&self, id: &str) -> Option<Doc> {
        if let Some(d) = self.pending.get(id) {
            return Some(d.clone());
        }
        let searcher = self.reader.searcher();
        let query = TermQuery::new(Term::from_field_text(self.fields.id, id), IndexRecordOption::Basic);
        let found = searcher.search(&query, &DocSetCollector).ok()?;
        let address = found.into_iter().next()?;
        let doc: TantivyDocument = searcher.doc(address).ok()?;
        let state = doc.get_first(self.fields.state).and_then(|v| v.as_str())?.to_owned();
        Doc::parse(self.kind, &state)
    }

    /// Folds one entry of `log` (its id `entry_id`): the event, if readable
    /// and of a type this kind folds (`None` otherwise), into its document;
    /// the position always advances.
    pub fn fold(&mut self, log: &str, entry_id: &str, event: Option<&RecordedEvent>) {
        if let Some(event) = event {
            let id = event.envelope.aggregate_id.clone();
            // Whether an event changes a document depends on the event
            // alone: most change nothing searchable (a game's towers), and
            // are found out on an empty document without looking the real
            // one up (a search and a stored-document read each).
            if !self.pending.contains_key(&id) {
                match Doc::empty(self.kind).apply(event) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.positions.insert(log.to_owned(), entry_id.to_owned());
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%log, entry = %entry_id, error = %e, "search: an event it cannot read");
                        self.positions.insert(log.to_owned(), entry_id.to_owned());
                        return;
                    }
                }
            }
            let mut doc = self.current(&id).unwrap_or_else(|| Doc::empty(self.kind));
            match doc.apply(event) {
                Ok(true) => {
                    self.pending.insert(id, doc);
                }
                Ok(false) => {
                    // Nothing searchable changed; the version moved on.
                    if self.pending.contains_key(&id) {
                        self.pending.insert(id, doc);
                    }
                }
                Err(e) => tracing::warn!(%log, entry = %entry_id, error = %e, "search: an event it cannot read"),
            }
        }
        self.positions.insert(log.to_owned(), entry_id.to_owned());
    }

    /// Whether a folded document change waits for a commit (until then a
    /// search does not see it).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the batch's documents and commits them with the positions
    /// (one atomic step on disk), then shows them to searches.
    pub fn commit(&mut self) -> tantivy::Result<usize> {
        if self.positions == self.committed {
            return Ok(0);
        }
        let changed = self.pending.len();
        for (id, doc) in self.pending.drain() {
            self.writer.delete_term(Term::from_field_text(self.fields.id, &id));
            self.writer.add_document(doc.document(&self.fields, &id))?;
        }
        let payload = serde_json::to_string(&self.positions).unwrap_or_default();
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.committed = self.positions.clone();
        self.reader.reload()?;
        Ok(changed)
    }

    /// Documents searchable now.
    pub fn docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        dir_size(&self.dir)
    }
}

/// Bytes of the files below `p`.
pub fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The index alone, in memory of its own directory (no Redis): the fold,
/// the commit with its positions, a crash before a commit, a refold.
#[cfg(test)]
mod tests {
    use super::*;
    use allies_contracts::timesquare::events::v1::{GameSessionCreated, PlayerJoined, PlayerRegistered};

    fn recorded<T: serde::Serialize>(kind: &str, id: &str, version: u64, event_type: &str, e: &T) -> RecordedEvent {
        RecordedEvent {
            envelope: allies_core::EventEnvelope {
                event_id: uuid::Uuid::now_v7(),
                aggregate_type: kind.into(),
                aggregate_id: id.into(),
                version,
                event_type: event_type.into(),
                schema_version: 1,
                metadata: allies_core::Metadata {
                    correlation_id: uuid::Uuid::now_v7(),
                    causation_id: uuid::Uuid::now_v7(),
                    user_id: None,
                    traceparent: None,
                },
                recorded_at_ms: 1,
                payload: (),
            },
            content_type: allies_store::CONTENT_TYPE_JSON.into(),
            data: serde_json::to_vec(e).expect("json"),
        }
    }

    fn player(i: u64) -> RecordedEvent {
        let e = PlayerRegistered {
            username: format!("alice{i}"),
            display_name: format!("Alice {i}"),
            rating: 1500,
            ..Default::default()
        };
        recorded("player", &format!("p{i}"), 1, "PlayerRegistered", &e)
    }

    #[test]
    fn commits_carry_their_positions_and_a_crash_before_a_commit_refolds_exactly_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = "es:{player.0}:log";
        let mut index = SearchIndex::open(Kind::Players, dir.path()).expect("open");
        assert!(index.committed.is_empty(), "a new index starts from the logs' beginning");
        for i in 1..=3 {
            index.fold(log, &format!("{i}-0"), Some(&player(i)));
        }
        index.commit().expect("commit");
        assert_eq!((index.docs(), index.committed.get(log).map(String::as_str)), (3, Some("3-0")));
        // Two more folded, then the process dies before committing them.
        for i in 4..=5 {
            index.fold(log, &format!("{i}-0"), Some(&player(i)));
        }
        drop(index);
        let mut index = SearchIndex::open(Kind::Players, dir.path()).expect("reopen");
        assert_eq!(index.committed.get(log).map(String::as_str), Some("3-0"), "the positions of the last commit");
        assert_eq!(index.docs(), 3, "nothing of the lost batch");
        // Resumed from the payload: entries 4 and 5 again, and a redelivered 3 changes nothing.
        index.fold(log, "3-0", Some(&player(3)));
        for i in 4..=5 {
            index.fold(log, &format!("{i}-0"), Some(&player(i)));
        }
        index.commit().expect("commit");
        assert_eq!(index.docs(), 5, "every player once");
    }

    #[test]
    fn an_event_that_changes_nothing_searchable_moves_the_position_and_leaves_the_document() {
        use allies_contracts::timesquare::events::v1::TowerPlaced;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = "es:{game_session.0}:log";
        let mut index = SearchIndex::open(Kind::Games, dir.path()).expect("open");
        let created = GameSessionCreated { map: "canyon".into(), difficulty: "hard".into(), ..Default::default() };
        index.fold(log, "1-0", Some(&recorded("game_session", "g1", 1, "GameSessionCreated", &created)));
        assert!(index.has_pending());
        index.commit().expect("commit");
        let placed = TowerPlaced { tower_type: "arrow".into(), ..Default::default() };
        index.fold(log, "2-0", Some(&recorded("game_session", "g1", 2, "TowerPlaced", &placed)));
        assert!(!index.has_pending(), "a tower is not searchable: nothing to commit");
        assert_eq!(index.positions.get(log).map(String::as_str), Some("2-0"));
        assert_eq!(index.committed.get(log).map(String::as_str), Some("1-0"));
        // The next searchable event applies to the committed document.
        let joined = PlayerJoined { user_id: "u1".into(), display_name: "eve".into(), ..Default::default() };
        index.fold(log, "3-0", Some(&recorded("game_session", "g1", 3, "PlayerJoined", &joined)));
        assert_eq!(index.commit().expect("commit"), 1);
        assert_eq!(index.docs(), 1);
        match index.current("g1") {
            Some(Doc::Game(d)) => assert_eq!((d.map.as_str(), d.version, d.players.len()), ("canyon", 3, 1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_game_document_is_updated_in_place_and_private_games_name_their_viewers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = "es:{game_session.0}:log";
        let mut index = SearchIndex::open(Kind::Games, dir.path()).expect("open");
        let created =
            GameSessionCreated { map: "canyon".into(), difficulty: "hard".into(), private: true, ..Default::default() };
        index.fold(log, "1-0", Some(&recorded("game_session", "g1", 1, "GameSessionCreated", &created)));
        index.commit().expect("commit");
        let joined = PlayerJoined { user_id: "u1".into(), display_name: "eve".into(), ..Default::default() };
        index.fold(log, "2-0", Some(&recorded("game_session", "g1", 2, "PlayerJoined", &joined)));
        index.commit().expect("commit");
        assert_eq!(index.docs(), 1, "replaced, not added");
        let searcher = index.reader.searcher();
        let count = |term: Term| {
            searcher
                .search(&TermQuery::new(term, IndexRecordOption::Basic), &tantivy::collector::Count)
                .expect("search")
        };
        assert_eq!(count(Term::from_field_text(index.fields.names, "eve")), 1);
        assert_eq!(count(Term::from_field_text(index.fields.viewers, "u1")), 1, "its player sees it");
        assert_eq!(count(Term::from_field_text(index.fields.viewers, EVERYONE)), 0, "nobody else");
        assert_eq!(count(Term::from_facet(index.fields.facets, &Facet::from_path(["map", "canyon"]))), 1);
    }
}
