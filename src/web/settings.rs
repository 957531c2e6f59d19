//! What the web client is told by `GET /api/v1/client-config`: how people sign in (local
//! development tokens, or Microsoft Entra ID through MSAL.js) and the call's timing rules.
//! Read once from the environment with the rest of [`crate::config::Config`].

use std::collections::HashMap;

use serde::Serialize;

use crate::config::AuthConfig;

/// How the web client signs people in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum AuthMode {
    /// Development tokens opened as `/app/#token=<jwt>` (`suroga token --url`).
    Local,
    /// Microsoft Entra ID: MSAL.js redirect sign-in for `client_id` at `authority`, asking for
    /// `scopes` (the API's access token).
    Entra { client_id: String, authority: String, scopes: Vec<String> },
}

/// The web client's settings. `Default` is the local development setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    pub auth: AuthMode,
    /// `WEB_END_WARNING_MINUTES` (5): how long before the booked end the call warns.
    pub end_warning_minutes: u32,
    /// `WEB_EXTEND_MINUTES` (15): how much the host's "extend" button adds.
    pub extend_minutes: u32,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self { auth: AuthMode::Local, end_warning_minutes: 5, extend_minutes: 15 }
    }
}

/// A web setting that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WebSettingsError(pub String);

/// The sign-in authority for an Entra issuer: `https://login.microsoftonline.com/<tenant>/v2.0`
/// and `https://sts.windows.net/<tenant>/` both give `https://login.microsoftonline.com/<tenant>`.
pub fn authority_for_issuer(issuer: &str) -> Option<String> {
    let u = url::Url::parse(issuer).ok()?;
    let tenant = u.path_segments()?.find(|s| !s.is_empty())?.to_string();
    match u.host_str()? {
        "login.microsoftonline.com" | "sts.windows.net" => Some(format!("https://login.microsoftonline.com/{tenant}")),
        _ => None,
    }
}

impl WebSettings {
    /// Reads `AUTH_CLIENT_ID`, `AUTH_AUTHORITY`, `AUTH_SCOPES`, `WEB_END_WARNING_MINUTES` and
    /// `WEB_EXTEND_MINUTES`. Entra sign-in is on when `AUTH_CLIENT_ID` is set; it needs
    /// `AUTH_ISSUER` (the API must accept the tokens the browser gets). The authority defaults to
    /// the issuer's tenant, the scope to `<first AUTH_AUDIENCE>/.default`.
    pub fn from_map(env: &HashMap<String, String>, auth: &AuthConfig) -> Result<Self, WebSettingsError> {
        let get = |k: &str| env.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let minutes = |k: &str, default: u32| -> Result<u32, WebSettingsError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.parse::<u32>().ok().filter(|m| (1..=240).contains(m)).ok_or_else(|| {
                    WebSettingsError(format!("{k} must be a whole number of minutes from 1 to 240, got {v:?}"))
                }),
            }
        };
        let mode = match get("AUTH_CLIENT_ID") {
            None => AuthMode::Local,
            Some(client_id) => {
                let issuer = auth.issuer.as_deref().ok_or_else(|| {
                    WebSettingsError("AUTH_CLIENT_ID (Entra sign-in in the web client) needs AUTH_ISSUER".into())
                })?;
                let authority = match get("AUTH_AUTHORITY") {
                    Some(a) if a.starts_with("https://") => a.trim_end_matches('/').to_string(),
                    Some(a) => return Err(WebSettingsError(format!("AUTH_AUTHORITY must be an https URL, got {a:?}"))),
                    None => authority_for_issuer(issuer).ok_or_else(|| {
                        WebSettingsError("AUTH_AUTHORITY is needed: it cannot be derived from AUTH_ISSUER".into())
                    })?,
                };
                let scopes: Vec<String> = match get("AUTH_SCOPES") {
                    Some(s) => s.split([' ', ',']).filter(|x| !x.is_empty()).map(String::from).collect(),
                    None => {
                        let aud =
                            auth.audience.as_deref().unwrap_or_default().split(',').next().unwrap_or_default().trim();
                        let base = if aud.contains("://") { aud.to_string() } else { format!("api://{aud}") };
                        vec![format!("{}/.default", base.trim_end_matches('/'))]
                    }
                };
                AuthMode::Entra { client_id, authority, scopes }
            }
        };
        Ok(Self {
            auth: mode,
            end_warning_minutes: minutes("WEB_END_WARNING_MINUTES", 5)?,
            extend_minutes: minutes("WEB_EXTEND_MINUTES", 15)?,
        })
    }

    /// The Entra authority, when that sign-in is on (the CSP lets the page talk to it).
    pub fn authority(&self) -> Option<&str> {
        match &self.auth {
            AuthMode::Entra { authority, .. } => Some(authority),
            AuthMode::Local => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(issuer: Option<&str>, audience: Option<&str>) -> AuthConfig {
        AuthConfig { issuer: issuer.map(String::from), audience: audience.map(String::from), ..AuthConfig::default() }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn local_by_default() {
        assert_eq!(WebSettings::from_map(&HashMap::new(), &auth(None, None)).unwrap(), WebSettings::default());
    }

    #[test]
    fn entra_derives_authority_and_scope() {
        let a = auth(Some("https://login.microsoftonline.com/tid-1/v2.0"), Some("api://suroga-api,other"));
        let w = WebSettings::from_map(&env(&[("AUTH_CLIENT_ID", "spa-id")]), &a).unwrap();
        assert_eq!(
            w.auth,
            AuthMode::Entra {
                client_id: "spa-id".into(),
                authority: "https://login.microsoftonline.com/tid-1".into(),
                scopes: vec!["api://suroga-api/.default".into()],
            }
        );
        let v1 = auth(Some("https://sts.windows.net/tid-2/"), Some("6f1c-guid"));
        let w = WebSettings::from_map(&env(&[("AUTH_CLIENT_ID", "spa"), ("AUTH_SCOPES", "api://x/use other")]), &v1)
            .unwrap();
        assert_eq!(w.authority(), Some("https://login.microsoftonline.com/tid-2"));
        assert!(matches!(w.auth, AuthMode::Entra { ref scopes, .. } if scopes == &["api://x/use", "other"]));
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let none = auth(None, None);
        let e = WebSettings::from_map(&env(&[("AUTH_CLIENT_ID", "spa")]), &none).unwrap_err();
        assert!(e.0.contains("AUTH_ISSUER"), "{e}");
        let other = auth(Some("https://issuer.example.org/"), Some("aud"));
        let e = WebSettings::from_map(&env(&[("AUTH_CLIENT_ID", "spa")]), &other).unwrap_err();
        assert!(e.0.contains("AUTH_AUTHORITY"), "{e}");
        let e = WebSettings::from_map(&env(&[("WEB_EXTEND_MINUTES", "0")]), &none).unwrap_err();
        assert!(e.0.contains("WEB_EXTEND_MINUTES"), "{e}");
    }
}
