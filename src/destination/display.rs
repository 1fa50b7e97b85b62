//! What a person is shown of a destination: secrets masked (only the last
//! two characters of a key, token, password or cookie), and the exact
//! request a sync would send for a sample page. The CLI, the REST API and
//! the connection test all use these, so they show the same thing.

use serde::Serialize;

use super::cohort_sync::{self, APPKEY_HEADER};
use super::config::DestinationConfig;
use super::segment_sync;
use super::Destination;
use crate::store::{Value, ValueRef};

impl DestinationConfig {
    /// A copy safe to show: secret header and parameter values and the
    /// Basic password masked.
    pub fn masked(mut self) -> DestinationConfig {
        for (k, v) in self.headers.iter_mut().chain(self.params.iter_mut()) {
            if is_secret_header(k) {
                *v = mask(v);
            }
        }
        if let Some(b) = &mut self.basic {
            b.password = mask(&b.password);
        }
        self
    }
}

impl DestinationConfig {
    /// Puts back the secrets of `stored` that this configuration carries
    /// only as shown ([`DestinationConfig::masked`]): a client that reads a
    /// destination, changes one field and writes it back (the console's
    /// form, a script doing GET then PUT) must not replace a key by its mask.
    pub fn keep_masked_secrets(&mut self, stored: &DestinationConfig) {
        fn restore(pairs: &mut [(String, String)], stored: &[(String, String)]) {
            for (k, v) in pairs.iter_mut().filter(|(k, _)| is_secret_header(k)) {
                if let Some((_, old)) = stored.iter().find(|(sk, sv)| sk == k && mask(sv) == *v) {
                    v.clone_from(old);
                }
            }
        }
        restore(&mut self.headers, &stored.headers);
        restore(&mut self.params, &stored.params);
        if let (Some(b), Some(old)) = (&mut self.basic, &stored.basic) {
            if b.user == old.user && b.password == mask(&old.password) {
                b.password.clone_from(&old.password);
            }
        }
    }
}

/// Masks a secret for display: never more than its last two characters.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 4 {
        "****".into()
    } else {
        let tail: String = secret.chars().skip(n - 2).collect();
        format!("****{tail}")
    }
}

/// Whether a header's value should be masked when shown.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // A workspace id, not a key (it is the Basic auth user, shown anyway).
    if n == APPKEY_HEADER.to_ascii_lowercase() {
        return false;
    }
    [
        "authorization",
        "key",
        "token",
        "secret",
        "password",
        "cookie",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// The destination's URL with secret query parameters masked.
pub fn masked_url(d: &Destination) -> String {
    let mut url = d.url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if is_secret_header(&k) {
                mask(&v)
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A sample page: `adds` users added, `removes` removed (segment_sync format); for
/// Cohort Sync, one `add_members` request with `adds` sample uids (a cohort
/// request carries one action), always to the cohort
/// `.segsync-connection-test`.
pub fn sample_body(d: &Destination, attribute: &str, adds: usize, removes: usize) -> Vec<u8> {
    let enc: Vec<(String, Vec<u8>)> = (0..adds + removes)
        .map(|i| {
            let mut b = Vec::new();
            Value::Str(format!("sample-{attribute}-{}", i + 1)).encode(0, &mut b);
            (format!("sample-user-{}", i + 1), b)
        })
        .collect();
    let users: Vec<(&[u8], ValueRef<'_>)> = enc
        .iter()
        .filter_map(|(id, b)| ValueRef::decode(b).ok().map(|v| (id.as_bytes(), v)))
        .collect();
    let mut out = Vec::new();
    if let Some(c) = d.cohort() {
        // Never the configured cohort: a test must not move a real cohort's
        // ordering timestamp or touch its members.
        let test = cohort_sync::CohortSettings {
            name: None,
            id: Some("segsync-connection-test".into()),
            description: Some("segsync connection test".into()),
            ..c.clone()
        };
        let f = cohort_sync::CohortSyncFormat::new(
            &test,
            "segsync-connection-test",
            0,
            chrono::Utc::now().timestamp_millis(),
        );
        f.render(
            cohort_sync::MemberAction::Add,
            users[..adds].iter().map(|(_, v)| *v),
            &mut out,
        );
        return out;
    }
    let ids = segment_sync::Ids {
        sync_id: "sample-sync".into(),
        sync_name: "sample-segment".into(),
        execution_id: "sample-sync-1".into(),
        integration_id: format!("{}-sample", d.id),
    };
    let f = segment_sync::SegmentSyncFormat::new(d, attribute, &ids, 1);
    f.render(
        1,
        users[..adds].iter().copied(),
        users[adds..].iter().copied(),
        &mut out,
    );
    out
}

/// The exact request a sync would send for a sample page, secrets masked.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Always `POST`.
    pub method: &'static str,
    /// The URL with its query parameters (secret ones masked).
    pub url: String,
    /// Every header, secret values masked.
    pub headers: Vec<(String, String)>,
    /// The body: two users added and one removed (one action of two users
    /// for Cohort Sync).
    pub body: serde_json::Value,
}

/// The request preview of `d` for a sync of `attribute`.
pub fn preview(d: &Destination, attribute: &str) -> Preview {
    request(
        d,
        "{sync}-{execution}-{page}",
        &sample_body(d, attribute, 2, 1),
    )
}

/// One request exactly as it goes out to `d` (secrets masked): for the
/// preview, and for the requests of a planned execution.
pub fn request(d: &Destination, idempotency_key: &str, body: &[u8]) -> Preview {
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Idempotency-Key".to_string(), idempotency_key.to_string()),
    ];
    for (k, v) in &d.headers {
        let v = v.to_str().unwrap_or("<binary>");
        let v = if is_secret_header(k.as_str()) {
            mask(v)
        } else {
            v.to_string()
        };
        headers.push((k.to_string(), v));
    }
    if let Some(b) = &d.basic {
        headers.push((
            "Authorization".into(),
            format!("Basic base64({}:{})", b.user, mask(&b.password)),
        ));
    }
    Preview {
        method: "POST",
        url: masked_url(d),
        headers,
        // Our own renderer's output is JSON; should it ever not be, the
        // preview shows the bytes as a string rather than failing.
        body: serde_json::from_slice(body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::config::BasicAuth;

    #[test]
    fn a_masked_secret_written_back_keeps_the_stored_one() {
        let mut stored = DestinationConfig::new("d", "https://api.example.com/x");
        stored.headers = vec![("X-Api-Key".into(), "key-123456".into())];
        stored.params = vec![("token".into(), "tok-abcdef".into())];
        stored.basic = Some(BasicAuth {
            user: "u".into(),
            password: "hunter22".into(),
        });
        let mut edited = stored.clone().masked();
        edited.page_size = Some(500);
        edited.keep_masked_secrets(&stored);
        assert_eq!(edited.headers, stored.headers);
        assert_eq!(edited.params, stored.params);
        assert_eq!(edited.basic, stored.basic);
        // A new value, or a renamed header, is taken as given.
        let mut changed = stored.clone().masked();
        changed.headers = vec![("X-Api-Key".into(), "new-key-99".into())];
        changed.params = vec![("other_token".into(), "****ef".into())];
        changed.keep_masked_secrets(&stored);
        assert_eq!(changed.headers[0].1, "new-key-99");
        assert_eq!(changed.params[0].1, "****ef");
    }

    #[test]
    fn secrets_are_masked_in_the_config_url_and_preview() {
        assert_eq!(mask("supersecret"), "****et");
        assert_eq!(mask("abc"), "****");
        assert!(is_secret_header("X-Api-Key"));
        assert!(!is_secret_header("MOE-DESTINATION-PARTNER"));
        let mut c = DestinationConfig::new("d", "https://api.example.com/x");
        c.params = vec![
            ("api_key".into(), "abcdefgh".into()),
            ("a".into(), "1".into()),
        ];
        c.headers = vec![("X-Token".into(), "tok-123456".into())];
        let d = c.validate(1).unwrap();
        assert_eq!(
            masked_url(&d),
            "https://api.example.com/x?api_key=****gh&a=1"
        );
        let p = preview(&d, "uid");
        assert!(
            p.headers.contains(&("x-token".into(), "****56".into())),
            "{:?}",
            p.headers
        );
        assert_eq!(
            p.body["data"]["add_users"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            p.body["data"]["remove_users"].as_array().map(Vec::len),
            Some(1)
        );
        let shown = c.masked();
        assert_eq!(shown.params[0].1, "****gh");
    }
}
