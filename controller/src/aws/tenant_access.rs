//! Acting inside a tenant's account: a role assumed there, one session per tenant.
//!
//! The chain is: the controller's own identity (the standard AWS credential chain:
//! environment, IRSA web identity, EKS Pod Identity) -> optionally a role in the management
//! account (`--management-role-arn`) -> the Baseline's role in the tenant's account.
//!
//! ## Guarantees
//! - Credentials are cached strictly by tenant (its UID) and account id (and role, external
//!   id and session policy): there is no "current tenant" anywhere, so a session made for one
//!   tenant can never serve another, even if two Tenants ever named one account.
//! - A cached session is dropped five minutes before it expires (a chained session lasts at
//!   most one hour) and the cache holds at most [`MAX_SESSIONS`] sessions, so memory stays
//!   bounded for any fleet size.
//! - Every session is named after its tenant (`RoleSessionName`, at most 64 characters), so
//!   CloudTrail in every account shows which tenant a call was made for; with
//!   `--session-tags=true` it also carries the tenant as the session tag `silo-tenant` (the
//!   role's trust policy must then allow sts:TagSession).

use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_sts::types::Tag;
use moka::{Expiry, future::Cache};

use super::{
    budget::{Budget, Gate, Priority},
    error::{AwsError, AwsErrorKind},
};

/// Sessions kept at most; the least recently used go first.
pub const MAX_SESSIONS: u64 = 10_000;
/// A session is not used when it expires sooner than this.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// What Silo asks for; a chained session cannot last longer.
const SESSION_SECONDS: i32 = 3600;

/// Who to be in which account.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct SessionKey {
    /// The UID of the Tenant the session acts for.
    pub tenant_uid: String,
    pub account_id: String,
    pub role_name: String,
    pub external_id: Option<String>,
    pub session_policy: Option<String>,
}

/// Names the session after the tenant: `silo-<tenant>`, in RoleSessionName's alphabet and
/// length ([`role_session_name`]). Pure.
pub fn session_name(tenant: &str) -> String {
    role_session_name(&format!("silo-{tenant}"))
}

/// `name` in RoleSessionName's alphabet and length (2 to 64 characters of
/// `[A-Za-z0-9+=,.@_-]`). A name too long is cut and ends with a hash of the whole name, so
/// two long names never share a session name. Pure.
pub fn role_session_name(name: &str) -> String {
    const MAX: usize = 64;
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) { c } else { '-' }).collect();
    if cleaned.len() <= MAX {
        return format!("{cleaned:-<2}");
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{suffix}", &cleaned[..MAX - suffix.len() - 1])
}

#[derive(Clone)]
struct Session {
    credentials: Credentials,
    usable_until: Instant,
}

struct UntilExpiry;

impl Expiry<SessionKey, Session> for UntilExpiry {
    fn expire_after_create(&self, _key: &SessionKey, session: &Session, now: Instant) -> Option<Duration> {
        Some(session.usable_until.saturating_duration_since(now))
    }
}

/// Assumes roles in tenant accounts and caches the sessions.
#[derive(Clone)]
pub struct TenantAccess {
    sts: aws_sdk_sts::Client,
    /// The STS budget of the controller's identity; AssumeRole is a read (nothing to fence).
    gate: Gate,
    sessions: Cache<SessionKey, Session>,
    tag_sessions: bool,
}

impl TenantAccess {
    pub fn new(config: &SdkConfig, budget: Budget, tag_sessions: bool) -> Self {
        let sessions = Cache::builder().max_capacity(MAX_SESSIONS).expire_after(UntilExpiry).build();
        Self { sts: aws_sdk_sts::Client::new(config), gate: Gate::new("sts", budget), sessions, tag_sessions }
    }

    /// Credentials for `key`, from the cache or a new AssumeRole named after `tenant`, sent
    /// at `priority` on the STS budget.
    pub async fn credentials(
        &self,
        key: &SessionKey,
        tenant: &str,
        priority: Priority,
    ) -> Result<Credentials, AwsError> {
        if let Some(session) = self.sessions.get(key).await {
            return Ok(session.credentials);
        }
        let session = self.assume(key, tenant, priority).await?;
        self.sessions.insert(key.clone(), session.clone()).await;
        Ok(session.credentials)
    }

    /// Forgets a session, e.g. after the simulator or AWS refused it.
    pub async fn forget(&self, key: &SessionKey) {
        self.sessions.invalidate(key).await;
    }

    async fn assume(&self, key: &SessionKey, tenant: &str, priority: Priority) -> Result<Session, AwsError> {
        let role_arn = format!("arn:aws:iam::{}:role/{}", key.account_id, key.role_name);
        let mut request = self
            .sts
            .assume_role()
            .role_arn(&role_arn)
            .role_session_name(session_name(tenant))
            .duration_seconds(SESSION_SECONDS)
            .set_external_id(key.external_id.clone())
            .set_policy(key.session_policy.clone());
        if self.tag_sessions {
            let tag = Tag::builder().key("silo-tenant").value(tenant).build().expect("key and value are set");
            request = request.tags(tag);
        }
        let out = self.gate.read(priority, "AssumeRole", || request.send()).await?;
        let creds = out
            .credentials
            .ok_or_else(|| AwsError::unexpected_answer("AssumeRole", "the answer carried no credentials"))?;
        let expires = SystemTime::try_from(creds.expiration).unwrap_or_else(|_| SystemTime::now());
        let lifetime = expires.duration_since(SystemTime::now()).unwrap_or_default();
        let credentials = Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            Some(expires),
            "silo-tenant-session",
        );
        Ok(Session { credentials, usable_until: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN) })
    }
}

/// Whether an AssumeRole refusal means "not yet": a brand-new account's role takes a while
/// to become assumable.
pub fn is_access_denied(err: &AwsError) -> bool {
    err.kind == AwsErrorKind::Terminal && (err.has_code("AccessDenied") || err.has_code("AccessDeniedException"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_name_the_tenant_within_sts_limits() {
        assert_eq!(session_name("acme"), "silo-acme");
        assert_eq!(session_name("a b/c"), "silo-a-b-c");
        let long = "t".repeat(100);
        assert_eq!(session_name(&long).len(), 64);
        let (a, b) = (format!("{long}-a"), format!("{long}-b"));
        assert_ne!(session_name(&a), session_name(&b), "long names that differ only at the end stay apart");
        assert_eq!(session_name(&a).len(), 64);
    }
}
