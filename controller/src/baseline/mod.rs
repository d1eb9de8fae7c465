//! Baselines: what a tenant account gets bootstrapped with, decided without touching AWS.
//!
//! - [`revision`] and [`tenant_revision`]: content hashes that say when a stack must change.
//! - [`resolve_parameters`]: the parameters one tenant's stack runs with, or why there are
//!   none (a parameter the template does not declare).
//! - [`stack`]: the CloudFormation stack state machine.
//! - [`controller`]: the Baseline controller, which publishes revisions and tenant counts.

pub mod controller;
pub mod stack;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::api::BaselineSpec;

/// Parameters Silo fills in when a template declares them.
pub const TENANT_NAME_PARAMETER: &str = "TenantName";
pub const ACCOUNT_ID_PARAMETER: &str = "AccountId";

/// The Baseline's revision: a hash of what decides the stacks' content (template, default
/// parameters, regions, stack name, capabilities, termination protection). Pure.
pub fn revision(spec: &BaselineSpec) -> String {
    let content = serde_json::json!({
        "template": spec.template,
        "templateURL": spec.template_url,
        "parameters": spec.parameters,
        "regions": spec.regions,
        "stackName": spec.stack_name,
        "capabilities": spec.capabilities,
        "terminationProtection": spec.termination_protection,
    });
    short_hash(&content.to_string())
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
    spec: &BaselineSpec,
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

/// The regions of a Baseline, or the controller's region when it lists none.
pub fn regions(spec: &BaselineSpec, default_region: &str) -> Vec<String> {
    if spec.regions.is_empty() { vec![default_region.to_string()] } else { spec.regions.clone() }
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

    fn spec() -> BaselineSpec {
        BaselineSpec {
            template: Some(TEMPLATE.into()),
            parameters: BTreeMap::from([("Env".into(), "dev".into())]),
            stack_name: "silo-baseline".into(),
            ..Default::default()
        }
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
        let a = spec();
        let mut b = spec();
        b.role_name = "OtherRole".into();
        assert_eq!(revision(&a), revision(&b), "the role does not change the stack");
        b.regions = vec!["eu-west-1".into()];
        assert_ne!(revision(&a), revision(&b));
        let p1 = BTreeMap::from([("Env".to_string(), "dev".to_string())]);
        let p2 = BTreeMap::from([("Env".to_string(), "prod".to_string())]);
        assert_ne!(tenant_revision("r1", &p1), tenant_revision("r1", &p2));
        assert_eq!(tenant_revision("r1", &p1), tenant_revision("r1", &p1.clone()));
    }
}
