//! TLS to Redis (`rediss://`) against a real redis-server with a TLS port:
//! the store works through it, verifying Redis's certificate against the
//! configured CA; another CA's certificate, or no client certificate where
//! Redis requires one, is refused; unusable TLS files are named.
//!
//! One test function: the TLS files are a process-wide setting.

use allies_core::ExpectedVersion;
use allies_store::{AppendRequest, EventStore, NewEvent, RedisEventStore, use_tls_files};
use allies_testkit::fixtures::meta;
use allies_testkit::tls::TlsFiles;
use allies_testkit::{RedisServer, free_port};

fn event() -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "Happened".into(),
        schema_version: 1,
        content_type: allies_store::CONTENT_TYPE_JSON.into(),
        data: b"{}".to_vec(),
    }
}

async fn append_and_load(url: &str, id: &str) -> Result<u64, String> {
    let store = RedisEventStore::connect(url, 4).await.map_err(|e| e.to_string())?;
    store
        .append(AppendRequest::new("thing", id, ExpectedVersion::Any, &meta(), 0, vec![event()]))
        .await
        .map_err(|e| e.to_string())?;
    let read = store.read("thing", id, 1, 10).await.map_err(|e| e.to_string())?;
    Ok(read.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_verifies_redis_and_presents_its_certificate() {
    let files = TlsFiles::make();
    let (tls, mtls) = (free_port(), free_port());
    let args: Vec<String> = files.redis_args(tls, "no");
    let redis = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let args: Vec<String> = files.redis_args(mtls, "yes");
    let strict = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("rediss://127.0.0.1:{tls}");

    // Trusting the CA that signed Redis's certificate: the store works.
    use_tls_files(&files.ca(), "", "").unwrap();
    assert_eq!(append_and_load(&url, "a").await.unwrap(), 1);
    assert!(redis.raw(&["KEYS", "es:*:stream:a"]).contains(":stream:a"), "written through the TLS port");
    // The TLS port speaks only TLS: plain RESP there gets nothing.
    let plain = append_and_load(&format!("redis://127.0.0.1:{tls}"), "b").await;
    assert!(plain.is_err(), "plain RESP on the TLS port: {plain:?}");

    // Another CA: Redis's certificate is not trusted.
    let other = TlsFiles::make();
    use_tls_files(&other.ca(), "", "").unwrap();
    let refused = append_and_load(&url, "c").await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "names the certificate: {refused}");

    // Redis requires a client certificate: without one refused, with ours served.
    let strict_url = format!("rediss://127.0.0.1:{mtls}");
    use_tls_files(&files.ca(), "", "").unwrap();
    assert!(append_and_load(&strict_url, "d").await.is_err(), "no client certificate");
    let (cert, key) = files.client();
    use_tls_files(&files.ca(), &cert, &key).unwrap();
    assert_eq!(append_and_load(&strict_url, "d").await.unwrap(), 1);
    assert!(strict.raw(&["KEYS", "es:*:stream:d"]).contains(":stream:d"));

    // Files that cannot be used are named, with the setting to fix.
    let missing = use_tls_files("/nonexistent/ca.pem", "", "").unwrap_err();
    assert_eq!((missing.setting, missing.path.as_str()), ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"));
    assert!(missing.reason.contains("cannot read"), "{missing:?}");
    let not_pem = use_tls_files(&key, "", "").unwrap_err();
    assert!(not_pem.reason.contains("no PEM certificate"), "{not_pem:?}");
    let half = use_tls_files(&files.ca(), &cert, "").unwrap_err();
    assert_eq!(half.setting, "REDIS_TLS_KEY_FILE", "{half:?}");
    use_tls_files("", "", "").unwrap();
}
