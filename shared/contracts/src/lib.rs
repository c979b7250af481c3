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
