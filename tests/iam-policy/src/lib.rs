//! Evaluates Silo's IAM policies (`docs/iam-policy*.json`) against requests shaped like
//! the calls Silo makes, without AWS: the simulator does not evaluate `aws:ResourceTag` or
//! `aws:TagKeys` conditions, so the policy's conditions are tested here.
//!
//! The evaluation itself is the `iam-rs` crate's. This harness adds what it needs around it:
//! - **A subset guard** ([`PolicyDocument::load`]): a policy may use only the actions, condition
//!   operators, condition keys and policy variables listed here, each as AWS documents it (the
//!   Service Authorization Reference for AWS Organizations, AWS Account Management and AWS STS;
//!   the IAM User Guide for
//!   variables). Anything else fails the test instead of being evaluated by guesswork: a
//!   misspelt key, an operator whose semantics `tests/conformance.rs` does not pin, a key used
//!   with an action that does not support it, a variable where AWS does not substitute one.
//! - **Requests with several resources** ([`decide`]): AWS authorizes every resource a call
//!   names (MoveAccount names the account, its source parent and its destination); each is
//!   evaluated with its own `aws:ResourceTag/*`, and the call is allowed only if all are.
//! - **Actions without resource-level permissions** (CreateAccount, DescribeOrganization, ...):
//!   only statements whose `Resource` includes `"*"` apply to them, as AWS documents.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use iam_rs::{
    Arn, Context, ContextValue, EvaluationOptions, IAMPolicy, IAMRequest, PolicyEvaluator, Principal, PrincipalId,
};
use serde_json::Value;

/// The organization's management account: the account Silo's credentials belong to.
pub const MANAGEMENT_ACCOUNT: &str = "111111111111";
/// The organization's id.
pub const ORGANIZATION: &str = "o-exampleorg1";
/// The tag that proves an account is a Tenant's.
pub const UID_TAG: &str = "silo.dev/tenant-uid";
/// The tag carrying the Tenant's name.
pub const NAME_TAG: &str = "silo.dev/tenant";

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether an action takes resource ARNs (it has resource types in the Service Authorization
/// Reference) or only `"*"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Resources {
    Arns,
    Star,
}

/// The actions a policy may name, whether each takes resource ARNs, and the condition keys AWS
/// documents for it: the action's own keys plus those of its resource types (`aws:ResourceTag/`
/// for Organizations accounts, OUs, roots and policies). A key ending in `/` stands for every
/// key with that prefix. Source: Service Authorization Reference, "Actions, resources, and
/// condition keys for AWS Organizations" and "... for AWS Security Token Service".
const ACTIONS: &[(&str, Resources, &[&str])] = &[
    ("account:DeleteAlternateContact", Resources::Arns, ACCOUNT_CONTACT_KEYS),
    ("account:GetAlternateContact", Resources::Arns, ACCOUNT_CONTACT_KEYS),
    ("account:PutAccountName", Resources::Arns, ACCOUNT_KEYS),
    ("account:PutAlternateContact", Resources::Arns, ACCOUNT_CONTACT_KEYS),
    ("organizations:AttachPolicy", Resources::Arns, &["aws:ResourceTag/", "organizations:PolicyType"]),
    ("organizations:CloseAccount", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:CreateAccount", Resources::Star, &["aws:RequestTag/", "aws:TagKeys"]),
    (
        "organizations:CreateOrganizationalUnit",
        Resources::Arns,
        &["aws:RequestTag/", "aws:TagKeys", "aws:ResourceTag/"],
    ),
    ("organizations:DescribeAccount", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:DescribeCreateAccountStatus", Resources::Star, &[]),
    ("organizations:DescribeOrganization", Resources::Star, &[]),
    ("organizations:DescribeOrganizationalUnit", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:DetachPolicy", Resources::Arns, &["aws:ResourceTag/", "organizations:PolicyType"]),
    ("organizations:ListAWSServiceAccessForOrganization", Resources::Star, &[]),
    ("organizations:ListAccountsForParent", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:ListCreateAccountStatus", Resources::Star, &[]),
    ("organizations:ListOrganizationalUnitsForParent", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:ListParents", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:ListPolicies", Resources::Star, &[]),
    ("organizations:ListPoliciesForTarget", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:ListRoots", Resources::Star, &[]),
    ("organizations:ListTagsForResource", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:MoveAccount", Resources::Arns, &["aws:ResourceTag/"]),
    ("organizations:TagResource", Resources::Arns, &["aws:RequestTag/", "aws:TagKeys", "aws:ResourceTag/"]),
    ("organizations:UntagResource", Resources::Arns, &["aws:TagKeys", "aws:ResourceTag/"]),
    ("sts:AssumeRole", Resources::Arns, &[]),
    ("sts:TagSession", Resources::Arns, &[]),
];

/// The condition keys of an account resource of AWS Account Management (Service Authorization
/// Reference, "Actions, resources, and condition keys for AWS Account Management"): the
/// account's organization path and tags.
const ACCOUNT_KEYS: &[&str] = &["account:AccountResourceOrgPaths", "account:AccountResourceOrgTags/"];
/// The same, plus the kind of alternate contact.
const ACCOUNT_CONTACT_KEYS: &[&str] =
    &["account:AccountResourceOrgPaths", "account:AccountResourceOrgTags/", "account:AlternateContactTypes"];

/// The condition operators the harness lets a policy use: each one's semantics, as AWS
/// documents them, is pinned by a test in `tests/conformance.rs`.
const OPERATORS: &[&str] = &[
    "Null",
    "StringEquals",
    "StringLike",
    "ForAllValues:StringNotEquals",
    "ForAllValues:StringNotLike",
    "ForAnyValue:StringEquals",
];

/// Multi-valued condition keys: the only ones set operators (`ForAllValues:`, `ForAnyValue:`)
/// may be used with, and that plain operators may not be used with.
const MULTI_VALUED_KEYS: &[&str] = &["aws:TagKeys"];

/// The policy variables a policy may use; every request sets them.
const VARIABLES: &[&str] = &["${aws:PrincipalAccount}"];

/// One policy document, checked to stay inside the subset the harness evaluates.
#[derive(Clone, Debug)]
pub struct PolicyDocument {
    pub name: String,
    pub raw: Value,
}

impl PolicyDocument {
    /// Reads a policy from a path relative to the repository root; panics, listing every
    /// problem, when it leaves the subset.
    pub fn load(relative: &str) -> Self {
        let path = repo_root().join(relative);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        let raw: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{relative} is not JSON: {err}"));
        Self::new(relative, raw).unwrap_or_else(|problems| panic!("{relative}:\n  {}", problems.join("\n  ")))
    }

    /// Checks a policy document against the subset.
    pub fn new(name: &str, raw: Value) -> Result<Self, Vec<String>> {
        let problems = subset_problems(&raw);
        if problems.is_empty() { Ok(Self { name: name.to_string(), raw }) } else { Err(problems) }
    }

    /// The statements, as JSON.
    pub fn statements(&self) -> &[Value] {
        self.raw["Statement"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// The statement with this Sid; panics when there is none.
    pub fn statement(&self, sid: &str) -> &Value {
        self.statements()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("{} has no statement {sid}", self.name))
    }

    /// A copy with the statement `sid` changed by `edit` (for testing a variant docs/install.md
    /// describes). The copy is checked against the subset again.
    pub fn with_statement(&self, sid: &str, edit: impl FnOnce(&mut Value)) -> Self {
        let mut raw = self.raw.clone();
        let statement = raw["Statement"]
            .as_array_mut()
            .and_then(|statements| statements.iter_mut().find(|s| s["Sid"] == sid))
            .unwrap_or_else(|| panic!("{} has no statement {sid}", self.name));
        edit(statement);
        Self::new(&format!("{} (edited)", self.name), raw).unwrap_or_else(|problems| panic!("{}", problems.join("\n")))
    }

    /// The document with only the statements that apply to an action without resource-level
    /// permissions: those whose Resource includes `"*"`.
    fn for_star_resource(&self) -> IAMPolicy {
        let mut raw = self.raw.clone();
        if let Some(statements) = raw["Statement"].as_array_mut() {
            statements.retain(|s| strings(&s["Resource"]).contains(&"*"));
        }
        parse(&self.name, &raw)
    }

    fn policy(&self) -> IAMPolicy {
        parse(&self.name, &self.raw)
    }
}

fn parse(name: &str, raw: &Value) -> IAMPolicy {
    IAMPolicy::from_json(&raw.to_string()).unwrap_or_else(|err| panic!("iam-rs cannot read {name}: {err}"))
}

/// A string or an array of strings, as policy elements are written.
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn documented_keys(action: &str) -> Option<(Resources, &'static [&'static str])> {
    ACTIONS.iter().find(|(name, ..)| *name == action).map(|(_, resources, keys)| (*resources, *keys))
}

fn key_documented(key: &str, documented: &[&str]) -> bool {
    documented.iter().any(|d| if d.ends_with('/') { key.len() > d.len() && key.starts_with(d) } else { key == *d })
}

/// Everything in a policy that the harness does not evaluate, or that AWS would not read the
/// way the harness would. Empty when the policy stays inside the subset.
fn subset_problems(raw: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut say = |problem: String| problems.push(problem);
    if raw["Version"] != "2012-10-17" {
        say("Version must be 2012-10-17 (policy variables need it)".into());
    }
    let Some(statements) = raw["Statement"].as_array() else {
        say("Statement must be an array".into());
        return problems;
    };
    let mut sids = BTreeSet::new();
    for statement in statements {
        let Some(object) = statement.as_object() else {
            say("every statement must be an object".into());
            continue;
        };
        let sid = statement["Sid"].as_str().unwrap_or_default().to_string();
        if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric()) || !sids.insert(sid.clone()) {
            say(format!("statement {sid:?}: every statement needs a unique alphanumeric Sid"));
        }
        for element in object.keys() {
            if !["Sid", "Effect", "Action", "Resource", "Condition"].contains(&element.as_str()) {
                say(format!("{sid}: element {element} is outside the subset (no NotAction, NotResource, Principal)"));
            }
        }
        if !matches!(statement["Effect"].as_str(), Some("Allow" | "Deny")) {
            say(format!("{sid}: Effect must be Allow or Deny"));
        }
        let actions = strings(&statement["Action"]);
        if actions.is_empty() {
            say(format!("{sid}: Action must name at least one action"));
        }
        let mut documented = Vec::new();
        for action in &actions {
            match documented_keys(action) {
                Some(entry) => documented.push((*action, entry)),
                None => say(format!("{sid}: action {action} is not in the harness's table (no wildcards)")),
            }
        }
        let resources = strings(&statement["Resource"]);
        if resources.is_empty() {
            say(format!("{sid}: Resource must name at least one resource"));
        }
        if documented.iter().any(|(_, (kind, _))| *kind == Resources::Star) && resources != ["*"] {
            say(format!("{sid}: an action without resource-level permissions needs Resource \"*\" alone"));
        }
        for resource in &resources {
            resource_problems(&sid, resource, &mut say);
        }
        if let Some(condition) = statement.get("Condition") {
            condition_problems(&sid, condition, &documented, &mut say);
        }
    }
    problems
}

fn resource_problems(sid: &str, resource: &str, say: &mut impl FnMut(String)) {
    if *resource == *"*" {
        return;
    }
    let services = ["arn:aws:organizations::", "arn:aws:account::", "arn:aws:iam::"];
    if !services.iter().any(|prefix| resource.starts_with(prefix)) {
        say(format!("{sid}: resource {resource} is neither \"*\" nor an Organizations, Account or IAM ARN"));
    }
    // IAM substitutes variables only in the resource part of an ARN, after the fifth colon.
    let before_resource_part = resource.match_indices(':').nth(4).map_or(resource.len(), |(at, _)| at);
    if resource[..before_resource_part].contains("${") {
        say(format!(
            "{sid}: {resource} puts a policy variable before the fifth colon, where IAM does not substitute it"
        ));
    }
    let mut rest = &resource[before_resource_part..];
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').map_or(rest.len(), |end| start + end + 1);
        if !VARIABLES.contains(&&rest[start..end]) {
            say(format!("{sid}: policy variable {} is not one the harness sets", &rest[start..end]));
        }
        rest = &rest[end..];
    }
}

fn condition_problems(
    sid: &str,
    condition: &Value,
    documented: &[(&str, (Resources, &[&str]))],
    say: &mut impl FnMut(String),
) {
    let Some(operators) = condition.as_object() else {
        say(format!("{sid}: Condition must be an object"));
        return;
    };
    for (operator, keys) in operators {
        if !OPERATORS.contains(&operator.as_str()) {
            say(format!("{sid}: condition operator {operator} is not one the harness evaluates"));
            continue;
        }
        let set_operator = operator.starts_with("ForAllValues:") || operator.starts_with("ForAnyValue:");
        let Some(keys) = keys.as_object() else {
            say(format!("{sid}: {operator} must map keys to values"));
            continue;
        };
        for (key, value) in keys {
            for (action, (_, action_keys)) in documented {
                if !key_documented(key, action_keys) {
                    say(format!("{sid}: AWS documents no condition key {key} for {action}"));
                }
            }
            let multi_valued = MULTI_VALUED_KEYS.contains(&key.as_str());
            if operator != "Null" && set_operator != multi_valued {
                say(format!("{sid}: {operator} on {key}: set operators go with multi-valued keys only, and only they"));
            }
            let values = strings(value);
            if values.is_empty() || values.len() != value.as_array().map_or(1, Vec::len) {
                say(format!("{sid}: {operator} {key} must have string values"));
            }
            if operator == "Null" && !matches!(value.as_str(), Some("true" | "false")) {
                say(format!("{sid}: Null {key} must be \"true\" or \"false\""));
            }
            if values.iter().any(|v| v.contains("${")) {
                say(format!("{sid}: {operator} {key}: no policy variables in conditions"));
            }
        }
    }
}

/// A resource a call names, with the tags it carries now (`aws:ResourceTag/*`).
#[derive(Clone, Debug)]
pub struct Resource {
    /// `None` for an action without resource-level permissions.
    pub arn: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Resource {
    /// A member account, untagged.
    pub fn account(id: &str) -> Self {
        Self {
            arn: Some(format!("arn:aws:organizations::{MANAGEMENT_ACCOUNT}:account/{ORGANIZATION}/{id}")),
            tags: BTreeMap::new(),
        }
    }

    /// A member account as AWS Account Management names it (`AccountId` of its calls), with
    /// its tags in the organization (`account:AccountResourceOrgTags/*`).
    pub fn account_api(id: &str) -> Self {
        Self {
            arn: Some(format!("arn:aws:account::{MANAGEMENT_ACCOUNT}:account/{ORGANIZATION}/{id}")),
            tags: BTreeMap::new(),
        }
    }

    /// The organization's management account itself.
    pub fn management_account() -> Self {
        Self::account(MANAGEMENT_ACCOUNT)
    }

    pub fn root() -> Self {
        Self::other(&format!("root/{ORGANIZATION}/r-ex1a"))
    }

    pub fn ou(id: &str) -> Self {
        Self::other(&format!("ou/{ORGANIZATION}/{id}"))
    }

    pub fn service_control_policy() -> Self {
        Self::other(&format!("policy/{ORGANIZATION}/service_control_policy/p-examplep1"))
    }

    /// A role in an account.
    pub fn role(account: &str, name: &str) -> Self {
        Self { arn: Some(format!("arn:aws:iam::{account}:role/{name}")), tags: BTreeMap::new() }
    }

    /// No resource: an action without resource-level permissions.
    pub fn none() -> Self {
        Self { arn: None, tags: BTreeMap::new() }
    }

    fn other(resource: &str) -> Self {
        Self { arn: Some(format!("arn:aws:organizations::{MANAGEMENT_ACCOUNT}:{resource}")), tags: BTreeMap::new() }
    }

    /// The same resource carrying a tag.
    pub fn tagged(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// One call as IAM sees it.
#[derive(Clone, Debug)]
pub struct Call {
    pub action: String,
    pub resources: Vec<Resource>,
    /// Tags the call sets (TagResource, CreateAccount): `aws:RequestTag/*` and `aws:TagKeys`.
    pub request_tags: BTreeMap<String, String>,
    /// Keys the call removes (UntagResource): `aws:TagKeys`.
    pub removed_keys: Vec<String>,
}

impl Call {
    pub fn new(action: &str, resources: Vec<Resource>) -> Self {
        Self { action: action.into(), resources, request_tags: BTreeMap::new(), removed_keys: Vec::new() }
    }

    /// TagResource of these tags on a resource.
    pub fn tag(resource: Resource, tags: &[(&str, &str)]) -> Self {
        Self::new("organizations:TagResource", vec![resource]).setting(tags)
    }

    /// UntagResource of these keys from a resource.
    pub fn untag(resource: Resource, keys: &[&str]) -> Self {
        let mut call = Self::new("organizations:UntagResource", vec![resource]);
        call.removed_keys = keys.iter().map(|k| k.to_string()).collect();
        call
    }

    /// The call sets these tags.
    pub fn setting(mut self, tags: &[(&str, &str)]) -> Self {
        self.request_tags.extend(tags.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The request context shared by every resource of the call.
    fn context(&self) -> Context {
        let mut context = Context::new();
        context.insert("aws:PrincipalAccount".into(), ContextValue::String(MANAGEMENT_ACCOUNT.into()));
        for (key, value) in &self.request_tags {
            context.insert(format!("aws:RequestTag/{key}"), ContextValue::String(value.clone()));
        }
        let tag_keys: Vec<String> =
            self.request_tags.keys().cloned().chain(self.removed_keys.iter().cloned()).collect();
        if !tag_keys.is_empty() {
            context.insert("aws:TagKeys".into(), ContextValue::StringList(tag_keys));
        }
        context
    }
}

/// What IAM answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No statement allows it.
    DeniedImplicitly,
    /// A Deny statement matches: no other policy can allow it.
    DeniedExplicitly,
}

/// Evaluates a call against identity policies attached together, following AWS's evaluation
/// logic: an explicit Deny for any resource denies the call; otherwise the call is allowed only
/// if every resource it names is allowed.
pub fn decide(policies: &[&PolicyDocument], call: &Call) -> Decision {
    assert!(
        !call.resources.is_empty(),
        "{}: a call names at least one resource (Resource::none() for \"*\")",
        call.action
    );
    let principal = Principal::Aws(PrincipalId::String(format!(
        "arn:aws:sts::{MANAGEMENT_ACCOUNT}:assumed-role/silo/silo-controller"
    )));
    let mut all_allowed = true;
    for resource in &call.resources {
        let mut context = call.context();
        // Account Management names an account's tags with its own (multi-valued) key.
        let account_api = resource.arn.as_deref().is_some_and(|arn| arn.starts_with("arn:aws:account:"));
        for (key, value) in &resource.tags {
            if account_api {
                let values = ContextValue::StringList(vec![value.clone()]);
                context.insert(format!("account:AccountResourceOrgTags/{key}"), values);
            } else {
                context.insert(format!("aws:ResourceTag/{key}"), ContextValue::String(value.clone()));
            }
        }
        let (evaluator, arn) = match &resource.arn {
            Some(arn) => (
                PolicyEvaluator::with_policies(policies.iter().map(|p| p.policy()).collect()),
                Arn::parse(arn).unwrap_or_else(|err| panic!("{arn}: {err}")),
            ),
            None => {
                let options = EvaluationOptions { ignore_resource_constraints: true, ..EvaluationOptions::default() };
                let star = Arn {
                    partition: "aws".into(),
                    service: call.action.split(':').next().unwrap_or_default().into(),
                    region: String::new(),
                    account_id: String::new(),
                    resource: "*".into(),
                };
                (
                    PolicyEvaluator::with_policies(policies.iter().map(|p| p.for_star_resource()).collect())
                        .with_options(options),
                    star,
                )
            }
        };
        let request = IAMRequest::new_with_context(principal.clone(), call.action.clone(), arn, context);
        let result = evaluator.evaluate(&request).unwrap_or_else(|err| panic!("{}: iam-rs failed: {err}", call.action));
        match result.decision {
            iam_rs::Decision::Deny => return Decision::DeniedExplicitly,
            iam_rs::Decision::Allow => {}
            iam_rs::Decision::NotApplicable => all_allowed = false,
        }
    }
    if all_allowed { Decision::Allowed } else { Decision::DeniedImplicitly }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(statement: Value) -> Vec<String> {
        PolicyDocument::new("test", json!({"Version": "2012-10-17", "Statement": [statement]}))
            .err()
            .unwrap_or_default()
    }

    fn refused(statement: Value, because: &str) {
        let problems = problems(statement);
        assert!(
            problems.iter().any(|p| p.contains(because)),
            "expected a problem containing {because:?}, got {problems:?}"
        );
    }

    #[test]
    fn the_guard_accepts_a_statement_inside_the_subset() {
        let ok = json!({"Sid": "Ok", "Effect": "Allow", "Action": "organizations:CloseAccount",
            "Resource": "arn:aws:organizations::*:account/o-*/*",
            "Condition": {"Null": {"aws:ResourceTag/silo.dev/tenant-uid": "false"}}});
        assert_eq!(problems(ok), Vec::<String>::new());
    }

    #[test]
    fn the_guard_refuses_what_it_does_not_evaluate() {
        let account = "arn:aws:organizations::*:account/o-*/*";
        refused(
            json!({"Sid": "A", "Effect": "Allow", "Action": "organizations:Tag*", "Resource": account}),
            "not in the harness's table",
        );
        refused(
            json!({"Sid": "A", "Effect": "Allow", "Action": "organizations:CloseAccount", "Resource": account,
                "Condition": {"StringEqualsIgnoreCase": {"aws:ResourceTag/x": "y"}}}),
            "not one the harness evaluates",
        );
        refused(
            json!({"Sid": "A", "Effect": "Allow", "Action": "organizations:CloseAccount", "Resource": account,
                "Condition": {"Null": {"aws:resourcetag/silo.dev/tenant-uid": "false"}}}),
            "documents no condition key",
        );
        refused(
            json!({"Sid": "A", "Effect": "Allow", "Action": "organizations:CloseAccount", "Resource": account,
                "Condition": {"Null": {"aws:RequestTag/silo.dev/tenant-uid": "false"}}}),
            "documents no condition key aws:RequestTag/silo.dev/tenant-uid for organizations:CloseAccount",
        );
        refused(
            json!({"Sid": "A", "Effect": "Allow", "Action": "organizations:TagResource", "Resource": account,
                "Condition": {"StringLike": {"aws:TagKeys": "silo.dev/*"}}}),
            "set operators go with multi-valued keys only",
        );
        refused(
            json!({"Sid": "A", "Effect": "Allow", "Action": "organizations:TagResource", "Resource": account,
                "Condition": {"ForAnyValue:StringEquals": {"aws:ResourceTag/x": "y"}}}),
            "set operators go with multi-valued keys only",
        );
        refused(
            json!({"Sid": "A", "Effect": "Deny", "Action": "organizations:TagResource",
                "Resource": "arn:aws:organizations::${aws:PrincipalAccount}:account/o-*/*"}),
            "before the fifth colon",
        );
        refused(
            json!({"Sid": "A", "Effect": "Deny", "Action": "organizations:TagResource",
                "Resource": "arn:aws:organizations::*:account/o-*/${aws:username}"}),
            "not one the harness sets",
        );
        refused(
            json!({"Sid": "A", "Effect": "Allow", "Action": "organizations:CreateAccount", "Resource": account}),
            "needs Resource \"*\" alone",
        );
        refused(
            json!({"Sid": "A", "Effect": "Allow", "NotAction": "organizations:CreateAccount", "Resource": "*"}),
            "outside the subset",
        );
    }
}
