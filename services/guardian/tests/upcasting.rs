//! Stored v1 events (fixtures written the way the first release wrote them)
//! load into the current types through the upcasters.

use allies_core::{Aggregate, ExpectedVersion, Metadata};
use allies_store::{EventStore, keys};
use allies_testkit::RedisServer;
use guardian::domain::{User, UserCommand, UserEvent};

fn fixture() -> (String, Vec<String>) {
    let text = include_str!("fixtures/user_registered_v1.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let id = v["aggregate_id"].as_str().unwrap().to_owned();
    let fields = v["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect();
    (id, fields)
}

#[tokio::test]
async fn a_v1_user_stream_loads_as_the_current_user_and_takes_new_events() {
    let redis = RedisServer::start();
    let store = EventStore::connect(&redis.url(), 16).await.unwrap();
    let (id, fields) = fixture();
    let stream = keys::stream_key("user", store.partition_of(&id), &id);
    let mut args = vec!["XADD".to_owned(), stream.clone(), "0-1".into()];
    args.extend(fields);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(redis.raw(&args), "0-1");

    let (user, version) = store.load::<User>(&id).await.unwrap();
    let profile = user.profile.clone().expect("registered");
    assert_eq!(version, 1);
    assert_eq!((profile.username.as_str(), profile.display_name.as_str()), ("OldTimer", "OldTimer"));
    assert_eq!(user.roles, vec!["player"]);
    let envelope = store.read_stream("user", &id, 1).await.unwrap()[0].decode::<UserEvent>().unwrap();
    assert_eq!(envelope.schema_version, 1, "the stored entry keeps its version; only the decoded value is upcast");

    // The old stream takes new events (written at the current schema) after it.
    let login = UserCommand::RecordLogin { session_id: "s".into(), at_ms: 1_800_000_000_000 };
    let events = user.decide(&login).unwrap();
    let meta = Metadata {
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: uuid::Uuid::now_v7(),
        user_id: None,
        traceparent: None,
    };
    store.append_events::<User>(&id, ExpectedVersion::Exact(1), &meta, 1_800_000_000_000, &events).await.unwrap();
    let (user, version) = store.load::<User>(&id).await.unwrap();
    assert_eq!((version, user.last_login_ms), (2, 1_800_000_000_000));
}
