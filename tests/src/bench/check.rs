//! `silo-bench --check FILE`: the benchmark as a test of counts, never of times.
//!
//! A small run inside `make test` (`make bench-check`) reads each scenario's results and holds
//! them against the ceilings in FILE (`tests/bench/ceilings.json`): AWS requests per tenant by
//! operation, refused CreateAccount requests, accounts created. A change that makes Silo send
//! more requests than the ceilings allow fails CI; a machine that is slow does not, because
//! nothing here is a duration.
//!
//! The file names, per scenario, results fields (a `/`-separated path into the scenario's
//! `results`) with `at_most` or `equals` a number, and `requests_per_tenant_at_most` for every
//! `service:Operation` the simulator counted. A scenario's `requests_by_operation` may only
//! hold operations the file lists: a new kind of request needs a line there, and a reason.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde_json::Value;

/// Everything in `results` that breaks a ceiling of `ceilings` (one scenario's section). Pure.
pub fn violations(scenario: &str, ceilings: &Value, results: &Value) -> Vec<String> {
    let mut found = vec![];
    let tenants = results.get("tenants").and_then(Value::as_f64);
    for (rule, check) in [("at_most", Check::AtMost), ("equals", Check::Equals)] {
        let Some(rules) = ceilings.get(rule).and_then(Value::as_object) else { continue };
        for (path, limit) in rules {
            let Some(limit) = limit.as_f64() else {
                found.push(format!("{scenario}: {rule} {path}: the ceiling is not a number"));
                continue;
            };
            match lookup(results, path).and_then(Value::as_f64) {
                None => found.push(format!("{scenario}: the results have no number at {path}")),
                Some(value) if !check.holds(value, limit) => {
                    found.push(format!("{scenario}: {path} is {value}, {} {limit}", check.wanted()))
                }
                Some(_) => {}
            }
        }
    }
    if let Some(per_tenant) = ceilings.get("requests_per_tenant_at_most").and_then(Value::as_object) {
        let Some(tenants) = tenants.filter(|n| *n > 0.0) else {
            found.push(format!("{scenario}: the results say no number of tenants"));
            return found;
        };
        let counted: BTreeMap<String, f64> = results
            .get("requests_by_operation")
            .and_then(Value::as_object)
            .map(|ops| ops.iter().filter_map(|(op, n)| Some((op.clone(), n.as_f64()?))).collect())
            .unwrap_or_default();
        for (operation, count) in &counted {
            match per_tenant.get(operation).and_then(Value::as_f64) {
                None => found.push(format!(
                    "{scenario}: {operation} was sent {count} times and has no ceiling: add one, with the reason"
                )),
                Some(limit) if count / tenants > limit => found.push(format!(
                    "{scenario}: {operation} is {:.3} requests per tenant, at most {limit} wanted",
                    count / tenants
                )),
                Some(_) => {}
            }
        }
    }
    found
}

#[derive(Clone, Copy)]
enum Check {
    AtMost,
    Equals,
}

impl Check {
    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Check::AtMost => value <= limit,
            Check::Equals => value == limit,
        }
    }

    fn wanted(self) -> &'static str {
        match self {
            Check::AtMost => "at most",
            Check::Equals => "exactly",
        }
    }
}

fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('/').try_fold(value, |at, key| at.get(key))
}

/// Checks every scenario `ceilings_file` names against `<out>/<scenario>.json`; every
/// scenario it names must have run.
pub fn check(ceilings_file: &std::path::Path, out: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(ceilings_file).with_context(|| format!("read {}", ceilings_file.display()))?;
    let ceilings: Value = serde_json::from_str(&text).with_context(|| format!("parse {}", ceilings_file.display()))?;
    let scenarios = ceilings.get("scenarios").and_then(Value::as_object).context("no \"scenarios\" in the ceilings")?;
    let mut found = vec![];
    for (scenario, ceilings) in scenarios {
        let path = out.join(format!("{scenario}.json"));
        let doc: Value = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?,
            Err(_) => {
                found
                    .push(format!("{scenario}: not run ({} is missing): select it in BENCH_SCENARIOS", path.display()));
                continue;
            }
        };
        found.extend(violations(scenario, ceilings, &doc["results"]));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ceilings() -> Value {
        json!({
            "at_most": {"create_account_refused": 0, "nested/value": 2.5},
            "equals": {"accounts_created": 10},
            "requests_per_tenant_at_most": {"organizations:CreateAccount": 1.0, "organizations:ListRoots": 0.2}
        })
    }

    fn results(create_accounts: u64, listings: u64, refused: u64, created: u64) -> Value {
        json!({
            "tenants": 10,
            "create_account_refused": refused,
            "accounts_created": created,
            "nested": {"value": 2},
            "requests_by_operation": {
                "organizations:CreateAccount": create_accounts,
                "organizations:ListRoots": listings,
            }
        })
    }

    #[test]
    fn a_run_within_the_ceilings_passes() {
        assert_eq!(violations("onboard", &ceilings(), &results(10, 2, 0, 10)), Vec::<String>::new());
    }

    #[test]
    fn each_kind_of_excess_is_reported() {
        let cases = [
            ("twice the CreateAccount requests", results(20, 2, 0, 10), "organizations:CreateAccount is 2.000"),
            ("a refused CreateAccount", results(10, 2, 1, 10), "create_account_refused is 1, at most 0"),
            ("a duplicate account", results(10, 2, 0, 11), "accounts_created is 11, exactly 10"),
            ("more listings", results(10, 3, 0, 10), "organizations:ListRoots is 0.300"),
        ];
        for (case, results, message) in cases {
            let found = violations("onboard", &ceilings(), &results);
            assert!(found.len() == 1 && found[0].contains(message), "{case}: {found:?}");
        }
    }

    #[test]
    fn an_operation_without_a_ceiling_or_a_missing_field_fails() {
        let mut unknown = results(10, 2, 0, 10);
        unknown["requests_by_operation"]["organizations:MoveAccount"] = json!(10);
        let found = violations("onboard", &ceilings(), &unknown);
        assert!(found.iter().any(|f| f.contains("MoveAccount was sent 10 times and has no ceiling")), "{found:?}");

        let mut missing = results(10, 2, 0, 10);
        missing.as_object_mut().unwrap().remove("accounts_created");
        let found = violations("onboard", &ceilings(), &missing);
        assert!(found.iter().any(|f| f.contains("no number at accounts_created")), "{found:?}");
    }
}
