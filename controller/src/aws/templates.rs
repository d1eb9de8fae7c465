//! The content behind a Baseline's `templateURL`, read from S3 with the controller's own
//! credentials, so that a change behind the URL is a new revision like any other.
//!
//! CloudFormation accepts only S3 URLs as TemplateURL; they come as `s3://bucket/key`, or
//! https in the virtual-hosted (`bucket.s3[.region|-region].amazonaws.com/key`) or path
//! (`s3[.region].amazonaws.com/bucket/key`) style.

use aws_config::SdkConfig;

use super::{count_request, error::AwsError};

/// Where a template lives in S3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub key: String,
}

/// Finds the bucket and key of a template URL; `None` when it is not an S3 URL. Pure.
pub fn location(url: &str) -> Option<Location> {
    let split = |rest: &str| -> Option<(String, String)> {
        let (first, key) = rest.split_once('/')?;
        (!first.is_empty() && !key.is_empty()).then(|| (first.to_string(), key.to_string()))
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = split(rest)?;
        return Some(Location { bucket, key });
    }
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let host = host.strip_suffix(".amazonaws.com")?;
    let is_s3 = |label: &str| label == "s3" || label.starts_with("s3.") || label.starts_with("s3-");
    if is_s3(host) {
        // Path style: s3.region.amazonaws.com/bucket/key
        let (bucket, key) = split(path)?;
        return Some(Location { bucket, key });
    }
    // Virtual-hosted style: bucket.s3.region.amazonaws.com/key (buckets may contain dots).
    let at = host.find(".s3")?;
    let (bucket, service) = (&host[..at], &host[at + 1..]);
    (is_s3(service) && !path.is_empty()).then(|| Location { bucket: bucket.to_string(), key: path.to_string() })
}

/// Reads templates from S3.
#[derive(Clone)]
pub struct Templates {
    s3: aws_sdk_s3::Client,
}

impl Templates {
    pub fn new(config: &SdkConfig) -> Self {
        // An endpoint of its own (a simulator, or a VPC endpoint) serves buckets by path.
        let path_style = config.endpoint_url().is_some();
        let s3 = aws_sdk_s3::config::Builder::from(config).force_path_style(path_style).build();
        Self { s3: aws_sdk_s3::Client::from_conf(s3) }
    }

    /// The template's bytes (GetObject).
    pub async fn read(&self, location: &Location) -> Result<Vec<u8>, AwsError> {
        // Templates are the Baseline controller's, which the default organization's leader runs.
        count_request("s3", "GetObject", crate::metrics::DEFAULT_ORGANIZATION);
        let out = self
            .s3
            .get_object()
            .bucket(&location.bucket)
            .key(&location.key)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("GetObject", err))?;
        let body = out.body.collect().await.map_err(|err| AwsError::unexpected_answer("GetObject", err.to_string()))?;
        Ok(body.into_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_urls_name_a_bucket_and_a_key() {
        let at = |bucket: &str, key: &str| Some(Location { bucket: bucket.into(), key: key.into() });
        let table = [
            ("s3://templates/base/v1.yaml", at("templates", "base/v1.yaml")),
            ("https://templates.s3.amazonaws.com/base.yaml", at("templates", "base.yaml")),
            ("https://my.templates.s3.eu-west-1.amazonaws.com/a/b.json", at("my.templates", "a/b.json")),
            ("https://templates.s3-us-west-2.amazonaws.com/base.yaml", at("templates", "base.yaml")),
            ("https://s3.amazonaws.com/templates/base.yaml", at("templates", "base.yaml")),
            ("https://s3.us-east-2.amazonaws.com/templates/base.yaml?versionId=3", at("templates", "base.yaml")),
            ("https://example.com/base.yaml", None),
            ("https://templates.s3.amazonaws.com/", None),
            ("s3://templates", None),
        ];
        for (url, expected) in table {
            assert_eq!(location(url), expected, "{url}");
        }
    }
}
