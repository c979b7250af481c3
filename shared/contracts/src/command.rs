//! The operations context's contracts: the gRPC API and the Configuration
//! events, typed, with their codec.

pub mod v1 {
    tonic::include_proto!("defense_allies.command.v1");
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("defense_allies.command.events.v1");
    }

    use v1::*;

    use crate::codec::FirstVersion;

    /// The Configuration aggregate's type and its one id.
    pub const CONFIGURATION_TYPE: &str = "configuration";
    pub const CONFIGURATION_ID: &str = "fleet";
    /// The hash of uploaded game rules files, by rules version.
    pub const UPLOADED_RULES: &str = "config:rules";

    /// Events of the Configuration aggregate.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ConfigurationEvent {
        Updated(ConfigurationUpdated),
        RolledBack(ConfigurationRolledBack),
    }

    crate::proto_events!(ConfigurationEvent: FirstVersion {
        Updated => "ConfigurationUpdated",
        RolledBack => "ConfigurationRolledBack",
    });

    /// The Job aggregate's type (reports and maintenance: long work done by
    /// the workers of consumer group `cmd.jobs`).
    pub const JOB_TYPE: &str = "job";

    /// Events of the Job aggregate.
    #[derive(Debug, Clone, PartialEq)]
    pub enum JobEvent {
        Requested(JobRequested),
        Started(JobStarted),
        Progressed(JobProgressed),
        ReportGenerated(ReportGenerated),
        ReportFailed(ReportFailed),
        MaintenancePerformed(MaintenancePerformed),
    }

    crate::proto_events!(JobEvent: FirstVersion {
        Requested => "JobRequested",
        Started => "JobStarted",
        Progressed => "JobProgressed",
        ReportGenerated => "ReportGenerated",
        ReportFailed => "ReportFailed",
        MaintenancePerformed => "MaintenancePerformed",
    });

    impl ConfigurationEvent {
        /// Every value in force after this event.
        pub fn values(&self) -> &std::collections::BTreeMap<String, String> {
            match self {
                Self::Updated(e) => &e.values,
                Self::RolledBack(e) => &e.values,
            }
        }
    }
}
