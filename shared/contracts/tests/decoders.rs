//! Property tests: whatever bytes a stream entry holds (a bug, a tool, an
//! attacker with Redis access), the event decoders and upcasters answer
//! with an event or an error — never a panic, never an unbounded answer.

use allies_contracts::command::events::{ConfigurationEvent, JobEvent};
use allies_contracts::guardian::events::{SessionEvent, UserEvent, schema};
use allies_contracts::registry::{CATEGORIES, public_json};
use allies_contracts::timesquare::events::{GameEvent, MatchEvent, PartyEvent, PlayerEvent, TicketEvent};
use proptest::prelude::*;
use serde_json::Value;

fn event_types() -> Vec<&'static str> {
    [
        UserEvent::EVENT_TYPES,
        SessionEvent::EVENT_TYPES,
        GameEvent::EVENT_TYPES,
        PlayerEvent::EVENT_TYPES,
        TicketEvent::EVENT_TYPES,
        MatchEvent::EVENT_TYPES,
        PartyEvent::EVENT_TYPES,
        ConfigurationEvent::EVENT_TYPES,
        JobEvent::EVENT_TYPES,
    ]
    .concat()
}

/// Any JSON value, nested a few levels: what a damaged or forged payload looks like.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("username".to_owned()),
                    Just("userId".to_owned()),
                    Just("sessionId".to_owned()),
                    Just("tick".to_owned()),
                    Just("towerId".to_owned()),
                    Just("players".to_owned()),
                    Just("values".to_owned()),
                    "[a-zA-Z]{1,12}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_of_any_event_type_decode_or_are_refused(
        category in 0..CATEGORIES.len(),
        event_type in 0..event_types().len(),
        version in 0u32..4,
        protobuf in any::<bool>(),
        data in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let content_type = if protobuf { "application/x-protobuf" } else { "application/json" };
        let ty = event_types()[event_type];
        if let Err(e) = public_json(CATEGORIES[category], ty, version, content_type, &data) {
            prop_assert!(e.len() < 2_048, "an error of {} bytes", e.len());
        }
    }

    #[test]
    fn any_json_of_any_event_type_decodes_or_is_refused(
        category in 0..CATEGORIES.len(),
        event_type in 0..event_types().len(),
        version in 0u32..4,
        payload in json(),
    ) {
        let data = serde_json::to_vec(&payload).unwrap();
        let ty = event_types()[event_type];
        if let Ok((shown, _)) = public_json(CATEGORIES[category], ty, version, "application/json", &data) {
            // What decodes is shown as JSON of bounded size.
            prop_assert!(shown.to_string().len() < 64 * 1024);
        }
    }

    #[test]
    fn the_upcasters_take_any_payload_at_any_version(
        event_type in 0..event_types().len(),
        version in 0u32..6,
        mut payload in json(),
    ) {
        let ty = event_types()[event_type];
        match schema::upcast(ty, version, &mut payload) {
            Ok(()) => prop_assert!(version >= 1 && version <= schema::current(ty)),
            Err(e) => prop_assert!(e.len() < 512),
        }
    }
}
