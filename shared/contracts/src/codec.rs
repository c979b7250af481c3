//! The codec of a context's typed events, written once: an enum whose
//! variants each wrap one proto message gets `DomainEvent` (type names,
//! schema versions, proto3 JSON and protobuf, upcasting of older schemas)
//! from [`proto_events!`](crate::proto_events).

/// Schema versions and upcasters of one context's events.
pub trait Schema {
    /// The schema version new events of this type are written with.
    fn current(event_type: &str) -> u32;
    /// Brings a stored payload (as proto3 JSON) from `version` up to
    /// [`current`](Self::current), one step at a time.
    fn upcast(event_type: &str, version: u32, payload: &mut serde_json::Value) -> Result<(), String>;
}

/// Every event at schema version 1, no upcasters.
pub struct FirstVersion;

impl Schema for FirstVersion {
    fn current(_: &str) -> u32 {
        1
    }
    fn upcast(event_type: &str, version: u32, _: &mut serde_json::Value) -> Result<(), String> {
        if version == 1 { Ok(()) } else { Err(format!("{event_type} has no schema version {version} (current 1)")) }
    }
}

/// Implements `allies_core::DomainEvent` for an enum of proto messages:
///
/// ```ignore
/// proto_events!(UserEvent: UserSchema {
///     Registered => "UserRegistered",
///     Authenticated => "UserAuthenticated",
/// });
/// ```
#[macro_export]
macro_rules! proto_events {
    ($enum:ident : $schema:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $enum {
            /// Every event type name of this enum.
            pub const EVENT_TYPES: &'static [&'static str] = &[$($name),+];
        }

        impl ::allies_core::DomainEvent for $enum {
            fn event_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name),+ }
            }

            fn schema_version(&self) -> u32 {
                <$schema as $crate::codec::Schema>::current(self.event_type())
            }

            fn encode_json(&self) -> Result<Vec<u8>, ::allies_core::DecodeError> {
                let r = match self { $(Self::$variant(e) => ::serde_json::to_vec(e)),+ };
                r.map_err(|err| ::allies_core::DecodeError::malformed(self.event_type(), err))
            }

            fn encode_protobuf(&self) -> Result<Vec<u8>, ::allies_core::DecodeError> {
                use ::prost::Message;
                Ok(match self { $(Self::$variant(e) => e.encode_to_vec()),+ })
            }

            fn decode_protobuf(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, ::allies_core::DecodeError> {
                use $crate::codec::Schema;
                let malformed = |e: &dyn std::fmt::Display| ::allies_core::DecodeError::malformed(event_type, e);
                let current = <$schema>::current(event_type);
                match event_type {
                    $($name => {
                        let mut msg = ::prost::Message::decode(data).map_err(|e: ::prost::DecodeError| malformed(&e))?;
                        if schema_version != current {
                            // Upcast through the JSON form, with the same upcasters.
                            let mut value = ::serde_json::to_value(&msg).map_err(|e| malformed(&e))?;
                            <$schema>::upcast(event_type, schema_version, &mut value).map_err(|_| {
                                ::allies_core::DecodeError::UnsupportedSchemaVersion { event_type: event_type.to_owned(), schema_version }
                            })?;
                            msg = ::serde_json::from_value(value).map_err(|e| malformed(&e))?;
                        }
                        Ok(Self::$variant(msg))
                    })+
                    _ => Err(::allies_core::DecodeError::UnknownEventType(event_type.to_owned())),
                }
            }

            fn decode_json(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, ::allies_core::DecodeError> {
                use $crate::codec::Schema;
                if !Self::EVENT_TYPES.contains(&event_type) {
                    return Err(::allies_core::DecodeError::UnknownEventType(event_type.to_owned()));
                }
                let malformed = |e: ::serde_json::Error| ::allies_core::DecodeError::malformed(event_type, e);
                if schema_version != <$schema>::current(event_type) {
                    // An older (or unknown) schema: upcast step by step, then decode.
                    let mut value: ::serde_json::Value = ::serde_json::from_slice(data).map_err(malformed)?;
                    <$schema>::upcast(event_type, schema_version, &mut value).map_err(|_| {
                        ::allies_core::DecodeError::UnsupportedSchemaVersion { event_type: event_type.to_owned(), schema_version }
                    })?;
                    return match event_type {
                        $($name => ::serde_json::from_value(value).map(Self::$variant).map_err(malformed),)+
                        _ => Err(::allies_core::DecodeError::UnknownEventType(event_type.to_owned())),
                    };
                }
                match event_type {
                    $($name => ::serde_json::from_slice(data).map(Self::$variant).map_err(malformed),)+
                    _ => Err(::allies_core::DecodeError::UnknownEventType(event_type.to_owned())),
                }
            }
        }

        impl $enum {
            /// The event's payload as proto3 JSON.
            pub fn to_json(&self) -> ::serde_json::Value {
                match self { $(Self::$variant(e) => ::serde_json::to_value(e).unwrap_or(::serde_json::Value::Null)),+ }
            }
        }
    };
}
