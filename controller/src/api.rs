//! The `Tenant` API (`silo.dev/v1alpha1`): what users write, and what Silo reports back.
//!
//! Every rule the API server can judge lives here, as OpenAPI schema bounds or CEL rules
//! (`x-kubernetes-validations`), so bad input is refused at admission with a message that
//! names the field. `silo crd` prints the CRDs generated from these types; the checked-in
//! copies under `crds/` must equal that output (`make crds-check`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state of one tenant's AWS account.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "silo.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tn",
    status = "TenantStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Tenant is one customer of the platform, isolated in a dedicated AWS account that Silo creates (or adopts), places in an organizational unit, tags, and bootstraps.",
    printcolumn(name = "Account", type_ = "string", json_path = ".status.accountId", description = "AWS account id"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether everything is done for the current generation"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Where the tenant is in its lifecycle"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", description = "Why the tenant is (not) ready"),
    printcolumn(name = "OU", type_ = "string", json_path = ".spec.organizationalUnit", description = "Requested organizational unit"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.organization",
    validation = Rule::new("size(self.metadata.name) <= 50 || has(self.spec.accountName)")
        .message("metadata.name is longer than 50 characters, the most an AWS account name may have: set spec.accountName")
        .field_path(".spec.accountName"),
    validation = Rule::new("!has(self.spec.pool) || !has(self.spec.email)")
        .message("spec.email cannot be set with spec.pool: an account from a pool keeps the root email it was created with (changing it needs the new address's owner to confirm it); status.email shows it")
        .field_path(".spec.email"),
    validation = Rule::new("!has(self.spec.pool) || !has(self.spec.accountId)")
        .message("spec.pool and spec.accountId exclude each other: a Tenant either adopts an account or takes one from a pool")
        .field_path(".spec.pool"),
    validation = Rule::new("!has(self.spec.accountId) || has(oldSelf.spec.accountId) || !has(self.status) || (!has(self.status.email) && !has(self.status.accountId) && !has(self.status.createAccountRequestId))")
        .message("spec.accountId cannot be added once Silo has started creating an account for this Tenant (status.email is recorded): delete the Tenant with deletionPolicy Retain and create a new one to adopt an account")
        .field_path(".spec.accountId"),
)]
#[x_kube(
    validation = Rule::new("!has(oldSelf.email) || (has(self.email) && self.email == oldSelf.email)")
        .message("spec.email cannot change once set: AWS ties an account to its email forever")
        .field_path(".email"),
    validation = Rule::new("!has(oldSelf.accountId) || (has(self.accountId) && self.accountId == oldSelf.accountId)")
        .message("spec.accountId cannot change once set: create a new Tenant to adopt another account")
        .field_path(".accountId"),
    validation = Rule::new(ORGANIZATION_IMMUTABLE)
        .message("spec.organization cannot change: a Tenant stays in the organization it was created in (an AWS account moves between organizations only by leaving one and accepting the other's invitation); create a new Tenant")
        .field_path(".organization"),
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The Organization (silo.dev) whose AWS organization holds this tenant's account. Empty:
    /// the default organization, the one the controller's flags describe. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(ORGANIZATION_NAME).message(ORGANIZATION_NAME_MESSAGE))]
    pub organization: Option<String>,

    /// Name of the AWS account: 1 to 50 printable ASCII characters. Defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(validation = Rule::new("self.matches('^[ -~]+$')").message("spec.accountName may contain only printable ASCII characters (letters, digits, spaces, punctuation)"))]
    pub account_name: Option<String>,

    /// Email of the account's root user: 6 to 64 characters with exactly one '@'. AWS never
    /// lets an email be used twice, even after the account is closed. Defaults to the
    /// controller's --email-template with {tenant} replaced by metadata.name. Cannot change
    /// once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 6, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[^@\\\\s]+@[^@\\\\s]+\\\\.[^@\\\\s.][^@\\\\s]*$')").message("spec.email must be one local part, one '@' and a domain with a dot, without spaces, like tenant@example.com"))]
    pub email: Option<String>,

    /// Adopt this existing 12-digit account of the organization instead of creating one.
    /// Silo tags it and never creates anything. Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 12))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{12}$')").message("spec.accountId must be a 12-digit AWS account id"))]
    pub account_id: Option<String>,

    /// Organizational unit to place the account in: an OU id like ou-ab12-cdef3456, or a
    /// path of OU names from the root like /Tenants/Production ("/" is the root itself), at
    /// most 5 levels deep (AWS's limit). Unset: the account stays where AWS Organizations put
    /// it. The controller may limit where tenant accounts go (--tenant-ou-root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(
        validation = Rule::new("self.matches('^ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}$') || self.matches('^/$|^(/[^/]{1,128})+$')")
            .message("spec.organizationalUnit must be an OU id like ou-ab12-cdef3456 or a path from the root like /Tenants/Production"),
        validation = Rule::new("!self.startsWith('/') || self.matches('^/$|^(/[^/]{1,128}){1,5}$')")
            .message("spec.organizationalUnit is more than 5 levels below the root, deeper than AWS Organizations allows"),
    )]
    pub organizational_unit: Option<String>,

    /// Tags for the account, besides the two silo.dev/* tags Silo adds itself. At most 48 (AWS
    /// allows 50 in all); keys 1 to 128 characters and not starting with "aws:", values at most
    /// 256 characters, both of letters, digits, spaces and _ . : / = + - @ only. Silo removes
    /// only tags it applied before; tags others put on the account stay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 48, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(
        validation = Rule::new("self.all(k, size(k) >= 1 && size(k) <= 128)").message("spec.tags keys must be 1 to 128 characters long"),
        validation = Rule::new("self.all(k, !k.startsWith('aws:'))").message("spec.tags keys must not start with 'aws:', which AWS reserves"),
        validation = Rule::new("self.all(k, !k.startsWith('silo.dev/'))").message("spec.tags keys must not start with 'silo.dev/', which Silo reserves for its own tags"),
        validation = Rule::new("self.all(k, k.matches('^[\\\\p{L}\\\\p{Z}\\\\p{N}_.:/=+\\\\-@]*$') && self[k].matches('^[\\\\p{L}\\\\p{Z}\\\\p{N}_.:/=+\\\\-@]*$'))")
            .message("spec.tags keys and values may contain only letters, digits, spaces and _ . : / = + - @ (AWS's tag characters)"),
    )]
    pub tags: BTreeMap<String, String>,

    /// The account's alternate contacts (security, billing, operations), set through AWS
    /// Account Management. A kind left out here takes the controller's default
    /// (--default-contacts-file), if any; Silo removes only contacts it set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<AlternateContacts>,

    /// Service control policies (ids like p-abcd1234, or names) to attach to the account, at
    /// most 4 (AWS allows 5 per account, one of them usually FullAWSAccess). Silo detaches only
    /// policies it attached, so the organization's own guardrails are never touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) >= 1 && size(p) <= 128)").message("spec.policies entries must be a policy id like p-abcd1234 or a policy name of 1 to 128 characters"))]
    pub policies: Vec<String>,

    /// Baseline to bootstrap in the account, with parameter overrides for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineRef>,

    /// What happens to the AWS account when this Tenant is deleted. Retain (default) leaves
    /// the account, its OU and its tags as they are. Close closes the account, and only when
    /// the controller runs with --allow-account-closure.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// While true, Silo makes no AWS calls for this tenant; a condition says it is paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// An AccountPool to take a ready account from instead of creating one. When the pool has
    /// none ready, Silo creates one as without a pool: a pool speeds a Tenant up, it never
    /// blocks it. The account keeps the pool's root email (status.email), so spec.email cannot
    /// be set with it. Read only until the Tenant has an account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pool: Option<String>,
}

/// The alternate contacts of an account, by kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AlternateContacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Contact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Contact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Contact>,
}

impl AlternateContacts {
    pub fn get(&self, kind: ContactKind) -> Option<&Contact> {
        match kind {
            ContactKind::Security => self.security.as_ref(),
            ContactKind::Billing => self.billing.as_ref(),
            ContactKind::Operations => self.operations.as_ref(),
        }
    }
}

/// The three kinds of alternate contact AWS knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContactKind {
    Security,
    Billing,
    Operations,
}

impl ContactKind {
    pub const ALL: [ContactKind; 3] = [ContactKind::Security, ContactKind::Billing, ContactKind::Operations];

    /// The name used in the status and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactKind::Security => "security",
            ContactKind::Billing => "billing",
            ContactKind::Operations => "operations",
        }
    }
}

/// One alternate contact, with AWS's limits on each field.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// 1 to 64 characters.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// 1 to 50 characters.
    #[schemars(length(min = 1, max = 50))]
    pub title: String,
    /// An email address, at most 254 characters.
    #[schemars(length(min = 1, max = 254))]
    #[x_kube(validation = Rule::new("self.matches('^[\\\\w+=.#|!&-]+@[\\\\w.-]+\\\\.[\\\\w]+$')").message("contact email must look like name@example.com"))]
    pub email: String,
    /// 1 to 25 characters of digits, spaces and ( ) + -.
    #[schemars(length(min = 1, max = 25))]
    #[x_kube(validation = Rule::new("self.matches('^[\\\\s0-9()+-]+$')").message("contact phone may contain only digits, spaces and ( ) + -"))]
    pub phone: String,
}

/// A reference to a Baseline, with this tenant's parameter overrides.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineRef {
    /// Name of the Baseline to apply.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Parameter values for this tenant; they override the Baseline's defaults. TenantName and
    /// AccountId are Silo's to fill in and cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("!('TenantName' in self) && !('AccountId' in self)")
        .message("spec.baseline.parameters must not set TenantName or AccountId: Silo fills them in from the Tenant"))]
    pub parameters: BTreeMap<String, String>,
}

/// What Silo does with the AWS account when its Tenant is deleted.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the account, its OU and its tags.
    #[default]
    Retain,
    /// Close the account (only with --allow-account-closure on the controller).
    Close,
}

/// What Silo observed and did. Written only by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The AWS account id, once the account exists or was adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,

    /// The account's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_arn: Option<String>,

    /// The effective account name, fixed before the first AWS call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,

    /// The effective email, fixed before the first AWS call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,

    /// Id of the CreateAccount request Silo sent for this Tenant, recorded as soon as AWS
    /// returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_account_request_id: Option<String>,

    /// Id of the account's current parent (an OU id, or the root id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizational_unit_id: Option<String>,

    /// Keys of the tags Silo applied to the account; only these are ever removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_tag_keys: Vec<String>,

    /// Ids of the service control policies Silo attached to the account; only these are ever
    /// detached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached_policy_ids: Vec<String>,

    /// The alternate contacts Silo set, by kind, each with a fingerprint of what it set; only
    /// these are ever removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied_contacts: BTreeMap<String, String>,

    /// How many periodic verifications this tenant has had: each reads one part of the
    /// account from AWS in turn (tags, policies, each contact), see docs/concepts.md, "Drift".
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub verification_count: u64,

    /// True when the account was adopted (it existed before this Tenant, and the Tenant's
    /// owner consented with the silo.dev/adopt-account annotation), not created by Silo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,

    /// The AccountPool the account was claimed from, recorded with status.accountId before
    /// any AWS write: a controller that stops mid-claim resumes the same claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_from_pool: Option<String>,

    /// The stacks the pool's Baseline left in a claimed account that this Tenant's own
    /// Baseline does not replace (another stack name, other Regions, or no Baseline),
    /// recorded with the claim; Silo deletes them once the Tenant's own baseline runs, then
    /// forgets this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_stacks: Option<PoolStacks>,

    /// A one-word summary for humans: Pending, Creating, Ready, Paused, Stalled, Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// The metadata.generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When Silo last verified the account against AWS (drift checks run once per resync
    /// period, each tenant at its own moment of the period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<String>,

    /// The value of the silo.dev/verify annotation Silo last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_request: Option<String>,

    /// When Silo asks AWS again to close the account, after AWS refused for quota reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_closure_attempt: Option<String>,

    /// The baseline bootstrapped in the account: one stack per region, with its outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<TenantBaselineStatus>,

    /// Ready, AccountReady, PlacementReady, SettingsReady, BaselineReady, Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Stacks a pool's Baseline made in an account, left for its claimant to delete.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolStacks {
    /// The pool's Baseline: its role deletes the stacks.
    pub baseline: String,
    pub stack_name: String,
    /// The Regions whose stack is still to be deleted.
    pub regions: Vec<String>,
}

/// The baseline of one tenant, as applied.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantBaselineStatus {
    /// Name of the Baseline.
    pub name: String,
    /// The Baseline revision this tenant was admitted to (a rollout moves it forward; it is
    /// recorded before any stack call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_revision: Option<String>,
    /// What this tenant should run: a hash of the Baseline's revision and this tenant's
    /// parameters. Each stack carries the revision it runs as the tag silo.dev/revision.
    pub revision: String,
    /// The CloudFormation change set of a preview (spec.rollout.preview on the Baseline):
    /// what an update to the admitted revision would change, without executing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<TenantPreview>,
    /// One entry per region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<StackReport>,
    /// The last drift check of the stacks (spec.drift on the Baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<TenantDrift>,
    /// Set when the Baseline's automatic rollback sent this tenant back to its admitted
    /// revision; the Baseline counts these tenants. Cleared by its next admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
}

/// What drift detection found in one tenant's stacks.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantDrift {
    /// When the last detection completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
    /// Detections started and not read yet: one per region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<DriftDetectionRef>,
    /// The resources that drifted, as the last detection found them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<DriftedResource>,
    /// When Silo last put drifted resources back (spec.drift.repair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_at: Option<String>,
    /// How many times Silo put drifted resources back.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub repairs: u32,
    /// A check is due at once (after a repair, to confirm it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recheck: bool,
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

/// A drift detection in flight in one region.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftDetectionRef {
    pub region: String,
    pub id: String,
}

/// A stack resource whose actual configuration differs from the template's.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftedResource {
    pub region: String,
    pub logical_id: String,
    pub resource_type: String,
    /// MODIFIED or DELETED.
    pub status: String,
    /// Each property that differs: its path, the expected and the actual value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// What a previewed update would change in one tenant's stacks.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantPreview {
    /// The Baseline revision previewed.
    pub revision: String,
    /// One entry per resource change, per region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ResourceChange>,
}

/// One change CloudFormation says an update would make.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ResourceChange {
    pub region: String,
    /// Add, Modify, Remove (or Import, Dynamic).
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// True, False or Conditional, for modifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// One baseline stack in one region of the tenant's account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StackReport {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    /// CloudFormation's stack status, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_status: Option<String>,
    /// The revision the stack runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// How many times a failed creation was deleted and created again for this revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub create_attempts: u32,
    /// The revision last sent with CreateStack or UpdateStack. A stack that rolled back from
    /// it is reported, and not retried until the revision changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted_revision: Option<String>,
    /// The stack's outputs, for GitOps and other controllers to consume.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A baseline: the CloudFormation stack every tenant account that opts in gets, in each of
/// the listed regions, run through a role assumed in the tenant's account.
#[allow(clippy::duplicated_attributes)] // three integer printer columns look alike to clippy
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "silo.dev",
    version = "v1alpha1",
    kind = "Baseline",
    plural = "baselines",
    status = "BaselineStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Baseline is the CloudFormation stack Silo bootstraps in every tenant account that names it: the roles, buckets, topics and parameters each tenant gets.",
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.revision"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.rollout.phase",
        description = "Where the rollout of the newest revision stands"
    ),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.tenants.current",
        description = "Tenants at the newest revision"
    ),
    printcolumn(name = "InProgress", type_ = "integer", json_path = ".status.tenants.inProgress"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.tenants.failed"),
    printcolumn(name = "Waiting", type_ = "integer", json_path = ".status.tenants.waiting"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("has(self.template) != has(self.templateURL)")
        .message("set exactly one of spec.template (inline, up to 51,200 bytes) and spec.templateURL"),
)]
#[serde(rename_all = "camelCase")]
pub struct BaselineSpec {
    /// The CloudFormation template, inline as YAML or JSON, up to CloudFormation's inline
    /// limit of 51,200 bytes. Larger templates go to spec.templateURL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 51200))]
    pub template: Option<String>,

    /// An https:// or s3:// URL of a template, for templates over 51,200 bytes.
    #[serde(default, rename = "templateURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('s3://')").message("spec.templateURL must start with https:// or s3://"))]
    pub template_url: Option<String>,

    /// Default parameter values; a Tenant's spec.baseline.parameters override them. Silo fills
    /// in TenantName and AccountId itself when the template declares them; they cannot be set
    /// here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("!('TenantName' in self) && !('AccountId' in self)")
        .message("spec.parameters must not set TenantName or AccountId: Silo fills them in for each tenant"))]
    pub parameters: BTreeMap<String, String>,

    /// Regions to run the stack in. Default: the controller's region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 32)))]
    #[x_kube(validation = Rule::new("self.all(r, r.matches('^[a-z]{2}(-[a-z]+)+-[0-9]$'))").message("spec.regions must be AWS region names like us-east-1"))]
    pub regions: Vec<String>,

    /// Name of the stack in each region. Default: silo-baseline.
    #[serde(default = "default_stack_name")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z][-a-zA-Z0-9]*$')").message("spec.stackName must start with a letter and contain only letters, digits and hyphens"))]
    pub stack_name: String,

    /// CloudFormation capabilities the template needs, like CAPABILITY_NAMED_IAM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,

    /// Turn on the stack's termination protection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub termination_protection: bool,

    /// The role Silo assumes in the tenant account. Default: OrganizationAccountAccessRole.
    #[serde(default = "default_role_name")]
    #[schemars(length(min = 1, max = 64))]
    pub role_name: String,

    /// A Secret holding the external id the role's trust policy requires, in the controller's
    /// external-id namespace (--external-id-namespace, default silo-external-ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<SecretKeyRef>,

    /// An IAM policy document (JSON) passed as AssumeRole's session policy: the bootstrap
    /// session can never do more than this states, whatever the role allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub session_policy: Option<String>,

    /// How many revisions (ControllerRevisions in Silo's namespace) are kept besides those
    /// tenants still run. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub revision_history_limit: Option<u32>,

    /// How a new revision reaches the tenants: stages, the canary first, through a sliding
    /// window of maxConcurrent tenants, halting on failures. Changes to roleName, externalId
    /// and sessionPolicy apply at once and are not rolled.
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// Drift detection of the tenants' stacks: resources changed outside CloudFormation.
    #[serde(default)]
    pub drift: DriftSpec,
}

/// How a Baseline's stacks are checked for drift.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// How often each tenant's stacks are checked, spread over the interval by tenant, at a
    /// periodic verification (so at most as often as --resync-seconds). 0 turns detection off.
    /// Default 86400 (daily).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2592000))]
    pub interval_seconds: Option<u32>,

    /// Put drifted resources back: a change set in CloudFormation's REVERT_DRIFT deployment
    /// mode, executed. Default false: drift is reported only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
}

/// How a Baseline's new revision is rolled across its tenants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.canary) || (has(self.canary.selector) != has(self.canary.count))")
        .message("spec.rollout.canary takes exactly one of selector and count"),
)]
pub struct RolloutSpec {
    /// The tenants that go first: the ones a label selector picks, or the first `count`
    /// tenants by name. Default: the first tenant by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,

    /// The stages of a rollout: cumulative sizes, each a number of tenants or a percentage of
    /// the Baseline's tenants, like [1, "5%", "25%", "100%"]. The first is the canary (unless
    /// `canary` picks it); each stage finishes and bakes before the next opens, and a last
    /// stage of every tenant is implied. Default: the canary, then every tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    // Not a regular expression as for maxConcurrent: over a list, its estimated cost is beyond
    // the API server's budget.
    #[x_kube(validation = Rule::new("self.all(s, type(s) == int ? s >= 1 : (size(s) >= 2 && size(s) <= 4 && s.endsWith('%') && !s.startsWith('0')))")
        .message("spec.rollout.stages are numbers of tenants (at least 1) or percentages like 5%"))]
    pub stages: Vec<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,

    /// Tenants with stack work in flight at once (all their regions count as one): the next
    /// tenant is admitted as soon as one finishes. A number, or a percentage of the Baseline's
    /// tenants like "10%". Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 1 : self.matches('^[1-9][0-9]?%$|^100%$')")
        .message("spec.rollout.maxConcurrent must be a number of tenants (at least 1) or a percentage like 10%"))]
    pub max_concurrent: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,

    /// Failed tenants allowed per revision before the rollout halts: a number, or a
    /// percentage of the Baseline's tenants. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : self.matches('^[0-9]{1,2}%$|^100%$')")
        .message("spec.rollout.failureTolerance must be a number of tenants or a percentage like 5%"))]
    pub failure_tolerance: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,

    /// Seconds to wait after each stage but the last (the canary is the first) with no new
    /// failures before the next opens. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86400))]
    pub bake_seconds: Option<u32>,

    /// While true, no tenant is admitted to a new revision; those in flight finish.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// While true, the canary tenants create CloudFormation change sets instead of updating,
    /// and the Baseline's status shows what would change; nothing is executed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview: bool,

    /// What a rollout does when failures exceed failureTolerance: Halt (nobody else is
    /// admitted, the tenants it reached stay), or Rollback (the tenants it reached go back to
    /// the last revision that completed, through the same window). Default Halt.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// What a rollout does when failures exceed `failureTolerance`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Nobody else is admitted; the tenants the revision reached stay on it.
    #[default]
    Halt,
    /// Nobody else is admitted, and the tenants the revision reached go back to the last
    /// revision that completed.
    Rollback,
}

/// A rollout's automatic rollback: the tenants the failed revision reached go back to `to`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The last revision that completed, where the tenants go back to.
    pub to: String,
    /// How many tenants the failed revision reached: those still on it, and those the
    /// rollback sent back (each records it in `status.baseline.rolledBack`). It grows when a
    /// tenant whose move to the failed revision the controller had not seen yet shows up.
    pub tenants: u32,
    /// Every tenant on the failed revision whose name sorts at or before this one is sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    /// When the rollback started (RFC 3339): with the failed revision, what the tenants it
    /// sent back record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// The rollback that sent a tenant back from a failed revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The revision that failed, which this tenant had been admitted to.
    pub from: String,
    /// When the rollback started (the Baseline's `status.rollout.rollback.startedAt`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_at: String,
}

/// The canary of a rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Tenants with these labels go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// The first `count` tenants by name go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<u32>,
}

fn default_stack_name() -> String {
    "silo-baseline".into()
}

fn default_role_name() -> String {
    "OrganizationAccountAccessRole".into()
}

/// A CloudFormation capability.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum Capability {
    #[serde(rename = "CAPABILITY_IAM")]
    Iam,
    #[serde(rename = "CAPABILITY_NAMED_IAM")]
    NamedIam,
    #[serde(rename = "CAPABILITY_AUTO_EXPAND")]
    AutoExpand,
}

impl Capability {
    pub fn as_str(&self) -> &'static str {
        match self {
            Capability::Iam => "CAPABILITY_IAM",
            Capability::NamedIam => "CAPABILITY_NAMED_IAM",
            Capability::AutoExpand => "CAPABILITY_AUTO_EXPAND",
        }
    }
}

/// A key of a Secret in the controller's external-id namespace (Silo reads Secrets nowhere
/// else).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What the Baseline controller observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineStatus {
    /// The newest revision: a content hash of the template (the content behind a
    /// templateURL too), parameters, regions and stack settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many tenants use this Baseline, by state.
    #[serde(default)]
    pub tenants: TenantCounts,
    /// The rollout of the newest revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The last revision whose rollout completed: what a new tenant gets while the newest is
    /// not through its canary, halted or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_complete_revision: Option<String>,
    /// What the canary tenants' change sets say the newest revision would change (with
    /// spec.rollout.preview).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview: Vec<PreviewReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Tenants of a Baseline, by where their stacks stand.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantCounts {
    /// At the newest revision in every region.
    pub current: u32,
    /// Admitted to the newest revision, stack work in flight.
    pub in_progress: u32,
    /// Failed or stalled.
    pub failed: u32,
    /// Not admitted to the newest revision yet: still on an older one.
    #[serde(default)]
    pub waiting: u32,
    /// Whose last drift check found resources changed outside CloudFormation (any state).
    #[serde(default)]
    pub drifted: u32,
}

/// Where a Baseline's rollout stands. Written before any tenant is admitted, so a restarted
/// controller resumes where it stopped.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The revision being rolled out.
    pub revision: String,
    /// The last revision that completed: what new tenants get during a canary or a halt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Progressing, Baking, Halted, RollingBack, RolledBack, Paused, Previewing or Complete.
    pub phase: String,
    /// The canary tenants, fixed when the rollout started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary: Vec<String>,
    /// Whether the canary went through (and baked) without failing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary_passed: bool,
    /// Every canary tenant whose name sorts at or before this one is admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_through: Option<String>,
    /// After the canary, every tenant whose name sorts at or before this one is admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_through: Option<String>,
    /// The stage open now: 0 is the canary.
    #[serde(default)]
    pub stage: u32,
    /// The end of the current bake (RFC 3339), while baking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<String>,
    /// The failure tolerance the rollout halted with: raising spec.rollout.failureTolerance
    /// above the failures resumes it; toggling paused does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_at_tolerance: Option<u32>,
    /// The tenants that failed this revision, with their first failing resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedTenant>,
    /// With spec.rollout.onFailure Rollback, once the revision failed: where its tenants go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,
}

/// A tenant whose stacks failed to reach a revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedTenant {
    pub name: String,
    /// Its BaselineReady message: the first failing resource and CloudFormation's reason.
    pub reason: String,
}

/// One canary tenant's preview of the newest revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewReport {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ResourceChange>,
}

/// A pool of ready accounts that Tenants with `spec.pool` take instead of waiting for
/// CreateAccount (minutes on AWS) and for the new account's role to be usable.
#[allow(clippy::duplicated_attributes)] // four integer printer columns look alike to clippy
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "silo.dev",
    version = "v1alpha1",
    kind = "AccountPool",
    plural = "accountpools",
    shortname = "pool",
    status = "AccountPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "An AccountPool keeps accounts created in advance, ready in an OU, for Tenants that name it in spec.pool: a new Tenant takes one at once instead of waiting minutes for AWS to create an account.",
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size", description = "Ready accounts to keep"),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.ready",
        description = "Accounts ready to be claimed"
    ),
    printcolumn(
        name = "Creating",
        type_ = "integer",
        json_path = ".status.creating",
        description = "Accounts AWS is creating for the pool"
    ),
    printcolumn(
        name = "Claimed",
        type_ = "integer",
        json_path = ".status.claimed",
        description = "Tenants holding an account from the pool"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the pool is (not) full"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.organization"
)]
#[x_kube(
    validation = Rule::new(ORGANIZATION_IMMUTABLE)
        .message("spec.organization cannot change: the pool's accounts belong to the organization they were created in; create a new AccountPool")
        .field_path(".organization"),
)]
#[serde(rename_all = "camelCase")]
pub struct AccountPoolSpec {
    /// The Organization (silo.dev) the pool creates its accounts in; only Tenants of the same
    /// organization take them. Empty: the default organization. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(ORGANIZATION_NAME).message(ORGANIZATION_NAME_MESSAGE))]
    pub organization: Option<String>,

    /// How many ready accounts to keep, 0 to 100. Shrinking the pool closes nothing: accounts
    /// beyond the size stay ready, tagged as the pool's.
    #[schemars(range(max = 100))]
    pub size: u32,

    /// Where the pool's accounts wait: an OU id, or a path from the root like /Tenants/Pool,
    /// within the controller's --tenant-ou-root. A Tenant moves its account to its own OU.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(
        validation = Rule::new("self.matches('^ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}$') || self.matches('^(/[^/]{1,128}){1,5}$')")
            .message("spec.organizationalUnit must be an OU id like ou-ab12-cdef3456 or a path of 1 to 5 OU names from the root like /Tenants/Pool"),
    )]
    pub organizational_unit: String,

    /// The root email of each account, with {index} replaced by the account's index in the
    /// pool (0, 1, 2, ...; an index is never used twice, since AWS never reuses an email):
    /// for example aws+pool-{index}@example.com.
    #[schemars(length(min = 6, max = 64))]
    #[x_kube(
        validation = Rule::new("self.contains('{index}')").message("spec.emailTemplate must contain {index}: every account needs its own email"),
        validation = Rule::new("self.replace('{index}', '0').matches('^[^@\\\\s]+@[^@\\\\s]+\\\\.[^@\\\\s.][^@\\\\s]*$')")
            .message("spec.emailTemplate must make an email: one local part, one '@' and a domain with a dot, like aws+pool-{index}@example.com"),
    )]
    pub email_template: String,

    /// The name of each account while it waits in the pool, with {index} replaced as in
    /// emailTemplate: at most 40 characters, printable ASCII. Defaults to the pool's name
    /// followed by -{index}. A Tenant renames the account it takes to its own account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40))]
    #[x_kube(
        validation = Rule::new("self.contains('{index}')").message("spec.nameTemplate must contain {index}"),
        validation = Rule::new("self.matches('^[ -~]+$')").message("spec.nameTemplate may contain only printable ASCII characters"),
    )]
    pub name_template: Option<String>,

    /// Tags for the pool's accounts while they wait, besides silo.dev/pool and
    /// silo.dev/pool-uid; a Tenant that takes an account replaces them with its own. Same
    /// rules as a Tenant's spec.tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 40, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(
        validation = Rule::new("self.all(k, size(k) >= 1 && size(k) <= 128)").message("spec.tags keys must be 1 to 128 characters long"),
        validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('silo.dev/'))").message("spec.tags keys must not start with 'aws:' (AWS's) or 'silo.dev/' (Silo's)"),
    )]
    pub tags: BTreeMap<String, String>,

    /// While true, the pool creates no account; Tenants still take the ready ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// A Baseline to bootstrap in each account before it is ready (TenantName is the account's
    /// name in the pool, AccountId its id), so that a Tenant taking it waits for one stack
    /// update, not for the new account's role and a stack creation. A Tenant whose own
    /// Baseline does not replace these stacks (the same stack name, in the same Region) takes
    /// an account too, and Silo deletes the stacks it does not use once its own baseline runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineRef>,
}

/// What the pool holds. Written only by the controller; each creation is recorded before its
/// CreateAccount is sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccountPoolStatus {
    /// The index the next account gets. Indexes are never reused.
    #[serde(default)]
    pub next_index: u64,
    /// Accounts ready to be claimed, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<PoolAccount>,
    /// Accounts being created, each recorded before its CreateAccount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creations: Vec<PoolCreation>,
    /// How many accounts are ready.
    #[serde(default)]
    pub ready: u32,
    /// How many accounts AWS is creating for the pool.
    #[serde(default)]
    pub creating: u32,
    /// How many Tenants hold an account they took from the pool.
    #[serde(default)]
    pub claimed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (the pool is full), Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A ready account of a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolAccount {
    pub account_id: String,
    pub index: u64,
    pub email: String,
    pub account_name: String,
}

/// An account the pool is creating.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolCreation {
    pub index: u64,
    pub email: String,
    pub account_name: String,
    /// The CreateAccount request, once AWS answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The account, once created: placed in the pool's OU (and bootstrapped with
    /// spec.baseline) before it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Where the account's bootstrap stands, while spec.baseline's stacks are being made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

/// `spec.organization` of a Tenant or AccountPool: an Organization's name.
const ORGANIZATION_NAME: &str = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
const ORGANIZATION_NAME_MESSAGE: &str = "spec.organization must be the name of an Organization: lowercase letters, digits and '-', starting and ending with a letter or digit";
/// `spec.organization` is set at creation or never, and never changes.
const ORGANIZATION_IMMUTABLE: &str = "has(self.organization) == has(oldSelf.organization) && (!has(self.organization) || self.organization == oldSelf.organization)";

/// One AWS organization Silo vends accounts in: how to reach its management account, its
/// quotas as Silo should respect them, and where tenant accounts may go.
#[allow(clippy::duplicated_attributes)] // printer columns of one type look alike to clippy
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "silo.dev",
    version = "v1alpha1",
    kind = "Organization",
    plural = "organizations",
    shortname = "org",
    status = "OrganizationStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "An Organization is one AWS organization Silo creates and adopts tenant accounts in: the management role to assume, the budgets and creation slots Silo keeps to within its quotas, where tenant accounts may go, and closure settings. Tenants and AccountPools name it in spec.organization; the controller's flags describe the default one, which Tenants without spec.organization use.",
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.members",
        description = "Accounts in the organization"
    ),
    printcolumn(
        name = "Limit",
        type_ = "integer",
        json_path = ".status.accountLimit",
        description = "The organization's account quota, when known"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "The replica acting for this organization"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether Silo reaches the management account and acts for the organization"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name != 'default'")
        .message("metadata.name cannot be default: that is the organization the controller's flags describe (its metrics say organization=\"default\"); pick another name"),
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSpec {
    /// The role in the organization's management account Silo assumes for Organizations and
    /// Account Management requests, and from which it assumes tenant roles.
    #[schemars(length(min = 20, max = 2048))]
    #[x_kube(
        validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')")
            .message("spec.managementRoleArn must be an IAM role ARN like arn:aws:iam::111122223333:role/silo-management"),
    )]
    pub management_role_arn: String,

    /// A Secret holding the external id the management role's trust policy requires, in the
    /// controller's external-id namespace (--external-id-namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<SecretKeyRef>,

    /// The Region of Silo's requests for this organization (CloudFormation stacks default to
    /// it). Default: the controller's Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2}(-[a-z]+)+-[0-9]+$')").message("spec.region must be an AWS Region like eu-west-1"))]
    pub region: Option<String>,

    /// OUs (paths like /Tenants, or ids) tenant accounts of this organization may be placed
    /// in, with everything below them. Empty: anywhere but the root.
    #[serde(default, rename = "tenantOURoots", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), extend("items" = {"type": "string", "minLength": 1, "maxLength": 1024}))]
    #[x_kube(
        validation = Rule::new("self.all(r, r.matches('^ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}$') || r.matches('^(/[^/]{1,128}){1,5}$'))")
            .message("spec.tenantOURoots entries must be OU ids like ou-ab12-cdef3456 or paths of 1 to 5 OU names from the root like /Tenants"),
    )]
    pub tenant_ou_roots: Vec<String>,

    /// The organization's account quota ("Default maximum number of accounts" in Service
    /// Quotas): AccountPool refills stop poolAccountHeadroom accounts short of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub account_limit: Option<u32>,

    /// Request budgets and creation slots; each field left out takes the controller's flag.
    #[serde(default)]
    pub budgets: OrganizationBudgets,

    /// Closing the accounts of deleted Tenants whose deletionPolicy is Close.
    #[serde(default)]
    pub closure: ClosureSpec,

    /// Alternate contacts every tenant account of this organization gets where its
    /// spec.contacts sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_contacts: Option<AlternateContacts>,
}

/// What Silo may ask of one organization's AWS quotas; each left out takes the flag's value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationBudgets {
    /// AWS Organizations requests started per second (--aws-requests-per-second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub organizations_requests_per_second: Option<u32>,
    /// AWS Organizations requests in flight at once (--aws-max-in-flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub organizations_max_in_flight: Option<u32>,
    /// STS requests started per second (--sts-requests-per-second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub sts_requests_per_second: Option<u32>,
    /// CreateAccount requests AWS runs at once (--max-concurrent-creations; AWS's quota is 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub creation_slots: Option<u32>,
}

/// Closure settings of one organization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClosureSpec {
    /// Close the accounts of deleted Tenants whose deletionPolicy is Close
    /// (--allow-account-closure). Default false: such Tenants wait, nothing is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// Close at most this many accounts in any 24 hours (--max-account-closures-per-day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_per_day: Option<u32>,
}

/// What Silo knows of one organization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStatus {
    /// Accounts in the organization, from Silo's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    /// spec.accountLimit, or the flag's, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_limit: Option<u32>,
    /// When the index last read the whole organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_refreshed_time: Option<String>,
    /// CreateAccount requests in flight, and Tenants or pools waiting for a slot.
    #[serde(default)]
    pub creations: CreationQueueStatus,
    /// Accounts closed in the last 24 hours, against spec.closure.maxPerDay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_last_day: Option<u32>,
    /// The replica acting for the organization (its Lease's holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An organization's creation queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreationQueueStatus {
    pub in_flight: u32,
    pub waiting: u32,
}

/// Every CRD Silo owns, in the order `silo crd` prints them.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![Tenant::crd(), Baseline::crd(), AccountPool::crd(), Organization::crd()]
}

/// The YAML `silo crd` prints: every CRD, as one multi-document stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
        unwrap_descriptions(&mut value);
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value)?);
    }
    Ok(out)
}

/// Doc comments are wrapped at 100 columns; `kubectl explain` wraps again. Joins wrapped
/// lines so descriptions read as paragraphs (blank lines still separate paragraphs).
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text.split("\n\n").map(|p| p.replace('\n', " ")).collect::<Vec<_>>().join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crds_match_the_generator() {
        let generated = crds_yaml().unwrap();
        let on_disk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/silo.dev.yaml"))
            .expect("crds/silo.dev.yaml is missing: run `make crds`");
        assert!(
            generated == on_disk,
            "crds/silo.dev.yaml differs from `silo crd`: run `make crds` and commit the result"
        );
    }

    #[test]
    fn deletion_policy_defaults_to_retain() {
        let spec: TenantSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    }
}
