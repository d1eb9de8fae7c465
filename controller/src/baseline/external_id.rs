//! A Baseline's external id (`spec.externalId`): the `key` of a Secret in the external-id
//! namespace, the only Secrets Silo can read. Read when a session into an account is opened,
//! by a Tenant's bootstrap and by a pool's.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// The `key` of Secret `name` in `namespace`; `None` when either is missing.
pub async fn read(client: &Client, namespace: &str, name: &str, key: &str) -> Result<Option<String>, kube::Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|data| data.get(key).cloned())
        .and_then(|bytes| String::from_utf8(bytes.0).ok()))
}
