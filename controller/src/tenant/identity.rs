//! Step 1: the account's name and email, fixed before the first AWS call.
//!
//! AWS has no idempotency token for CreateAccount, so these two values are what lets Silo
//! recognise its own earlier work after a crash. They are computed deterministically and
//! recorded in the status; once recorded, the status wins over a changed `--email-template`.

use kube::ResourceExt;

use crate::{api::Tenant, conditions::StepOutcome};

/// How soon a tenant stalled by its own spec is looked at again (a spec change is seen at
/// once; this covers a changed --email-template).
const SPEC_RECHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// The account name and email a tenant's account has, or will have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub account_name: String,
    pub email: String,
}

/// Computes the tenant's identity, or the `Stalled` outcome that explains why it cannot.
/// Pure: reads only the tenant and the email template.
pub fn plan(tenant: &Tenant, email_template: &str) -> Result<Identity, StepOutcome> {
    let name = tenant.name_any();
    let recorded = tenant.status.as_ref();
    // Once recorded (the intent, before CreateAccount), the recorded name is what a request
    // sent before a crash carries; a changed spec.accountName is a rename (the settings step).
    let account_name = recorded
        .and_then(|s| s.account_name.clone())
        .or_else(|| tenant.spec.account_name.clone())
        .unwrap_or_else(|| name.clone());

    let recorded_email = recorded.and_then(|s| s.email.clone());
    let email = match (&tenant.spec.email, &recorded_email) {
        // Once recorded, the email may already have been sent with CreateAccount (a crash can
        // come before the request id is written), so it cannot change: a second email would
        // mean a second account. Silo forgets a recorded email only when AWS refused it.
        (Some(spec), Some(recorded)) if spec != recorded => {
            return Err(StepOutcome::stalled(
                "EmailMismatch",
                format!(
                    "spec.email is {spec}, but the account was already requested with {recorded}; \
                     AWS cannot change an account's email here: set spec.email back to {recorded}"
                ),
                SPEC_RECHECK,
            ));
        }
        (Some(spec), _) => spec.clone(),
        (None, Some(recorded)) => recorded.clone(),
        (None, None) => email_template.replace("{tenant}", &name),
    };
    if let Err(problem) = check_email(&email) {
        return Err(StepOutcome::stalled(
            "InvalidEmail",
            format!("The email {email:?} made from the controller's --email-template {problem}; set spec.email"),
            SPEC_RECHECK,
        ));
    }
    Ok(Identity { account_name, email })
}

/// AWS's rules for a root email, the same as the Tenant schema's: 6 to 64 characters,
/// exactly one '@', a domain with a dot, no white space.
fn check_email(email: &str) -> Result<(), &'static str> {
    if !(6..=64).contains(&email.len()) {
        return Err("is not 6 to 64 characters long");
    }
    if email.matches('@').count() != 1 || email.starts_with('@') || email.ends_with('@') {
        return Err("does not have exactly one '@' between a local part and a domain");
    }
    let domain = email.rsplit('@').next().unwrap_or_default();
    if !domain.trim_end_matches('.').contains('.') || domain.starts_with('.') {
        return Err("has a domain without a dot");
    }
    if email.chars().any(char::is_whitespace) {
        return Err("contains white space");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TenantSpec, TenantStatus};

    fn tenant(name: &str) -> Tenant {
        Tenant::new(name, TenantSpec::default())
    }

    #[test]
    fn defaults_come_from_the_name_and_the_template() {
        let id = plan(&tenant("acme"), "aws+{tenant}@example.com").unwrap();
        assert_eq!(id, Identity { account_name: "acme".into(), email: "aws+acme@example.com".into() });
    }

    #[test]
    fn the_spec_wins_over_defaults() {
        let mut t = tenant("acme");
        t.spec.account_name = Some("Acme Corp".into());
        t.spec.email = Some("root@acme.example".into());
        let id = plan(&t, "aws+{tenant}@example.com").unwrap();
        assert_eq!(id.account_name, "Acme Corp");
        assert_eq!(id.email, "root@acme.example");
    }

    #[test]
    fn a_recorded_email_survives_a_template_change() {
        let mut t = tenant("acme");
        t.status = Some(TenantStatus { email: Some("old+acme@example.com".into()), ..Default::default() });
        assert_eq!(plan(&t, "new+{tenant}@example.com").unwrap().email, "old+acme@example.com");
    }

    #[test]
    fn a_changed_email_after_creation_stalls() {
        let mut t = tenant("acme");
        t.spec.email = Some("new@acme.example".into());
        t.status = Some(TenantStatus {
            email: Some("old@acme.example".into()),
            create_account_request_id: Some("car-1".into()),
            ..Default::default()
        });
        assert_eq!(plan(&t, "x+{tenant}@example.com").unwrap_err().reason(), "EmailMismatch");
    }

    #[test]
    fn a_recorded_email_cannot_change_even_before_a_request_id_is_known() {
        let mut t = tenant("acme");
        t.spec.email = Some("new@acme.example".into());
        t.status = Some(TenantStatus { email: Some("aws+acme@example.com".into()), ..Default::default() });
        assert_eq!(plan(&t, "aws+{tenant}@example.com").unwrap_err().reason(), "EmailMismatch");
    }

    #[test]
    fn a_template_that_makes_a_bad_email_stalls() {
        let long = "a".repeat(60);
        let err = plan(&tenant(&long), "aws+{tenant}@example.com").unwrap_err();
        assert_eq!(err.reason(), "InvalidEmail");
        assert_eq!(plan(&tenant("acme"), "{tenant}").unwrap_err().reason(), "InvalidEmail");
        assert_eq!(plan(&tenant("acme"), "{tenant}@localhost").unwrap_err().reason(), "InvalidEmail");
    }
}
