//! Stored v1 events (fixtures written the way the first release wrote them)
//! load into the current types through the upcasters.

use allies_core::{Aggregate, ExpectedVersion};
use allies_store::{AppendRequest, EventStore, EventStoreExt, RedisEventStore, keys};
use allies_testkit::RedisServer;
use allies_testkit::fixtures::meta;
use guardian_domain::user::{User, UserCommand, UserEvent};

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
    let store = RedisEventStore::connect(&redis.url(), 16).await.unwrap();
    let (id, fields) = fixture();
    let stream = keys::stream_key("user", store.partition_of(&id), &id);
    let mut args = vec!["XADD".to_owned(), stream.clone(), "0-1".into()];
    args.extend(fields);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(redis.raw(&args), "0-1");

    let (user, version) = store.load_events::<User>(&id).await.unwrap();
    let profile = user.profile.clone().expect("registered");
    assert_eq!(version, 1);
    assert_eq!((profile.username.as_str(), profile.display_name.as_str()), ("OldTimer", "OldTimer"));
    assert_eq!(user.roles, vec!["player"]);
    let envelope = store.read("user", &id, 1, usize::MAX).await.unwrap()[0].decode::<UserEvent>().unwrap();
    assert_eq!(envelope.schema_version, 1, "the stored entry keeps its version; only the decoded value is upcast");

    // The old stream takes new events (written at the current schema) after it.
    let login = UserCommand::RecordLogin { session_id: "s".into(), at_ms: 1_800_000_000_000 };
    let events = user.decide(&login).unwrap();
    let meta = meta();
    store.append_events::<User>(&id, ExpectedVersion::Exact(1), &meta, 1_800_000_000_000, &events).await.unwrap();
    let (user, version) = store.load_events::<User>(&id).await.unwrap();
    assert_eq!((version, user.last_login_ms), (2, 1_800_000_000_000));
}

#[tokio::test]
async fn a_stream_written_half_in_json_half_in_protobuf_loads() {
    use allies_contracts::guardian::events::v1::UserRegistered;
    use prost::Message;
    let redis = RedisServer::start();
    let json_store = RedisEventStore::connect(&redis.url(), 16).await.unwrap();
    let proto_store =
        RedisEventStore::connect(&redis.url(), 16).await.unwrap().with_format(allies_core::EventFormat::Protobuf);
    let id = "6a1c0b7e-0000-5000-8000-000000000001";
    let meta = meta();

    // A v1 UserRegistered as protobuf bytes (v1 had no display_name).
    let v1 = UserRegistered {
        user_id: id.into(),
        username: "Binary".into(),
        email: "b@example.com".into(),
        password_hash: "$argon2id$x".into(),
        roles: vec!["player".into()],
        registered_at_ms: 1,
        display_name: String::new(),
    };
    let first = allies_store::NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "UserRegistered".into(),
        schema_version: 1,
        content_type: allies_store::CONTENT_TYPE_PROTOBUF.into(),
        data: v1.encode_to_vec(),
    };
    proto_store.append(AppendRequest::new("user", id, ExpectedVersion::NoStream, &meta, 1, vec![first])).await.unwrap();
    let user = proto_store.load_events::<User>(id).await.unwrap().0;
    let login = user.decide(&UserCommand::RecordLogin { session_id: "s1".into(), at_ms: 2 }).unwrap();
    json_store.append_events::<User>(id, ExpectedVersion::Exact(1), &meta, 2, &login).await.unwrap();
    let user = json_store.load_events::<User>(id).await.unwrap().0;
    let login = user.decide(&UserCommand::RecordLogin { session_id: "s2".into(), at_ms: 3 }).unwrap();
    proto_store.append_events::<User>(id, ExpectedVersion::Exact(2), &meta, 3, &login).await.unwrap();

    let records = json_store.read("user", id, 1, usize::MAX).await.unwrap();
    let types: Vec<&str> = records.iter().map(|r| r.content_type.as_str()).collect();
    assert_eq!(types, ["application/x-protobuf", "application/json", "application/x-protobuf"]);
    let (user, version) = json_store.load_events::<User>(id).await.unwrap();
    let profile = user.profile.unwrap();
    assert_eq!((version, user.last_login_ms), (3, 3));
    assert_eq!(profile.display_name, "Binary", "v1 protobuf upcast to v2");
}
