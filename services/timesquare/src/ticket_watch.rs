//! Ticket watchers: per replica one tail per ticket partition log with
//! watched tickets (no consumer group: every replica sees every entry),
//! waking the watchers of the ticket an entry belongs to. A watcher then
//! reads its ticket's state: no poller per watcher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use allies_store::{RedisEventStore, RedisTarget, keys};
use tokio::sync::watch;

use crate::error::Result;

pub struct TicketWatch {
    store: RedisEventStore,
    target: RedisTarget,
    partitions: u32,
    /// Ticket id → its change counter.
    tickets: Mutex<HashMap<String, (watch::Sender<u64>, usize)>>,
    tails: Mutex<HashMap<u32, ()>>,
    stop: watch::Receiver<bool>,
}

impl TicketWatch {
    pub fn new(store: RedisEventStore, target: RedisTarget, partitions: u32, stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self {
            store,
            target,
            partitions,
            tickets: Mutex::new(HashMap::new()),
            tails: Mutex::new(HashMap::new()),
            stop,
        })
    }

    /// A receiver that changes whenever ticket `id` gets an event; drop it
    /// with [`forget`](Self::forget).
    pub async fn subscribe(self: &Arc<Self>, id: &str) -> Result<watch::Receiver<u64>> {
        let partition = keys::partition_of(id, self.partitions);
        self.ensure_tail(partition).await?;
        let mut tickets = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = tickets.entry(id.to_owned()).or_insert_with(|| (watch::channel(0).0, 0));
        entry.1 += 1;
        Ok(entry.0.subscribe())
    }

    pub fn forget(&self, id: &str) {
        let mut tickets = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = tickets.get_mut(id) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                tickets.remove(id);
            }
        }
    }

    async fn ensure_tail(self: &Arc<Self>, partition: u32) -> Result<()> {
        if self.tails.lock().map(|t| t.contains_key(&partition)).unwrap_or(true) {
            return Ok(());
        }
        let log = keys::log_key(timesquare_domain::ticket::TICKET_TYPE, partition);
        let start = allies_store::tail::last_id(&self.store.connection(), &log).await?;
        {
            let Ok(mut tails) = self.tails.lock() else { return Ok(()) };
            if tails.insert(partition, ()).is_some() {
                return Ok(());
            }
        }
        let me = self.clone();
        tokio::spawn(allies_store::tail::follow(
            self.target.clone(),
            log,
            start,
            std::time::Duration::ZERO,
            self.stop.clone(),
            move |entry| {
                let me = me.clone();
                async move {
                    let id = allies_store::entry_text(&entry, "aggregate_id").unwrap_or_default();
                    if let Ok(tickets) = me.tickets.lock()
                        && let Some((tx, _)) = tickets.get(id)
                    {
                        tx.send_modify(|n| *n += 1);
                    }
                }
            },
        ));
        Ok(())
    }
}
