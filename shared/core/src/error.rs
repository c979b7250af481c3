//! One error model for every layer.
//!
//! An error says what kind of failure it is ([`ErrorCode`], the gRPC codes
//! this fleet uses), what the caller is told, and its details: the input
//! fields at fault, the business rule that refused, when to retry. Domain and
//! store errors implement [`ServiceError`] where they are defined; the
//! platform turns any of them into a `tonic::Status` in one place
//! (`allies_platform::status`), so no service maps codes by hand.

use std::time::Duration;

/// The kinds of failure a caller can see (a subset of the gRPC codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed input; names the fields. Nothing was written.
    InvalidArgument,
    /// A business rule refused the command in the current state.
    FailedPrecondition,
    NotFound,
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// No valid credentials.
    Unauthenticated,
    /// A rate limit; retry later.
    ResourceExhausted,
    /// A concurrency conflict survived the retries; retry the command.
    Aborted,
    /// A dependency (Redis) is unreachable, or the service is in maintenance.
    Unavailable,
    DeadlineExceeded,
    /// A defect or corrupt data: never something the caller caused.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "InvalidArgument",
            Self::FailedPrecondition => "FailedPrecondition",
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::PermissionDenied => "PermissionDenied",
            Self::Unauthenticated => "Unauthenticated",
            Self::ResourceExhausted => "ResourceExhausted",
            Self::Aborted => "Aborted",
            Self::Unavailable => "Unavailable",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Internal => "Internal",
        }
    }
}

/// One input field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub reason: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldViolation {}

/// The business rule that refused a command: `rule` is a stable
/// SCREAMING_CASE name (`CELL_OCCUPIED`), `subject` what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    pub rule: String,
    pub subject: String,
    pub description: String,
}

/// What every error that can reach a caller says about itself.
pub trait ServiceError: std::error::Error + Send + Sync {
    fn code(&self) -> ErrorCode;

    /// The input fields at fault (InvalidArgument, and FailedPrecondition
    /// when one field is to blame).
    fn field_violations(&self) -> Vec<FieldViolation> {
        Vec::new()
    }

    /// The business rule that refused (FailedPrecondition, PermissionDenied).
    fn rule(&self) -> Option<RuleViolation> {
        None
    }

    /// When a retry may succeed (ResourceExhausted, Unavailable).
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// What the caller is told. An internal error says nothing of its cause
    /// (that is logged instead).
    fn message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal error".to_owned(),
            _ => self.to_string(),
        }
    }
}

/// Input that breaks field rules: every bad field at once, never only the first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invalid {
    pub violations: Vec<FieldViolation>,
}

impl Invalid {
    pub fn new() -> Self {
        Self::default()
    }

    /// One bad field.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { violations: vec![FieldViolation::new(field, reason)] }
    }

    /// Records a field check's failure, if it failed.
    pub fn check(&mut self, result: Result<(), FieldViolation>) -> &mut Self {
        if let Err(v) = result {
            self.violations.push(v);
        }
        self
    }

    pub fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) -> &mut Self {
        self.violations.push(FieldViolation::new(field, reason));
        self
    }

    /// Checks a name field (a map, a difficulty…): 1 to 64 letters, digits,
    /// '_' or '-'.
    pub fn name(&mut self, field: &str, value: &str) -> &mut Self {
        if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        {
            self.push(field, "must be a name of letters, digits, '_' and '-' (at most 64)");
        }
        self
    }

    /// Ok when no field was at fault.
    pub fn into_result(self) -> Result<(), Invalid> {
        if self.violations.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<FieldViolation> for Invalid {
    fn from(v: FieldViolation) -> Self {
        Self { violations: vec![v] }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.violations.is_empty() {
            return f.write_str("invalid input");
        }
        let parts: Vec<String> = self.violations.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for Invalid {}

impl ServiceError for Invalid {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
    fn field_violations(&self) -> Vec<FieldViolation> {
        self.violations.clone()
    }
}

impl ServiceError for FieldViolation {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
    fn field_violations(&self) -> Vec<FieldViolation> {
        vec![self.clone()]
    }
}

impl ServiceError for crate::DecodeError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

/// A plain error with a code and a message, for the few places that need no
/// type of their own (an authorization check, a not-found query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl ServiceError for Failure {
    fn code(&self) -> ErrorCode {
        self.code
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_collects_every_bad_field() {
        let mut i = Invalid::new();
        i.check(Ok(())).check(Err(FieldViolation::new("a", "bad"))).push("b", "worse");
        let e = i.into_result().unwrap_err();
        assert_eq!(e.to_string(), "a: bad; b: worse");
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert_eq!(e.field_violations().len(), 2);
        assert!(Invalid::new().into_result().is_ok());
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = Failure::internal("disk on fire at /var/x");
        assert_eq!(e.message(), "internal error");
        assert_eq!(Failure::not_found("no such user").message(), "no such user");
    }
}
