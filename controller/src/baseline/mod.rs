//! Baselines: what a tenant account gets bootstrapped with, decided without touching AWS.
//!
//! - [`Deployed`]: what one revision of a Baseline deploys, and its revision hash.
//! - [`tenant_revision`]: what one tenant's stacks run (the revision and its parameters).
//! - [`resolve_parameters`]: the parameters one tenant's stack runs with, or why there are
//!   none (a parameter the template does not declare).
//! - [`stack`]: the CloudFormation stack state machine.
//! - [`rollout`]: how a new revision reaches the tenants (stages, a sliding window, halts), pure.
//! - [`revisions`]: the revisions as ControllerRevisions in Silo's namespace.
//! - [`external_id`]: a Baseline's external id, read from its Secret.
//! - [`recount`]: which Baselines to count again, from the Tenant watch.
//! - [`controller`]: the Baseline controller, which records revisions, runs rollouts and
//!   publishes counts.

pub mod cli;
pub mod controller;
pub mod external_id;
pub mod recount;
pub mod revisions;
pub mod rollout;
pub mod stack;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{BaselineSpec, Capability};

/// Parameters Silo fills in when a template declares them.
pub const TENANT_NAME_PARAMETER: &str = "TenantName";
pub const ACCOUNT_ID_PARAMETER: &str = "AccountId";

/// What one revision of a Baseline deploys: everything that decides the stacks' content.
/// A change to any of it is a new revision, rolled out; how Silo enters the account
/// (roleName, externalId, sessionPolicy) is not part of it and applies at once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Deployed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, rename = "templateURL", skip_serializing_if = "Option::is_none")]
    pub template_url: Option<String>,
    /// A hash of the content behind `template_url` when the revision was recorded: a change
    /// behind the URL is a new revision too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_content: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub regions: Vec<String>,
    pub stack_name: String,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    pub termination_protection: bool,
}

impl Deployed {
    /// What `spec` deploys; `template_content`: the hash of the content behind its
    /// templateURL, when it has one.
    pub fn of(spec: &BaselineSpec, template_content: Option<String>) -> Self {
        Self {
            template: spec.template.clone(),
            template_url: spec.template_url.clone(),
            template_content: spec.template_url.as_ref().and(template_content),
            parameters: spec.parameters.clone(),
            regions: spec.regions.clone(),
            stack_name: spec.stack_name.clone(),
            capabilities: spec.capabilities.clone(),
            termination_protection: spec.termination_protection,
        }
    }

    /// The revision: a hash of the content. For an inline template it is the same hash Silo
    /// always used, so upgrading Silo updates no stack. Pure.
    pub fn revision(&self) -> String {
        let mut content = serde_json::json!({
            "template": self.template,
            "templateURL": self.template_url,
            "parameters": self.parameters,
            "regions": self.regions,
            "stackName": self.stack_name,
            "capabilities": self.capabilities,
            "terminationProtection": self.termination_protection,
        });
        if let Some(hash) = &self.template_content {
            content["templateContent"] = hash.clone().into();
        }
        short_hash(&content.to_string())
    }
}

/// The revision of what `spec` deploys with an inline template (see [`Deployed::revision`]).
pub fn revision(spec: &BaselineSpec) -> String {
    Deployed::of(spec, None).revision()
}

/// A hash of a template's content (what `Deployed::template_content` records).
pub fn content_hash(content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What one tenant's stacks must run: the Baseline revision plus the tenant's parameters.
pub fn tenant_revision(baseline_revision: &str, parameters: &BTreeMap<String, String>) -> String {
    let content = serde_json::json!({"baseline": baseline_revision, "parameters": parameters});
    short_hash(&content.to_string())
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The parameter names an inline template declares; `None` when it cannot be read (a
/// template given by URL, or one CloudFormation will reject anyway).
pub fn declared_parameters(template: &str) -> Option<BTreeSet<String>> {
    // YAML is a superset of JSON; CloudFormation's short-form tags (!Ref, !Sub) parse as
    // tagged values.
    let doc: serde_yaml::Value = serde_yaml::from_str(template).ok()?;
    let parameters = doc.get("Parameters");
    match parameters {
        None => Some(BTreeSet::new()),
        Some(serde_yaml::Value::Mapping(map)) => {
            Some(map.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
        }
        Some(_) => None,
    }
}

/// Why a tenant's parameters cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndeclaredParameters(pub Vec<String>);

/// The parameters of one tenant's stack: the Baseline's defaults, overridden by the
/// tenant's, plus `TenantName` and `AccountId` when the template declares them. Names the
/// template does not declare are refused, so nothing is applied with a typo. Pure.
pub fn resolve_parameters(
    spec: &Deployed,
    overrides: &BTreeMap<String, String>,
    tenant_name: &str,
    account_id: &str,
) -> Result<BTreeMap<String, String>, UndeclaredParameters> {
    let mut parameters = spec.parameters.clone();
    parameters.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let declared = spec.template.as_deref().and_then(declared_parameters);
    if let Some(declared) = &declared {
        let unknown: Vec<String> = parameters.keys().filter(|k| !declared.contains(*k)).cloned().collect();
        if !unknown.is_empty() {
            return Err(UndeclaredParameters(unknown));
        }
        for (name, value) in [(TENANT_NAME_PARAMETER, tenant_name), (ACCOUNT_ID_PARAMETER, account_id)] {
            if declared.contains(name) {
                parameters.entry(name.to_string()).or_insert_with(|| value.to_string());
            }
        }
    }
    Ok(parameters)
}

/// The regions a Baseline (or one of its revisions) lists, or the controller's region when
/// it lists none.
pub fn regions(listed: &[String], default_region: &str) -> Vec<String> {
    if listed.is_empty() { vec![default_region.to_string()] } else { listed.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "
Parameters:
  TenantName: {Type: String}
  AccountId: {Type: String}
  Env: {Type: String, Default: dev}
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub '${TenantName}-events'
";

    fn baseline_spec() -> BaselineSpec {
        BaselineSpec {
            template: Some(TEMPLATE.into()),
            parameters: BTreeMap::from([("Env".into(), "dev".into())]),
            stack_name: "silo-baseline".into(),
            ..Default::default()
        }
    }

    fn spec() -> Deployed {
        Deployed::of(&baseline_spec(), None)
    }

    #[test]
    fn known_parameters_are_filled_and_overrides_win() {
        let overrides = BTreeMap::from([("Env".to_string(), "prod".to_string())]);
        let params = resolve_parameters(&spec(), &overrides, "acme", "111122223333").unwrap();
        assert_eq!(params["Env"], "prod");
        assert_eq!(params["TenantName"], "acme");
        assert_eq!(params["AccountId"], "111122223333");
    }

    #[test]
    fn a_parameter_the_template_does_not_declare_is_refused() {
        let overrides = BTreeMap::from([("Evn".to_string(), "prod".to_string())]);
        let err = resolve_parameters(&spec(), &overrides, "acme", "111122223333").unwrap_err();
        assert_eq!(err, UndeclaredParameters(vec!["Evn".into()]));
    }

    #[test]
    fn json_templates_declare_parameters_too() {
        let json = r#"{"Parameters": {"A": {"Type": "String"}}, "Resources": {}}"#;
        assert_eq!(declared_parameters(json), Some(BTreeSet::from(["A".to_string()])));
    }

    #[test]
    fn revisions_change_with_content_and_parameters_only() {
        let a = baseline_spec();
        let mut b = baseline_spec();
        b.role_name = "OtherRole".into();
        b.session_policy = Some("{}".into());
        b.rollout.paused = true;
        assert_eq!(revision(&a), revision(&b), "how Silo enters the account, and the rollout, do not change the stack");
        b.regions = vec!["eu-west-1".into()];
        assert_ne!(revision(&a), revision(&b));
        let p1 = BTreeMap::from([("Env".to_string(), "dev".to_string())]);
        let p2 = BTreeMap::from([("Env".to_string(), "prod".to_string())]);
        assert_ne!(tenant_revision("r1", &p1), tenant_revision("r1", &p2));
        assert_eq!(tenant_revision("r1", &p1), tenant_revision("r1", &p1.clone()));
    }

    #[test]
    fn an_inline_revision_keeps_the_hash_silo_always_used() {
        // The hash Silo recorded on every stack before revisions were stored (a fixed value:
        // if this changes, upgrading Silo would update every tenant's stack).
        assert_eq!(revision(&baseline_spec()), "23fa597d0fed");
    }

    #[test]
    fn a_change_behind_a_template_url_is_a_new_revision() {
        let spec = BaselineSpec {
            template_url: Some("https://templates.s3.amazonaws.com/base.yaml".into()),
            stack_name: "silo-baseline".into(),
            ..Default::default()
        };
        let before = Deployed::of(&spec, Some(content_hash(b"Resources: {}")));
        let after = Deployed::of(&spec, Some(content_hash(b"Resources: {A: {}}")));
        assert_ne!(before.revision(), after.revision());
        assert_eq!(Deployed::of(&baseline_spec(), Some("ignored".into())).template_content, None);
    }
}
