//! Compiles `proto/` with protox (pure Rust), so a fresh clone builds with cargo alone.
use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "defense_allies/guardian/v1/guardian.proto",
        "defense_allies/guardian/v1/events.proto",
        "defense_allies/projector/v1/projector.proto",
        "defense_allies/projector/v1/games.proto",
        "defense_allies/projector/v1/players.proto",
        "defense_allies/projector/v1/search.proto",
        "defense_allies/timesquare/v1/timesquare.proto",
        "defense_allies/timesquare/v1/matchmaking.proto",
        "defense_allies/timesquare/v1/events.proto",
        "defense_allies/timesquare/v1/player_events.proto",
        "defense_allies/timesquare/integration/v1/games.proto",
        "defense_allies/guardian/integration/v1/users.proto",
        "defense_allies/command/v1/statistics.proto",
        "defense_allies/command/v1/configuration.proto",
        "defense_allies/command/v1/config_events.proto",
        "defense_allies/command/v1/metrics.proto",
        "defense_allies/command/v1/job_events.proto",
        "defense_allies/command/v1/jobs.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;

    // Messages derive serde with proto3 JSON field names (lowerCamelCase), so
    // events are stored and printed as proto3 JSON. No 64-bit integers that
    // proto3 JSON would quote appear in the event schemas' JSON-facing fields
    // other than timestamps, which both forms accept on read.
    let serde = "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\", default)]";
    // Enums (proto enums and oneofs) derive serde without `default`.
    let serde_enum = "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\")]";
    // Maps are BTreeMaps: a message encodes to the same bytes every time
    // (a HashMap's order changes per process), which the idempotency
    // fingerprint of a request relies on.
    tonic_prost_build::configure()
        .btree_map(".")
        .message_attribute(".defense_allies", serde)
        .enum_attribute(".defense_allies", serde_enum)
        .compile_fds(fds)?;
    Ok(())
}
