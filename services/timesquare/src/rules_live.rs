//! Game rules as configuration: versions uploaded through the command
//! service (`config:rules`, validated there by the same validator) are
//! installed into the rules book — all of them at start, so sessions pinned
//! to an uploaded version load and replay — and once the fleet's
//! configuration exists, its `game.rules_version` is the version new sessions
//! get. Running sessions keep the version they were created with.

use allies_core::settings as table;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use allies_contracts::command::events::UPLOADED_RULES;
use allies_platform::live::LiveConfig;
use allies_store::RedisConn;
use timesquare_domain::rules::Rules;

use crate::game::Game;

fn install(game: &Game, version: &str, text: &str) {
    match Rules::parse(text).and_then(|r| game.install_rules(r)) {
        Ok(r) => tracing::debug!(rules_version = r.rules_version, "uploaded rules installed"),
        Err(e) => tracing::warn!(version, key = e.key, reason = e.reason, "uploaded rules cannot be installed"),
    }
}

/// Installs every uploaded version (at start), and announces the built-in
/// ones so the command service refuses a version nobody can run.
pub async fn install_uploaded(game: &Game, conn: &RedisConn) {
    let mut c = conn.clone();
    let mut announce = redis::pipe();
    let book = game.book();
    for v in book.versions() {
        if let Some(r) = book.get(v) {
            announce
                .cmd("HSET")
                .arg(allies_contracts::command::events::BUILTIN_RULES)
                .arg(v)
                .arg(r.content_hash())
                .ignore();
        }
    }
    if let Err(e) = announce.query_async::<()>(&mut c).await {
        tracing::warn!(error = %e, "cannot announce the built-in rules versions");
    }
    match redis::cmd("HGETALL").arg(UPLOADED_RULES).query_async::<HashMap<String, String>>(&mut c).await {
        Ok(all) => all.iter().for_each(|(v, text)| install(game, v, text)),
        Err(e) => tracing::warn!(error = %e, "cannot read the uploaded rules"),
    }
}

/// Makes the configured version the one of new sessions (installing it first if needed).
pub async fn apply(game: &Game, conn: &RedisConn, c: &LiveConfig, not_applied: &allies_platform::live::NotApplied) {
    // Not set by an operator: the version of this instance's rules file.
    let wanted = c.int(&table::RULES_VERSION, i64::from(game.deployed_rules_version)) as u32;
    if game.rules_version.load(Ordering::Relaxed) == wanted {
        not_applied.clear(table::RULES_VERSION.name);
        return;
    }
    if game.book().get(wanted).is_none() {
        let mut conn = conn.clone();
        if let Ok(Some(text)) =
            redis::cmd("HGET").arg(UPLOADED_RULES).arg(wanted).query_async::<Option<String>>(&mut conn).await
        {
            install(game, &wanted.to_string(), &text);
        }
    }
    if game.book().get(wanted).is_some() {
        game.rules_version.store(wanted, Ordering::Relaxed);
        not_applied.clear(table::RULES_VERSION.name);
        tracing::info!(rules_version = wanted, "new sessions use rules version {wanted}");
    } else {
        let current = game.rules_version.load(Ordering::Relaxed);
        not_applied.set(
            table::RULES_VERSION.name,
            format!("rules version {wanted} is not available here: new sessions keep version {current}"),
        );
        tracing::warn!(
            rules_version = wanted,
            "the configured rules version is not available; keeping the current one"
        );
    }
}
