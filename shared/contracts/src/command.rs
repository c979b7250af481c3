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
    /// The rules versions timesquare ships with (version → content hash),
    /// written by every timesquare at start: with the uploaded ones, the
    /// versions `game.rules_version` may name.
    pub const BUILTIN_RULES: &str = "{config:rules}:builtin"; // the slot of `config:rules`

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

        /// The keys an operator has set as of this event (every key of an
        /// event written before that was recorded).
        pub fn set_keys(&self) -> std::collections::BTreeSet<String> {
            let (keys, known) = match self {
                Self::Updated(e) => (&e.set_keys, e.set_keys_known),
                Self::RolledBack(e) => (&e.set_keys, e.set_keys_known),
            };
            if known { keys.iter().cloned().collect() } else { self.values().keys().cloned().collect() }
        }
    }
}
