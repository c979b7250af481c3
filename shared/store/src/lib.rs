//! The event store: the narrow [`EventStore`] trait, its Redis and
//! in-memory implementations, the command loop built on it, and the
//! consumer-group runtime.
//!
//! - [`EventStore`] (one append, one read, snapshots, state hashes) and
//!   [`RedisEventStore`] (one atomic script per append: version check,
//!   aggregate stream, partition log, integration streams, idempotency
//!   record) and [`MemoryEventStore`] for application tests;
//! - [`load()`] (per storage strategy; the one fold) and time travel;
//! - [`executor`] (the one command loop) and [`handle`] (hot aggregates
//!   kept in memory, on the same loop); the loop's outcome types, options
//!   and maintenance gate beside it;
//! - [`subscriber`] (consumer groups: reader, retry, dead letters,
//!   positions), [`breaker`], [`priority`] (integration topics);
//! - [`keys`] (the Redis layout), [`conn`] (single Redis or Cluster),
//!   [`archive`] (retention), [`metrics`], [`tail`] (following a stream
//!   without a group, for live fan-out).
//!
//! Must not know about gRPC or any bounded context: it stores envelopes of
//! any [`allies_core::Aggregate`].

pub mod archive;
pub mod breaker;
pub mod conn;
mod error;
mod event;
pub mod executor;
mod gate;
pub mod handle;
pub mod keys;
mod load;
mod memory;
pub mod metrics;
mod options;
mod outcome;
pub mod pages;
pub mod priority;
mod redis_store;
mod store;
mod stream_read;
pub mod subscriber;
pub mod tail;
pub mod trace;
pub mod tunable;

pub use conn::{RedisConn, RedisTarget, TlsFileError, use_tls_files};
pub use error::{AppendError, StoreError, redis_errors};
pub use event::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, Fields, NewEvent, RecordedEvent, checksum, entry_text};
pub use executor::{CommandExecutor, Seed, Warm};
pub use gate::WritesGate;
pub use handle::{AggregateHandle, Handles};
pub use load::{
    EventStoreExt, Loaded, catch_up, catch_up_seen, fold, fold_seen, load, load_as_of, load_as_of_from, load_from,
    save_snapshot,
};
pub use memory::MemoryEventStore;
pub use options::{Options, Publish, StateFields};
pub use outcome::{ExecuteError, Executed};
pub use pages::Pages;
pub use redis::RedisError;
pub use redis_store::{RedisEventStore, ReplicaAcks, SnapshotCompression};
pub use store::{
    AppendOutcome, AppendRequest, AsOf, CommandRecord, EventStore, Priority, Publication, StateWrite, Storage,
    StoredState,
};
pub use stream_read::StreamRead;
pub use tunable::Tunable;

/// Largest number of events one append may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;
