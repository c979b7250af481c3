//! Who is calling, as a verified access token says — the one fact the
//! request context and the token verifier share (its own room: neither
//! needs the other for it).

use allies_core::Failure;

/// The admin role's name.
pub const ROLE_ADMIN: &str = "admin";

/// Who is calling, as the verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub session_id: String,
    pub roles: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
    /// The username (empty in tokens issued before names were carried).
    pub name: String,
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(ROLE_ADMIN)
    }

    /// PermissionDenied unless the caller has `role`.
    pub fn require_role(&self, role: &str) -> Result<(), Failure> {
        if self.has_role(role) { Ok(()) } else { Err(Failure::permission_denied(format!("requires role '{role}'"))) }
    }

    /// PermissionDenied unless the caller is `user_id` or an admin.
    pub fn require_self_or_admin(&self, user_id: &str) -> Result<(), Failure> {
        if self.user_id == user_id || self.is_admin() {
            Ok(())
        } else {
            Err(Failure::permission_denied("only the user themself or an admin may see this"))
        }
    }
}
