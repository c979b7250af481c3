//! `SearchService`: players and games from this replica's search indexes.
//!
//! A name matches by whole word, by prefix ("ali" → alice) and with one
//! typo ("alcie" → alice), best first; filters are facet terms and ranges;
//! facet counts cover every match, not only the page. Authorization as the
//! other queries: signed in; a private game only for its players and admins.

use std::ops::Bound;
use std::sync::Arc;

use allies_contracts::projector::v1::search_service_server::SearchService;
use allies_contracts::projector::v1::*;
use allies_core::{Failure, Invalid};
use allies_platform::OrStatus;
use allies_platform::auth::{Authenticator, Caller};
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Facet, IndexRecordOption, Value};
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};
use tonic::{Request, Response, Status};

use super::Search;
use super::docs::{GameDoc, Kind, PlayerDoc};
use super::index::{EVERYONE, Fields};
use crate::error::Result;
use crate::reads::{page_token, paging};

pub struct SearchApi {
    pub search: Arc<Search>,
    pub auth: Arc<Authenticator>,
}

/// Words of a query: letters and digits, lower-cased, at most 8.
fn words(query: &str) -> Vec<String> {
    query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).take(8).collect()
}

/// Every word must match the names: exactly (best), as a prefix, or with
/// one typo (words of 3 letters and more; as a prefix from 5).
fn name_query(f: &Fields, words: &[String]) -> Option<Box<dyn Query>> {
    if words.is_empty() {
        return None;
    }
    let per_word: Vec<(Occur, Box<dyn Query>)> = words
        .iter()
        .map(|w| {
            let term = Term::from_field_text(f.names, w);
            let mut any: Vec<(Occur, Box<dyn Query>)> = vec![
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                        4.0,
                    )),
                ),
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(FuzzyTermQuery::new_prefix(term.clone(), 0, true)), 2.0)),
                ),
            ];
            let letters = w.chars().count();
            if letters >= 3 {
                any.push((Occur::Should, Box::new(FuzzyTermQuery::new(term.clone(), 1, true))));
            }
            if letters >= 5 {
                any.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(FuzzyTermQuery::new_prefix(term, 1, true)), 0.5)),
                ));
            }
            (Occur::Must, Box::new(BooleanQuery::new(any)) as Box<dyn Query>)
        })
        .collect();
    Some(Box::new(BooleanQuery::new(per_word)))
}

fn facet_term(f: &Fields, name: &str, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_facet(f.facets, &Facet::from_path([name, value])), IndexRecordOption::Basic))
}

/// A facet filter's value: empty (any) or at most 64 printable characters.
fn facet_filter(field: &str, value: &str, invalid: &mut Invalid) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if value.chars().count() > 64 || value.chars().any(char::is_control) {
        invalid.push(field, "must be at most 64 characters without control characters");
        return None;
    }
    Some(value.to_owned())
}

fn query_text(value: &str, invalid: &mut Invalid) -> Vec<String> {
    if value.chars().count() > 100 {
        invalid.push("query", "must be at most 100 characters");
        return Vec::new();
    }
    words(value)
}

/// The page size and offset; pages reach 10,000 hits deep.
fn search_paging(page_size: u32, page_token: &str, invalid: &mut Invalid) -> (usize, usize) {
    let (size, offset) = paging(page_size, page_token, invalid);
    if offset > 10_000 {
        invalid.push("page_token", "reaches past the first 10,000 hits");
    }
    (size, offset)
}

/// The name words and the facet filters given, as clauses that must all hold.
fn name_and_facets(f: &Fields, words: &[String], filters: &[(&str, Option<String>)]) -> Vec<Box<dyn Query>> {
    let mut clauses: Vec<Box<dyn Query>> = name_query(f, words).into_iter().collect();
    for (name, value) in filters {
        if let Some(v) = value {
            clauses.push(facet_term(f, name, v));
        }
    }
    clauses
}

fn all_of(clauses: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    if clauses.is_empty() {
        return Box::new(AllQuery);
    }
    Box::new(BooleanQuery::new(clauses.into_iter().map(|q| (Occur::Must, q)).collect()))
}

/// Counts per value of each facet named, over every match.
fn facets(counts: &tantivy::collector::FacetCounts, names: &[&str]) -> Vec<allies_contracts::projector::v1::Facet> {
    names
        .iter()
        .map(|name| {
            let mut counts: Vec<FacetCount> = counts
                .get(Facet::from_path([*name]))
                .map(|(facet, count)| FacetCount {
                    value: facet.to_path().last().map(|s| s.to_string()).unwrap_or_default(),
                    count,
                })
                .collect();
            counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            allies_contracts::projector::v1::Facet { name: (*name).to_owned(), counts }
        })
        .collect()
}

fn state(searcher: &Searcher, f: &Fields, address: DocAddress) -> Option<(String, String)> {
    let doc: TantivyDocument = searcher.doc(address).ok()?;
    let id = doc.get_first(f.id).and_then(|v| v.as_str())?.to_owned();
    let state = doc.get_first(f.state).and_then(|v| v.as_str())?.to_owned();
    Some((id, state))
}

/// A page of hits in order with their relevance (0 when sorted by a field),
/// how many matched, and the facet counts over all of them.
type Found = (Vec<(f32, DocAddress)>, usize, tantivy::collector::FacetCounts);

/// The page of hits, in order, with their relevance (0 when sorted by a field).
fn collect(
    searcher: &Searcher,
    query: &dyn Query,
    sort: Sort,
    offset: usize,
    size: usize,
    facet_names: &[&str],
) -> tantivy::Result<Found> {
    let mut fc = FacetCollector::for_field("facets");
    for name in facet_names {
        fc.add_facet(Facet::from_path([*name]));
    }
    let top = TopDocs::with_limit(size).and_offset(offset);
    Ok(match sort {
        Sort::Relevance => {
            let (hits, total, counts) = searcher.search(query, &(top.order_by_score(), Count, fc))?;
            (hits, total, counts)
        }
        Sort::I64(field) => {
            let (hits, total, counts) =
                searcher.search(query, &(top.order_by_fast_field::<i64>(field, Order::Desc), Count, fc))?;
            (hits.into_iter().map(|(_, a)| (0.0, a)).collect(), total, counts)
        }
        Sort::U64(field) => {
            let (hits, total, counts) =
                searcher.search(query, &(top.order_by_fast_field::<u64>(field, Order::Desc), Count, fc))?;
            (hits.into_iter().map(|(_, a)| (0.0, a)).collect(), total, counts)
        }
    })
}

#[derive(Clone, Copy)]
enum Sort {
    Relevance,
    I64(&'static str),
    U64(&'static str),
}

fn unavailable(e: impl std::fmt::Display) -> crate::error::ProjectorError {
    Failure::new(allies_core::ErrorCode::Unavailable, format!("the search index is not readable here: {e}")).into()
}

impl SearchApi {
    async fn caller<T>(&self, request: &Request<T>) -> Result<Arc<Caller>> {
        Ok(self.auth.authenticate(request).await?)
    }

    async fn players(&self, request: Request<SearchPlayersRequest>) -> Result<SearchPlayersResponse> {
        let _caller = self.caller(&request).await?;
        search_players(&self.search, request.into_inner())
    }

    async fn games(&self, request: Request<SearchGamesRequest>) -> Result<SearchGamesResponse> {
        let caller = self.caller(&request).await?;
        search_games(&self.search, &caller, request.into_inner())
    }
}

fn live(search: &Search, kind: Kind) -> Result<Arc<super::Live>> {
    search
        .live(kind)
        .ok_or_else(|| Failure::new(allies_core::ErrorCode::Unavailable, "the search index is not open yet").into())
}

/// SearchPlayers on this replica's index (every player is public).
pub fn search_players(search: &Search, r: SearchPlayersRequest) -> Result<SearchPlayersResponse> {
    let mut invalid = Invalid::new();
    let words = query_text(&r.query, &mut invalid);
    let filters = [
        ("rating", facet_filter("rating_band", &r.rating_band, &mut invalid)),
        ("favourite_map", facet_filter("favourite_map", &r.favourite_map, &mut invalid)),
        ("games", facet_filter("games_band", &r.games_band, &mut invalid)),
    ];
    let sort = match (r.sort_by.as_str(), words.is_empty()) {
        ("relevance", _) | ("", false) => Sort::Relevance,
        ("rating", _) | ("", true) => Sort::I64("rating"),
        _ => {
            invalid.push("sort_by", "must be relevance or rating");
            Sort::Relevance
        }
    };
    let (size, offset) = search_paging(r.page_size, &r.page_token, &mut invalid);
    invalid.into_result()?;
    let live = live(search, Kind::Players)?;
    let f = live.fields;
    let clauses = name_and_facets(&f, &words, &filters);
    let query = all_of(clauses);
    let searcher = live.reader.searcher();
    let names = ["rating", "favourite_map", "games"];
    let (hits, total, counts) = collect(&searcher, &*query, sort, offset, size, &names).map_err(unavailable)?;
    let players = hits
        .iter()
        .filter_map(|(score, a)| {
            let (id, state) = state(&searcher, &f, *a)?;
            let p: PlayerDoc = serde_json::from_str(&state).ok()?;
            Some(PlayerHit {
                user_id: id,
                favourite_map: p.favourite_map(),
                username: p.username,
                display_name: p.display_name,
                rating: p.rating,
                games_played: p.games_played,
                wins: p.wins,
                score: *score,
            })
        })
        .collect();
    let next = (offset + size < total).then_some(offset + size);
    Ok(SearchPlayersResponse {
        players,
        total: total as u64,
        facets: facets(&counts, &names),
        next_page_token: page_token(next),
    })
}

/// SearchGames on this replica's index, as `caller` may see it.
pub fn search_games(search: &Search, caller: &Caller, r: SearchGamesRequest) -> Result<SearchGamesResponse> {
    let mut invalid = Invalid::new();
    let words = query_text(&r.query, &mut invalid);
    let filters = [
        ("map", facet_filter("map", &r.map, &mut invalid)),
        ("difficulty", facet_filter("difficulty", &r.difficulty, &mut invalid)),
        ("outcome", facet_filter("outcome", &r.outcome, &mut invalid)),
    ];
    let status = match r.status.as_str() {
        "" => None,
        s @ ("lobby" | "active" | "ended") => Some(s.to_owned()),
        _ => {
            invalid.push("status", "must be lobby, active or ended");
            None
        }
    };
    if r.created_from_ms < 0 || r.created_to_ms < 0 {
        invalid.push("created_from_ms", "must not be negative");
    }
    if r.created_to_ms > 0 && r.created_from_ms > r.created_to_ms {
        invalid.push("created_to_ms", "must not be before created_from_ms");
    }
    if r.max_waves > 0 && r.min_waves > r.max_waves {
        invalid.push("max_waves", "must not be below min_waves");
    }
    let sort = match (r.sort_by.as_str(), words.is_empty()) {
        ("relevance", _) | ("", false) => Sort::Relevance,
        ("newest", _) | ("", true) => Sort::I64("created"),
        ("score", _) => Sort::I64("score"),
        ("waves", _) => Sort::U64("waves"),
        _ => {
            invalid.push("sort_by", "must be relevance, newest, score or waves");
            Sort::Relevance
        }
    };
    let (size, offset) = search_paging(r.page_size, &r.page_token, &mut invalid);
    invalid.into_result()?;
    let live = live(search, Kind::Games)?;
    let f = live.fields;
    let mut clauses = name_and_facets(&f, &words, &filters);
    if let Some(s) = &status {
        clauses.push(facet_term(&f, "status", s));
    }
    if r.created_from_ms > 0 || r.created_to_ms > 0 {
        let to = if r.created_to_ms > 0 { r.created_to_ms } else { i64::MAX };
        clauses.push(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_i64(f.created, r.created_from_ms)),
            Bound::Included(Term::from_field_i64(f.created, to)),
        )));
    }
    if r.min_waves > 0 || r.max_waves > 0 {
        let to = if r.max_waves > 0 { u64::from(r.max_waves) } else { u64::MAX };
        clauses.push(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_u64(f.waves, u64::from(r.min_waves))),
            Bound::Included(Term::from_field_u64(f.waves, to)),
        )));
    }
    // Private games: their players and admins only.
    if !caller.is_admin() {
        let seen = [EVERYONE, caller.user_id.as_str()]
            .into_iter()
            .map(|v| {
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(Term::from_field_text(f.viewers, v), IndexRecordOption::Basic));
                (Occur::Should, q)
            })
            .collect();
        clauses.push(Box::new(BooleanQuery::new(seen)));
    }
    let query = all_of(clauses);
    let searcher = live.reader.searcher();
    let names = ["map", "difficulty", "outcome", "status"];
    let (hits, total, counts) = collect(&searcher, &*query, sort, offset, size, &names).map_err(unavailable)?;
    let games = hits
        .iter()
        .filter_map(|(relevance, a)| {
            let (id, state) = state(&searcher, &f, *a)?;
            let g: GameDoc = serde_json::from_str(&state).ok()?;
            Some(GameHit {
                session_id: id,
                map: g.map,
                difficulty: g.difficulty,
                status: g.status,
                outcome: g.outcome,
                players: g.players.into_iter().map(|(_, name)| name).collect(),
                waves_cleared: g.waves_cleared,
                score: g.score,
                created_at_ms: g.created_at_ms,
                ended_at_ms: g.ended_at_ms,
                relevance: *relevance,
            })
        })
        .collect();
    let next = (offset + size < total).then_some(offset + size);
    Ok(SearchGamesResponse {
        games,
        total: total as u64,
        facets: facets(&counts, &names),
        next_page_token: page_token(next),
    })
}

#[tonic::async_trait]
impl SearchService for SearchApi {
    async fn search_players(
        &self,
        request: Request<SearchPlayersRequest>,
    ) -> std::result::Result<Response<SearchPlayersResponse>, Status> {
        self.players(request).await.map(Response::new).or_status()
    }

    async fn search_games(
        &self,
        request: Request<SearchGamesRequest>,
    ) -> std::result::Result<Response<SearchGamesResponse>, Status> {
        self.games(request).await.map(Response::new).or_status()
    }
}
