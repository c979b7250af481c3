//! Contracts: the code generated from `proto/` (gRPC APIs and event
//! schemas), each context's typed event enums with their codec and
//! upcasters ([`codec`]), and the [`registry`] of event categories.
//!
//! Must not know about Redis, domain rules or any service: a service, the
//! projector and the tools share these types, never each other's code.

/// Encoded `FileDescriptorSet` of every proto in `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod codec;
pub mod guardian;

pub mod command;
pub mod registry;

pub mod projector {
    pub mod v1 {
        tonic::include_proto!("defense_allies.projector.v1");
    }
}

pub mod timesquare;
