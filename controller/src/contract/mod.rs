//! The names every part of Silo agrees on: what a Tenant, an account and a person's
//! annotation mean to all of them, and who owns an account ([`ownership`]).
//!
//! This is the ground floor: it imports nothing from the rest of the crate but the API types,
//! so any module may use it. A name here is part of Silo's contract with its users (they
//! appear on Tenants, on AWS accounts and in RBAC): changing one is a breaking change.

pub mod ownership;

/// The API group every Silo resource belongs to.
pub const GROUP: &str = "silo.dev";

/// The finalizer that guards every Tenant until its AWS side is settled.
pub const FINALIZER: &str = "silo.dev/account";

/// The field manager of every write Silo makes (server-side apply of statuses).
pub const FIELD_MANAGER: &str = "silo";

/// Tag carrying the Tenant's name on its account.
pub const TENANT_TAG: &str = "silo.dev/tenant";

/// Tag carrying the Tenant's UID on its account: the proof that an account is this Tenant's
/// (see [`ownership`]).
pub const TENANT_UID_TAG: &str = "silo.dev/tenant-uid";

/// Tag carrying the AccountPool's name on an account that waits in the pool.
pub const POOL_TAG: &str = "silo.dev/pool";
/// The annotation on a Baseline naming the revision whose remaining bakes are skipped
/// (`silo rollout promote`).
pub const PROMOTE_ANNOTATION: &str = "silo.dev/promote";

/// Tag carrying the AccountPool's UID on an account that waits in the pool: the proof that an
/// account is the pool's to hand out. A Tenant that takes the account removes both pool tags
/// when it puts its own [`TENANT_UID_TAG`] on.
pub const POOL_UID_TAG: &str = "silo.dev/pool-uid";

/// The annotations a person puts on a Tenant to tell Silo something the spec cannot say.
/// Each one triggers a reconcile when it changes.
pub mod annotations {

    /// Any new value: verify the tenant against AWS now. Silo records the value it acted on in
    /// `status.verifiedRequest`, so nobody has to remove it.
    pub const VERIFY: &str = "silo.dev/verify";
    /// The id of an account that does not carry this Tenant's `silo.dev/tenant-uid` tag, which
    /// this Tenant may adopt (`spec.accountId`) or take back after its tag was lost: the
    /// owner's consent, repeated so a typo in `spec.accountId` cannot take another account.
    pub const ADOPT_ACCOUNT: &str = "silo.dev/adopt-account";
    /// The id of an adopted account that `deletionPolicy: Close` may close: closing an account
    /// Silo did not create needs this second consent.
    pub const CLOSE_ADOPTED_ACCOUNT: &str = "silo.dev/close-adopted-account";
    /// The UID this Tenant had before it was restored from a backup or moved to another
    /// cluster: an account whose `silo.dev/tenant-uid` tag carries exactly this UID is this
    /// Tenant's, and its tag is moved to the new UID.
    pub const PREVIOUS_UID: &str = "silo.dev/previous-uid";
}
