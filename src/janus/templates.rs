//! Janus configuration from the templates in `infra/janus/` (embedded in the binary), shared by
//! local hosts and the Azure VMs' cloud-init.
//!
//! Templates hold `{{name}}` placeholders. [`render`] fills one template and fails on a
//! placeholder it has no value for, on an unterminated `{{`, and on a value Janus's config
//! syntax could misread (quotes, backslashes, newlines). [`render_all`] renders every file from
//! one [`JanusConfigParams`] and also fails when a parameter is used by no template, so the
//! templates and the parameters cannot drift apart silently.

use std::collections::{BTreeMap, BTreeSet};

/// The template files, by the file name Janus expects, with their text.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("janus.jcfg", include_str!("../../infra/janus/janus.jcfg")),
    ("janus.transport.http.jcfg", include_str!("../../infra/janus/janus.transport.http.jcfg")),
    ("janus.transport.websockets.jcfg", include_str!("../../infra/janus/janus.transport.websockets.jcfg")),
    ("janus.plugin.videoroom.jcfg", include_str!("../../infra/janus/janus.plugin.videoroom.jcfg")),
    ("janus.eventhandler.sampleevh.jcfg", include_str!("../../infra/janus/janus.eventhandler.sampleevh.jcfg")),
];

/// Why a template could not be rendered. Never contains a value (values may be secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{file}: placeholder {{{{{name}}}}} has no value")]
    Missing { file: String, name: String },
    #[error("{file}: unterminated placeholder")]
    Unterminated { file: String },
    #[error("parameter {name} is used by no template")]
    Unused { name: String },
    #[error(
        "parameter {name} holds a character Janus's configuration syntax cannot take (quote, backslash, newline or braces)"
    )]
    UnsafeValue { name: String },
}

/// Fills `template` (named `file` in errors) from `values`.
pub fn render(file: &str, template: &str, values: &BTreeMap<&str, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Unterminated { file: file.into() })?;
        let name = after[..end].trim();
        let value = values.get(name).ok_or_else(|| TemplateError::Missing { file: file.into(), name: name.into() })?;
        if value.contains(['"', '\\', '\n', '\r', '{', '}']) {
            return Err(TemplateError::UnsafeValue { name: name.into() });
        }
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Everything the Janus templates need. Secrets are plain strings here because they are
/// written into Janus's files; keep this value out of logs.
#[derive(Clone)]
pub struct JanusConfigParams {
    /// Folder holding the `.jcfg` files (`janus -F`).
    pub configs_folder: String,
    /// Folder holding `plugins/ transports/ events/ loggers/`.
    pub modules_folder: String,
    /// Janus `interface`: the address used for media (the public IP on a VM).
    pub interface: String,
    pub server_name: String,
    pub api_secret: String,
    pub admin_secret: String,
    pub token_secret: String,
    /// VideoRoom `admin_key`.
    pub admin_key: String,
    /// `min-max` RTP ports.
    pub rtp_port_range: String,
    pub http_ip: String,
    pub http_port: u16,
    /// Janus ACL: comma-separated address prefixes allowed to use the HTTP API.
    pub http_acl: String,
    pub admin_ip: String,
    pub admin_port: u16,
    pub admin_acl: String,
    pub ws_ip: String,
    pub ws_port: u16,
    pub ws_acl: String,
    /// Whether the sample event handler posts events to `events_backend`.
    pub events_enabled: bool,
    /// The service's events route (`POST <base>/api/v1/janus/events`).
    pub events_backend: String,
    /// The event handler's basic-auth password (user `janus`).
    pub events_secret: String,
}

impl JanusConfigParams {
    fn values(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("configs_folder", self.configs_folder.clone()),
            ("modules_folder", self.modules_folder.clone()),
            ("interface", self.interface.clone()),
            ("server_name", self.server_name.clone()),
            ("api_secret", self.api_secret.clone()),
            ("admin_secret", self.admin_secret.clone()),
            ("token_secret", self.token_secret.clone()),
            ("admin_key", self.admin_key.clone()),
            ("rtp_port_range", self.rtp_port_range.clone()),
            ("http_ip", self.http_ip.clone()),
            ("http_port", self.http_port.to_string()),
            ("http_acl", self.http_acl.clone()),
            ("admin_ip", self.admin_ip.clone()),
            ("admin_port", self.admin_port.to_string()),
            ("admin_acl", self.admin_acl.clone()),
            ("ws_ip", self.ws_ip.clone()),
            ("ws_port", self.ws_port.to_string()),
            ("ws_acl", self.ws_acl.clone()),
            ("events_enabled", self.events_enabled.to_string()),
            ("events_backend", self.events_backend.clone()),
            ("events_secret", self.events_secret.clone()),
        ])
    }
}

/// Renders every template: `(file name, text)` in [`TEMPLATES`] order.
pub fn render_all(params: &JanusConfigParams) -> Result<Vec<(&'static str, String)>, TemplateError> {
    let values = params.values();
    let mut used = BTreeSet::new();
    let mut files = Vec::with_capacity(TEMPLATES.len());
    for (file, template) in TEMPLATES {
        for name in placeholders(template) {
            used.insert(name);
        }
        files.push((*file, render(file, template, &values)?));
    }
    if let Some(name) = values.keys().find(|k| !used.contains(**k)) {
        return Err(TemplateError::Unused { name: name.to_string() });
    }
    Ok(files)
}

fn placeholders(template: &str) -> Vec<&str> {
    let mut names = vec![];
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        names.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> JanusConfigParams {
        JanusConfigParams {
            configs_folder: "/srv/janus".into(),
            modules_folder: "/srv/janus".into(),
            interface: "10.0.0.4".into(),
            server_name: "host-1".into(),
            api_secret: "api".into(),
            admin_secret: "adm".into(),
            token_secret: "tok".into(),
            admin_key: "key".into(),
            rtp_port_range: "20000-40000".into(),
            http_ip: "0.0.0.0".into(),
            http_port: 8088,
            http_acl: "10.,127.".into(),
            admin_ip: "127.0.0.1".into(),
            admin_port: 7088,
            admin_acl: "127.".into(),
            ws_ip: "0.0.0.0".into(),
            ws_port: 8188,
            ws_acl: "0.".into(),
            events_enabled: false,
            events_backend: "http://127.0.0.1:9/events".into(),
            events_secret: "evs".into(),
        }
    }

    #[test]
    fn every_template_renders_without_leftover_placeholders() {
        let files = render_all(&params()).unwrap();
        assert_eq!(files.len(), 5);
        for (name, text) in &files {
            assert!(!text.contains("{{"), "{name} still has a placeholder");
        }
        let http = &files.iter().find(|(n, _)| *n == "janus.transport.http.jcfg").unwrap().1;
        assert!(http.contains("port = 8088"));
        assert!(http.contains("acl = \"10.,127.\""));
    }

    #[test]
    fn a_placeholder_without_value_fails() {
        let e = render("f", "a = {{nope}}", &BTreeMap::new()).unwrap_err();
        assert_eq!(e, TemplateError::Missing { file: "f".into(), name: "nope".into() });
    }

    #[test]
    fn an_unterminated_placeholder_fails() {
        assert!(matches!(render("f", "a = {{x", &BTreeMap::new()), Err(TemplateError::Unterminated { .. })));
    }

    #[test]
    fn a_value_with_a_quote_fails_without_showing_it() {
        let mut p = params();
        p.api_secret = "se\"cret".into();
        let e = render_all(&p).unwrap_err();
        assert_eq!(e, TemplateError::UnsafeValue { name: "api_secret".into() });
        assert!(!e.to_string().contains("se\"cret"));
    }
}
