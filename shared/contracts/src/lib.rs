//! Contracts: the code generated from `proto/` — gRPC APIs and event schemas.
//!
//! Owns nothing but generated types and the encoded descriptor set (for server
//! reflection). Must not know about Redis, the domain rules or any service.

/// Encoded `FileDescriptorSet` of every proto in `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod guardian {
    pub mod v1 {
        tonic::include_proto!("defense_allies.guardian.v1");
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("defense_allies.guardian.events.v1");
        }

        /// Schema versions and upcasters of the authentication context's
        /// events, shared by everyone who reads them (Guardian, projector).
        pub mod schema {
            use serde_json::Value;

            /// The schema version new events of this type are written with.
            pub fn current(event_type: &str) -> u32 {
                match event_type {
                    "UserRegistered" => 2,
                    _ => 1,
                }
            }

            /// Brings a stored payload from `version` up to [`current`], one
            /// step at a time. Errors name what could not be done.
            pub fn upcast(event_type: &str, version: u32, payload: &mut Value) -> Result<(), String> {
                let target = current(event_type);
                if version > target || version == 0 {
                    return Err(format!("{event_type} has no schema version {version} (current {target})"));
                }
                let mut v = version;
                while v < target {
                    let obj = payload.as_object_mut().ok_or("payload is not a JSON object")?;
                    match (event_type, v) {
                        // v2 added displayName, which defaults to the username.
                        ("UserRegistered", 1) => {
                            let name = obj.get("username").cloned().unwrap_or(Value::String(String::new()));
                            // Absent in JSON, empty when read from v1 protobuf bytes.
                            if obj.get("displayName").and_then(Value::as_str).is_none_or(str::is_empty) {
                                obj.insert("displayName".into(), name);
                            }
                        }
                        _ => return Err(format!("no upcaster for {event_type} v{v}")),
                    }
                    v += 1;
                }
                Ok(())
            }
        }
    }
}

pub mod projector {
    pub mod v1 {
        tonic::include_proto!("defense_allies.projector.v1");
    }
}

pub mod timesquare {
    pub mod v1 {
        tonic::include_proto!("defense_allies.timesquare.v1");
    }
}
