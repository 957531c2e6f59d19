//! Offline checks of the Azure deployment files (`infra/`) and of the procedure in
//! `docs/deploy.md`: what can be checked without the Bicep compiler or Azure. Most read the files
//! as text; they prove the files agree with the app (template placeholders, container names and
//! partition key, settings the app needs, the roles), with each other (parameters, outputs,
//! tokens) and with the documented commands, not that Azure accepts them. Real tools run where
//! they exist offline: `sh -n`, `python3` (the bootstrap), Debian 12's Caddy (the Caddyfile), the
//! `suroga functions package` CLI (the publish folder).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest, Sha256};
use suroga::config::{Config, CosmosCredentialKind, FleetKind, FleetSettings, StoreKind};
use suroga::janus::templates::TEMPLATES;
use suroga::store::cosmos::PARTITION_KEY_PATH;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn main_bicep() -> String {
    read("infra/main.bicep")
}

fn vm_bicep() -> String {
    read("infra/modules/janus-vm.bicep")
}

/// `{{name}}` placeholders in a template.
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("unterminated placeholder");
        out.insert(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

/// Names `x` of every quoted `'{{x}}'` on a Bicep line (a replace chain's search strings).
fn quoted_placeholders(line: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = line;
    while let Some(start) = rest.find("'{{") {
        let after = &rest[start + 3..];
        let end = after.find("}}'").expect("unterminated quoted placeholder");
        out.insert(after[..end].to_string());
        rest = &after[end + 3..];
    }
    out
}

/// Tokens like `__KEY_VAULT_URI__` / `@@JANUS_API_SECRET@@` (upper-case words joined by single
/// underscores, between two `delim`s).
fn tokens(text: &str, delim: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = text[i..].find(delim) {
        let start = i + found + delim.len();
        let body: String =
            text[start..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        // The body may have swallowed the closing underscores of `__X__`.
        let name = body.trim_end_matches('_');
        let close = start + name.len();
        if !name.is_empty() && !name.contains("__") && text[close..].starts_with(delim) {
            out.insert(name.to_string());
            i = close + delim.len();
        } else {
            i = start;
        }
    }
    out
}

/// The one line of `bicep` that contains `needle`.
fn line_with<'a>(bicep: &'a str, needle: &str) -> &'a str {
    let lines: Vec<&str> = bicep.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "expected exactly one line with {needle:?}, found {}", lines.len());
    lines[0]
}

/// The bracketed body that starts on the first line beginning with `header` (a `resource`,
/// `var` or `module` declaration), brackets counted outside strings and comments.
fn block<'a>(bicep: &'a str, header: &str) -> &'a str {
    let start = bicep
        .lines()
        .scan(0usize, |pos, l| {
            let here = *pos;
            *pos += l.len() + 1;
            Some((here, l))
        })
        .find(|(_, l)| l.starts_with(header))
        .unwrap_or_else(|| panic!("no declaration starting with {header:?}"))
        .0;
    let text = &bicep[start..];
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut opened) = (0i32, false, false);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                i += 1;
            } else if c == b'\'' {
                in_string = false;
            }
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'\'' {
            in_string = true;
        } else if c == b'{' || c == b'[' || c == b'(' {
            depth += 1;
            opened = true;
        } else if c == b'}' || c == b']' || c == b')' {
            depth -= 1;
            if opened && depth == 0 {
                return &text[..=i];
            }
        }
        i += 1;
    }
    panic!("unbalanced block after {header:?}")
}

/// The quoted value of `var <name> = '<value>'`.
fn var_literal(bicep: &str, name: &str) -> String {
    let line = line_with(bicep, &format!("var {name} = '"));
    line.split('\'').nth(1).unwrap().to_string()
}

/// Every `name: 'X'` / `value: <expr>` pair of the app settings array, in order.
fn app_settings(bicep: &str) -> Vec<(String, String)> {
    let body = block(bicep, "var appSettings = ");
    let mut out = vec![];
    let mut name: Option<String> = None;
    for line in body.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("name: '") {
            name = Some(n.trim_end_matches('\'').to_string());
        } else if let Some(v) = line.strip_prefix("value: ") {
            out.push((name.take().expect("value without name"), v.to_string()));
        }
    }
    out
}

/// Parameters of a Bicep file: name -> has a default.
fn params(bicep: &str) -> BTreeMap<String, bool> {
    bicep
        .lines()
        .filter_map(|l| l.strip_prefix("param "))
        .map(|rest| {
            let name = rest.split_whitespace().next().unwrap().to_string();
            (name, rest.contains('='))
        })
        .collect()
}

/// The default of `param <name> <type> = <default>`, as written.
fn param_default(bicep: &str, name: &str) -> String {
    let line = line_with(bicep, &format!("param {name} "));
    line.split_once(" = ").unwrap_or_else(|| panic!("param {name} has no default")).1.trim().to_string()
}

/// The decorators (`@minValue(40)`, ...) right above `param <name> `.
fn param_decorators(bicep: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = bicep.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(&format!("param {name} "))).unwrap();
    lines[..at].iter().rev().take_while(|l| l.starts_with('@')).map(|l| l.to_string()).collect()
}

/// The value of `param <name> = <value>` in main.bicepparam, as written.
fn bicepparam_value(name: &str) -> String {
    let example = read("infra/main.bicepparam");
    line_with(&example, &format!("param {name} = ")).split_once(" = ").unwrap().1.trim().to_string()
}

/// The lines of every ```sh block of a Markdown file, in order.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut out = vec![];
    let mut inside = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            inside = !inside && line.trim() == "```sh";
        } else if inside {
            out.push(line.to_string());
        }
    }
    out
}

/// The literal block under `content: |` of the cloud-init `write_files` entry for `path`.
fn cloud_init_file(yaml: &str, path: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let entry = lines.iter().position(|l| l.trim() == format!("- path: {path}")).expect("no such write_files entry");
    let content = entry + lines[entry..].iter().position(|l| l.trim() == "content: |").expect("no literal content");
    let indent = lines[content].len() - lines[content].trim_start().len() + 2;
    lines[content + 1..]
        .iter()
        .take_while(|l| l.is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or("").to_string() + "\n")
        .collect()
}

#[test]
fn every_janus_template_placeholder_is_substituted_on_the_line_that_loads_it() {
    let vm = vm_bicep();
    for (file, text) in TEMPLATES {
        let line = line_with(&vm, &format!("loadTextContent('../janus/{file}')"));
        assert_eq!(
            quoted_placeholders(line),
            placeholders(text),
            "{file}: the Bicep replace chain and the template's placeholders differ"
        );
    }
    // Every template file in infra/janus is one the binary embeds (and so one checked above).
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("infra/janus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jcfg"))
        .collect();
    let embedded: BTreeSet<String> = TEMPLATES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(on_disk, embedded);
}

#[test]
fn janus_secrets_reach_the_vm_only_as_markers_filled_from_key_vault() {
    let vm = vm_bicep();
    let script = read("infra/vm/render-config.sh");
    let secret_placeholders = ["api_secret", "admin_secret", "token_secret", "admin_key", "events_secret"];

    let mut markers = BTreeSet::new();
    for name in secret_placeholders {
        let search = format!("'{{{{{name}}}}}', ");
        let line = line_with(&vm, &search);
        let replacement = &line[line.find(&search).unwrap() + search.len()..];
        assert!(
            replacement.starts_with("'@@"),
            "{{{{{name}}}}} must become a marker at deployment, not a value in customData"
        );
        markers.extend(tokens(&replacement[..replacement.find(')').unwrap()], "@@"));
    }
    assert_eq!(markers.len(), secret_placeholders.len(), "one marker per secret: {markers:?}");
    assert_eq!(tokens(&vm, "@@"), markers, "the module uses no other markers");
    // coturn's configuration holds one marker, its shared secret.
    let turn_markers = tokens(&read("infra/vm/turnserver.conf"), "@@");
    assert_eq!(turn_markers, BTreeSet::from(["TURN_SHARED_SECRET".to_string()]));
    let all: BTreeSet<String> = markers.union(&turn_markers).cloned().collect();
    assert_eq!(tokens(&script, "@@"), all, "render-config fills exactly the module's and coturn's markers");
    for m in &all {
        assert!(script.contains(&format!("gsub(/@@{m}@@/, ENVIRON[\"{m}\"])")), "render-config does not fill @@{m}@@");
    }

    // The Key Vault secrets the VMs read are the ones the app's settings reference.
    let main = main_bicep();
    for var in vm_secret_vars(&main) {
        let secret = var_literal(&main, &var);
        assert!(script.contains(&format!("$(secret {secret})")), "render-config does not read {secret}");
        assert!(main.contains(&format!("${{keyVaultSecretsUri}}${{{var}}}/)'")), "no app setting references {secret}");
    }
    // Secret values never go to the VM module (its customData).
    assert!(!vm.contains("@secure()"));
    let module = block(&main, "module janusVms ");
    for p in [
        "janusApiSecret",
        "janusAdminKey",
        "janusTokenSecret",
        "janusEventsSecret",
        "turnSharedSecret",
        "alertWebhookUrl",
        "webhookUrl",
        "webhookSecret",
    ] {
        assert!(!module.contains(p), "{p} must not be passed to the VM module");
    }
}

/// The variables named in `var vmSecretNames = [...]`: the secrets every VM may read.
fn vm_secret_vars(main: &str) -> Vec<String> {
    block(main, "var vmSecretNames = ").lines().skip(1).map(str::trim).filter(|l| *l != "]").map(String::from).collect()
}

#[test]
fn the_vm_scripts_are_valid_posix_shell() {
    for file in ["infra/vm/render-config.sh", "infra/vm/setup.sh"] {
        let out = Command::new("sh").arg("-n").arg(root().join(file)).output().unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn every_token_of_the_vm_files_is_replaced_on_the_line_that_loads_it() {
    let vm = vm_bicep();
    for file in [
        "setup.sh",
        "Caddyfile",
        "suroga-janus.service",
        "render-config.sh",
        "turnserver.conf",
        "suroga-turn.service",
        "suroga-turn-cert.service",
        "suroga-turn-cert.timer",
    ] {
        let text = read(&format!("infra/vm/{file}"));
        let line = line_with(&vm, &format!("loadTextContent('../vm/{file}')"));
        let replaced: BTreeSet<String> =
            tokens(line, "__").into_iter().filter(|t| line.contains(&format!("'__{t}__'"))).collect();
        assert_eq!(replaced, tokens(&text, "__"), "{file}: tokens and replacements differ");
    }
    // Every Janus template is written by the setup script to the folder the service renders from,
    // and the script it runs before Janus is the one setup writes.
    let setup = read("infra/vm/setup.sh");
    for (file, _) in TEMPLATES {
        assert!(setup.contains(&format!("put /etc/suroga-janus/{file} 0644 '__")), "setup.sh does not write {file}");
    }
    let unit = read("infra/vm/suroga-janus.service");
    assert!(unit.contains("ExecStartPre=/usr/local/lib/suroga-janus/render-config janus\n"));
    let turn_unit = read("infra/vm/suroga-turn.service");
    assert!(turn_unit.contains("ExecStartPre=+/usr/local/lib/suroga-janus/render-config turn\n"));
    assert!(turn_unit.contains("ExecReload=+/usr/local/lib/suroga-janus/render-config turn-cert\n"));
    assert!(turn_unit.contains("ExecStart=/usr/bin/turnserver -c /run/suroga-turn/turnserver.conf "));
    assert!(read("infra/vm/suroga-turn-cert.service").contains("try-reload-or-restart suroga-turn.service"));
    assert!(setup.contains("put /usr/local/lib/suroga-janus/render-config 0755 '__RENDER_CONFIG__'"));
    assert!(setup.contains("put /etc/systemd/system/suroga-janus.service 0644 '__SERVICE_UNIT__'"));
    assert!(setup.contains("put /etc/caddy/Caddyfile 0644 '__CADDYFILE__'"));
    for (path, token) in [
        ("/etc/suroga-turn/turnserver.conf", "__TURNSERVER_CONF__"),
        ("/etc/systemd/system/suroga-turn.service", "__TURN_UNIT__"),
        ("/etc/systemd/system/suroga-turn-cert.service", "__TURN_CERT_SERVICE__"),
        ("/etc/systemd/system/suroga-turn-cert.timer", "__TURN_CERT_TIMER__"),
    ] {
        assert!(setup.contains(&format!("put {path} 0644 '{token}'")), "setup.sh does not write {path}");
    }
    assert!(
        setup
            .contains("systemctl enable suroga-janus.service suroga-turn.service suroga-turn-cert.timer caddy.service")
    );
    assert!(setup.starts_with("#!/bin/sh\n"));
}

#[test]
fn the_public_address_is_announced_through_the_core_templates_nat_section() {
    let core = TEMPLATES.iter().find(|(f, _)| *f == "janus.jcfg").unwrap().1;
    assert_eq!(core.matches("nat: {").count(), 1, "janus.jcfg needs one `nat: {{` section for nat_1_1_mapping");
    let vm = vm_bicep();
    assert_eq!(var_literal(&vm, "natAnchor"), "nat: {");
    assert!(line_with(&vm, "var natMapping = ").contains("nat_1_1_mapping = \"${publicIp.properties.ipAddress}\""));
    assert!(line_with(&vm, "loadTextContent('../janus/janus.jcfg')").contains("natAnchor, natMapping)"));
}

#[test]
fn cosmos_containers_match_the_app_defaults_and_partition_key() {
    let main = main_bicep();
    let env = HashMap::from([
        ("STORE".to_string(), "cosmos".to_string()),
        ("COSMOS_ENDPOINT".to_string(), "https://x.documents.azure.com:443/".to_string()),
    ]);
    let StoreKind::Cosmos(defaults) = Config::from_map(&env).unwrap().store else { panic!("not cosmos") };
    assert_eq!(var_literal(&main, "roomsContainerName"), defaults.container);
    assert_eq!(var_literal(&main, "opsContainerName"), defaults.ops_container);
    assert_eq!(var_literal(&main, "partitionKeyPath"), PARTITION_KEY_PATH);
    assert_eq!(line_with(&main, "param cosmosDatabaseName ").split('\'').nth(1).unwrap(), defaults.database);

    let container_type = "'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@";
    assert_eq!(main.lines().filter(|l| l.starts_with("resource ") && l.contains(container_type)).count(), 2);
    let rooms = block(&main, "resource roomsContainer ");
    let ops = block(&main, "resource opsContainer ");
    for (c, name) in [(rooms, "roomsContainerName"), (ops, "opsContainerName")] {
        assert!(c.contains(&format!("name: {name}\n")) && c.contains(&format!("id: {name}\n")));
        let paths = block(&c[c.find("partitionKey:").unwrap()..], "partitionKey:");
        assert!(
            paths.contains("paths: [\n          partitionKeyPath\n        ]"),
            "{name}: partition key must be partitionKeyPath only"
        );
    }
    assert!(ops.contains("defaultTtl: -1"), "ops needs TTL on with no default expiry");
    assert!(rooms.contains("defaultTtl: -1"), "rooms: TTL per item (slot hints, fences), no default expiry");
    assert!(ops.contains("compositeIndexes"), "an owner's bookings page by (start, id)");
    assert!(rooms.contains("compositeIndexes"));

    let account = block(&main, "resource cosmos ");
    assert!(account.contains("disableLocalAuth: true"));
    let data_role = block(&main, "resource appCosmosData ");
    assert!(data_role.contains("sqlRoleDefinitions/${cosmosDataContributorRoleId}"));
    assert_eq!(var_literal(&main, "cosmosDataContributorRoleId"), "00000000-0000-0000-0000-000000000002");
}

#[test]
fn vm_operator_role_has_exactly_four_actions() {
    let main = main_bicep();
    let role = block(&main, "resource vmOperatorRole ");
    let actions_at = role.find("actions: [").unwrap();
    let actions: BTreeSet<&str> = block(&role[actions_at..], "actions: [")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('\''))
        .map(|l| l.trim_matches('\''))
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from([
            "Microsoft.Compute/virtualMachines/read",
            "Microsoft.Compute/virtualMachines/instanceView/read",
            "Microsoft.Compute/virtualMachines/start/action",
            "Microsoft.Compute/virtualMachines/deallocate/action",
        ])
    );
    assert_eq!(role.matches("actions: [").count(), 1, "one permission block");
    assert!(role.contains("notActions: []") && !role.contains("dataActions"));
    assert!(role.contains("assignableScopes: [\n      resourceGroup().id\n    ]"));
    // Role names are unique per tenant: the same group name in two subscriptions must not collide.
    let name = line_with(role, "roleName: ");
    assert!(name.contains("${subscription().subscriptionId}") && name.contains("${resourceGroup().name}"), "{name}");
    // Assigned to the app on each Janus VM, nowhere else.
    let vm = vm_bicep();
    let assignment = block(&vm, "resource appOperatesVm ");
    assert!(assignment.contains("scope: vm\n") && assignment.contains("principalId: functionPrincipalId"));
    assert_eq!(main.matches("vmOperatorRoleGuid)").count(), 1, "the custom role is passed only to the VM module");
}

/// The environment the app would see: literals as written; `string(param)` as the parameter's
/// default; other expressions as Azure resolves them (samples); `overrides` last.
fn app_environment(main: &str, overrides: &[(&str, &str)]) -> HashMap<String, String> {
    let hosts_block = block(main, "var janusHosts = ");
    let host: serde_json::Map<String, serde_json::Value> = hosts_block
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, _)| {
            let v = if k == "capacity" { serde_json::json!(10) } else { serde_json::json!(format!("sample-{k}")) };
            (k.to_string(), v)
        })
        .collect();
    let mut env: HashMap<String, String> = app_settings(main)
        .iter()
        .map(|(k, v)| {
            let resolved = match k.as_str() {
                "COSMOS_ENDPOINT" => "https://suroga.documents.azure.com:443/".to_string(),
                "JANUS_HOSTS" => serde_json::Value::Array(vec![serde_json::Value::Object(host.clone())]).to_string(),
                "AUTH_ISSUER" => "https://login.microsoftonline.com/tenant/v2.0".to_string(),
                "AUTH_AUDIENCE" => "11111111-1111-1111-1111-111111111111".to_string(),
                "PUBLIC_BASE_URL" => "https://suroga-func-abcdefgh.azurewebsites.net".to_string(),
                // A Key Vault reference resolves to the secret itself: here, a webhook URL.
                "ALERT_WEBHOOK_URL" => "https://hooks.example.com/services/T/B/X".to_string(),
                // The other secrets are `openssl rand -hex 32` (docs/deploy.md, step 4): one each.
                _ if v.starts_with("'@Microsoft.KeyVault(") => {
                    Sha256::digest(k.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
                }
                // One entry per host of JANUS_HOSTS, as the template builds it.
                "TURN_URLS" => serde_json::json!([{
                    "name": host["name"],
                    "urls": [
                        "stun:sample-turn.example.org:3478",
                        "turn:sample-turn.example.org:3478?transport=udp",
                        "turn:sample-turn.example.org:3478?transport=tcp",
                        "turns:sample-turn.example.org:443?transport=tcp"
                    ]
                }])
                .to_string(),
                _ if v.starts_with('\'') && v.ends_with('\'') && !v.contains("${") => v.trim_matches('\'').to_string(),
                _ => match v.strip_prefix("string(").and_then(|p| p.strip_suffix(')')) {
                    Some(param) => param_default(main, param),
                    None => format!("sample-{k}"),
                },
            };
            (k.clone(), resolved)
        })
        .collect();
    // Settings behind a condition that the defaults turn off (see the `concat` in main.bicep).
    if param_default(main, "fleetMaxHosts") == "0" {
        env.remove("FLEET_MAX_HOSTS");
    }
    if param_default(main, "alertWebhookEnabled") == "false" {
        env.remove("ALERT_WEBHOOK_URL");
    }
    if param_default(main, "webhooksEnabled") == "false" {
        env.remove("WEBHOOK_URL");
        env.remove("WEBHOOK_SECRET");
    }
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// The text of a resource declaration, from `resource <name> ` to its closing brace.
fn resource_text<'a>(bicep: &'a str, name: &str) -> &'a str {
    let start = bicep.find(&format!("\nresource {name} ")).unwrap_or_else(|| panic!("no resource {name}")) + 1;
    let end = start + bicep[start..].find("\n}\n").unwrap() + 2;
    &bicep[start..end]
}

#[test]
fn app_settings_satisfy_the_app_for_cosmos_and_the_azure_fleet() {
    let main = main_bicep();
    let settings = app_settings(&main);
    let names: BTreeSet<&str> = settings.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), settings.len(), "a setting is listed twice");
    for required in [
        "AzureWebJobsStorage__accountName",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "STORE",
        "COSMOS_ENDPOINT",
        "COSMOS_DATABASE",
        "COSMOS_CONTAINER",
        "COSMOS_OPS_CONTAINER",
        "COSMOS_CREDENTIAL",
        "FLEET",
        "AZURE_SUBSCRIPTION_ID",
        "JANUS_HOSTS",
        "JANUS_API_SECRET",
        "JANUS_ADMIN_KEY",
        "JANUS_TOKEN_SECRET",
        "JANUS_EVENTS_SECRET",
        "AUTH_ISSUER",
        "AUTH_AUDIENCE",
        "ALERT_WEBHOOK_URL",
        "PUBLIC_BASE_URL",
        "SESSION_GRACE_MINUTES",
        "TURN_SHARED_SECRET",
        "TURN_URLS",
    ] {
        assert!(names.contains(required), "app setting {required} is missing");
    }
    // Flex Consumption takes the runtime from functionAppConfig, and keys are off.
    for forbidden in ["FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "AzureWebJobsStorage", "COSMOS_KEY"] {
        assert!(!names.contains(forbidden), "{forbidden} must not be set");
    }
    let value = |n: &str| settings.iter().find(|(k, _)| k == n).unwrap().1.clone();
    for secret in [
        "JANUS_API_SECRET",
        "JANUS_ADMIN_KEY",
        "JANUS_TOKEN_SECRET",
        "JANUS_EVENTS_SECRET",
        "TURN_SHARED_SECRET",
        "ALERT_WEBHOOK_URL",
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
    ] {
        assert!(value(secret).starts_with("'@Microsoft.KeyVault(SecretUri="), "{secret} must be a Key Vault reference");
    }
    // The three Janus secrets are required by the app with FLEET=azure (JANUS_ADMIN_KEY too: the
    // service lists rooms with it): always set, never behind a condition.
    let unconditional = &main[main.find("var appSettings = concat([").unwrap()..];
    let unconditional = &unconditional[..unconditional.find("\n], ").unwrap()];
    for secret in [
        "JANUS_API_SECRET",
        "JANUS_ADMIN_KEY",
        "JANUS_TOKEN_SECRET",
        "JANUS_EVENTS_SECRET",
        "TURN_SHARED_SECRET",
        "TURN_URLS",
    ] {
        assert!(unconditional.contains(&format!("name: '{secret}'")), "{secret} must not depend on a condition");
    }
    assert!(resource_text(&main, "eventsSecret").contains("name: eventsSecretName"));
    assert!(resource_text(&main, "adminKey").contains("name: adminKeyName"));
    assert!(
        line_with(&main, "param janusAdminKey ").contains("= ''") && main.contains("Required on the first deployment")
    );

    // Defaults, and everything switched on: the app accepts both.
    let config = Config::from_map(&app_environment(&main, &[]))
        .unwrap_or_else(|e| panic!("the app rejects the Bicep settings: {e}"));
    let StoreKind::Cosmos(cosmos) = &config.store else { panic!("STORE is not cosmos") };
    assert_eq!(cosmos.credential, CosmosCredentialKind::ManagedIdentity);
    assert!(cosmos.key.is_none());
    assert_eq!(config.fleet, FleetKind::Azure);
    let h = &config.hosts[0];
    assert!(h.resource_group.is_some() && h.vm_name.is_some(), "FLEET=azure hosts need resource_group and vm_name");
    assert!(config.auth.issuer.is_some() && config.auth.audience.is_some());
    assert!(config.janus_admin_key.is_some());
    assert!(config.janus_events_secret.is_some());
    assert!(config.webhook.is_none(), "webhooks are off by default");
    let all_on = app_environment(
        &main,
        &[
            ("FLEET_MAX_HOSTS", "3"),
            ("ALERT_WEBHOOK_URL", "https://hooks.example.com/T/B/X"),
            ("WEBHOOK_URL", "https://integrator.example.com/hooks"),
            ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ],
    );
    let on = Config::from_map(&all_on).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(on.webhook.unwrap().max_age.num_minutes(), 1440);
}

/// Issue 9: App Service replaces every app setting on each deployment, so the tunables are
/// parameters (kept in main.bicepparam) with the app's defaults, and alerts stay on without the
/// webhook parameter.
#[test]
fn tunable_app_settings_come_from_parameters_with_the_apps_defaults() {
    let main = main_bicep();
    let settings = app_settings(&main);
    let value = |n: &str| settings.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let defaults = FleetSettings::default();
    let tunables = [
        ("FLEET_LEAD_MINUTES", "fleetLeadMinutes", defaults.lead.num_minutes()),
        ("FLEET_GRACE_MINUTES", "fleetGraceMinutes", defaults.grace.num_minutes()),
        ("FLEET_KEEP_WARM_MINUTES", "fleetKeepWarmMinutes", defaults.keep_warm.num_minutes()),
        ("FLEET_OVERRUN_LIMIT_MINUTES", "fleetOverrunLimitMinutes", defaults.overrun_limit.num_minutes()),
        // The documented default of SESSION_GRACE_MINUTES (README configuration table).
        ("SESSION_GRACE_MINUTES", "sessionGraceMinutes", 5),
        // 0 stands for "no limit": the setting is then left out.
        ("FLEET_MAX_HOSTS", "fleetMaxHosts", 0),
    ];
    for (setting, param, default) in tunables {
        assert_eq!(value(setting).as_deref(), Some(format!("string({param})").as_str()), "{setting}");
        assert_eq!(param_default(&main, param), default.to_string(), "{param}: the app's default");
        assert!(param_decorators(&main, param).contains(&"@minValue(0)".to_string()), "{param} needs bounds");
        assert_eq!(bicepparam_value(param), default.to_string(), "main.bicepparam records {param}");
    }
    assert!(main.contains("], fleetMaxHosts == 0 ? [] : [\n  {\n    name: 'FLEET_MAX_HOSTS'"));
    // The webhooks' maximum age: the app's default, never 0 (the app refuses it).
    assert_eq!(value("WEBHOOK_MAX_AGE_MINUTES").as_deref(), Some("string(webhookMaxAgeMinutes)"));
    let age = suroga::config::DEFAULT_WEBHOOK_MAX_AGE_MINUTES.to_string();
    assert_eq!(
        (param_default(&main, "webhookMaxAgeMinutes"), bicepparam_value("webhookMaxAgeMinutes")),
        (age.clone(), age)
    );
    assert!(param_decorators(&main, "webhookMaxAgeMinutes").contains(&"@minValue(1)".to_string()));
    // Early release: on by default, as in the app.
    assert_eq!(value("FLEET_RELEASE_EARLY").as_deref(), Some("string(fleetReleaseEarly)"));
    assert_eq!(param_default(&main, "fleetReleaseEarly"), defaults.release_early.to_string());
    assert_eq!(bicepparam_value("fleetReleaseEarly"), "true");
    // Integrators' webhooks depend on a kept flag too.
    assert!(main.contains("] : [], webhooksEnabled ? [\n  {\n    name: 'WEBHOOK_URL'"));
    assert_eq!(bicepparam_value("webhooksEnabled"), "false");
    // The Bicep defaults give the app its own defaults.
    let config = Config::from_map(&app_environment(&main, &[])).unwrap();
    let f = &config.fleet_settings;
    assert_eq!(
        (f.lead, f.grace, f.keep_warm, f.overrun_limit),
        (defaults.lead, defaults.grace, defaults.keep_warm, defaults.overrun_limit)
    );
    assert_eq!(f.max_hosts, None);
    assert!(f.release_early);
    // Alerts depend on a kept flag, not on passing the secret again.
    assert!(main.contains("], alertWebhookEnabled ? [\n  {\n    name: 'ALERT_WEBHOOK_URL'"));
    assert!(!block(&main, "var appSettings = ").contains("alertWebhookUrl"));
    assert_eq!(bicepparam_value("alertWebhookEnabled"), "false");
    assert!(resource_text(&main, "alertWebhookSecret").contains("value: alertWebhookUrl"));
}

#[test]
fn firewall_and_janus_use_the_same_ports() {
    let main = main_bicep();
    let vm = vm_bicep();
    let nsg = block(&main, "resource nsg ");
    assert!(nsg.contains("destinationPortRange: rtpPortRange"));
    assert!(line_with(&vm, "loadTextContent('../janus/janus.jcfg')").contains("'{{rtp_port_range}}', rtpPortRange)"));
    // The backend port is open only to the Function app's subnet.
    let backend_rule = &nsg[nsg.find("name: 'allow-janus-backend-from-functions'").unwrap()..];
    let backend_rule = &backend_rule[..backend_rule.find("}\n").unwrap()];
    assert!(backend_rule.contains("sourceAddressPrefix: appSubnetPrefix"));
    assert!(backend_rule.contains("destinationPortRange: string(janusHttpPort)"));
    assert_eq!(nsg.matches("string(janusHttpPort)").count(), 1, "the backend port has one rule only");
    assert!(
        line_with(&vm, "loadTextContent('../janus/janus.transport.http.jcfg')")
            .contains("'{{http_acl}}', janusHttpAcl)")
    );
    assert_eq!(var_literal(&main, "appSubnetPrefix"), "${vnetOctets}.2.0/24");
    assert_eq!(var_literal(&main, "janusHttpAcl"), "127.,${vnetOctets}.2.");
    // WebSockets and the admin API never listen beyond loopback (Caddy fronts WebSockets).
    assert!(
        line_with(&vm, "loadTextContent('../janus/janus.transport.websockets.jcfg')")
            .contains("'{{ws_ip}}', '127.0.0.1')")
    );
    assert!(
        line_with(&vm, "loadTextContent('../janus/janus.transport.http.jcfg')")
            .contains("'{{admin_ip}}', '127.0.0.1')")
    );
}

#[test]
fn parameters_are_wired_between_files() {
    let main = main_bicep();
    let main_params = params(&main);
    let example = read("infra/main.bicepparam");
    assert!(example.contains("using './main.bicep'"));
    let set: BTreeSet<String> = example
        .lines()
        .filter_map(|l| l.strip_prefix("param "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    for p in &set {
        assert!(main_params.contains_key(p), "main.bicepparam sets unknown parameter {p}");
    }
    for (p, has_default) in &main_params {
        assert!(*has_default || set.contains(p), "main.bicepparam does not set required parameter {p}");
    }

    // The VM module gets exactly its parameters.
    let module = block(&main, "module janusVms ");
    let params_at = module.find("params: {").unwrap();
    let passed: BTreeSet<String> = block(&module[params_at..], "params: {")
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.to_string()))
        .collect();
    let vm_params = params(&vm_bicep());
    for p in &passed {
        assert!(vm_params.contains_key(p), "main.bicep passes unknown parameter {p} to the VM module");
    }
    for (p, has_default) in &vm_params {
        assert!(*has_default || passed.contains(p), "main.bicep does not pass {p} to the VM module");
    }
    assert!(Path::new(&root().join("infra/modules/janus-vm.bicep")).exists());
    assert!(main.contains("module janusVms 'modules/janus-vm.bicep'"));
}

// ---------------------------------------------------------------------------------------------
// Issue 13, item by item: what a first deployment by a new operator needs.

/// A minimal static x86-64 ELF executable: what `suroga functions package` accepts as the binary.
fn fake_static_binary(dir: &Path) -> PathBuf {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // executable
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[58..60].copy_from_slice(&64u16.to_le_bytes());
    let p = dir.join("suroga-static");
    std::fs::write(&p, b).unwrap();
    p
}

/// Item 1: Core Tools needs the worker runtime (`custom`) to publish; the publish folder says it,
/// and so does every documented publish command.
#[test]
fn the_publish_folder_carries_what_core_tools_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("publish");
    let run = Command::new(env!("CARGO_BIN_EXE_suroga"))
        .args(["functions", "package", "--out"])
        .arg(&out)
        .arg("--binary")
        .arg(fake_static_binary(dir.path()))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("local.settings.json")).unwrap()).unwrap();
    assert_eq!(settings["Values"]["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert_eq!(settings["Values"].as_object().unwrap().len(), 1, "nothing else, no secrets");
    for f in ["host.json", "suroga", "fleet-reconcile/function.json", "v1-health/function.json"] {
        assert!(out.join(f).is_file(), "publish/{f} is missing");
    }
    // The app's runtime is `custom` 1.0 on Flex, matching what is published.
    let main = main_bicep();
    let app = block(&main, "resource functionApp ");
    assert!(app.contains("runtime: {\n        name: 'custom'\n        version: '1.0'\n      }"));
    // Every publish command: from publish/, with --custom.
    let publish = r#"(cd publish && func azure functionapp publish "$app" --custom)"#;
    assert!(shell_lines(&read("docs/deploy.md")).iter().any(|l| l == publish), "docs/deploy.md: {publish}");
    assert!(read("README.md").contains("(cd publish && func azure functionapp publish <app-name> --custom)"));
    assert!(read("scripts/package.sh").contains("func azure functionapp publish <APP> --custom"));
    assert!(read("docs/deploy.md").contains("**4.0.5530 or later**"), "the minimum Core Tools version");
}

/// Item 2: Flex Consumption's VNet integration needs the Microsoft.App provider, which ARM does not
/// register for this template: the procedure registers it (and checks it) before deploying.
#[test]
fn the_procedure_registers_microsoft_app_before_the_first_deployment() {
    let lines = shell_lines(&read("docs/deploy.md"));
    let at = |needle: &str| lines.iter().position(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("no {needle}"));
    let register = at("az provider register --namespace Microsoft.App --wait");
    assert!(at("az provider show --namespace Microsoft.App --query registrationState") > register);
    assert!(register < at("az deployment group create "));
    // The subnet the app joins is delegated to that provider.
    assert!(block(&main_bicep(), "resource vnet ").contains("serviceName: 'Microsoft.App/environments'"));
}

/// Item 3: Azure never changes customData on an existing VM, so customData is a fixed file (its
/// digest pinned here) and everything a deployment decides is userData, which the VM applies at
/// every boot.
#[test]
fn custom_data_is_a_fixed_bootstrap_and_the_rest_is_user_data() {
    let vm = vm_bicep();
    assert_eq!(line_with(&vm, "customData:").trim(), "customData: loadFileAsBase64('../vm/bootstrap.yaml')");
    assert_eq!(line_with(&vm, "userData:").trim(), "userData: base64(setupScript)");
    assert!(block(&vm, "var setupScript = ").contains("loadTextContent('../vm/setup.sh')"));
    // Changing this file changes customData, which Azure refuses on every existing VM
    // (PropertyChangeNotAllowed): keep it, or recreate the VMs (docs/deploy.md, "Changing the
    // configuration") and update the digest.
    let bootstrap = read("infra/vm/bootstrap.yaml");
    let digest: String = Sha256::digest(bootstrap.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        digest, "9f2ec45b7ae6ab2886e3aeacb66303cb02b9a94353e11a5216d17da570a1912f",
        "infra/vm/bootstrap.yaml changed: see the comment above"
    );
    assert!(bootstrap.starts_with("#cloud-config\n"));
    assert!(tokens(&bootstrap, "__").is_empty() && tokens(&bootstrap, "@@").is_empty(), "no deployment value");
    // Valid for cloud-init 22.4.2, Debian 12's (scripts/deps unpacks it under target/tools).
    let cloud_init = root().join("target/tools/cloud-init/usr/lib/python3/dist-packages");
    assert!(cloud_init.join("cloudinit").is_dir(), "no cloud-init: run scripts/deps");
    let schema = Command::new("/usr/bin/python3")
        .env("PYTHONPATH", &cloud_init)
        .args(["-c", "import sys\nfrom cloudinit.config.schema import validate_cloudconfig_file, get_schema\nvalidate_cloudconfig_file(sys.argv[1], get_schema())"])
        .arg(root().join("infra/vm/bootstrap.yaml"))
        .output()
        .expect("Debian's python3 runs (scripts/deps installs cloud-init's libraries)");
    assert!(schema.status.success(), "cloud-init schema: {}", String::from_utf8_lossy(&schema.stderr));
    // The bootstrap runs the userData at every boot, before Janus and Caddy start.
    let unit = cloud_init_file(&bootstrap, "/etc/systemd/system/suroga-janus-setup.service");
    assert!(
        unit.contains("Before=suroga-janus.service caddy.service\n") && unit.contains("WantedBy=multi-user.target")
    );
    assert!(unit.contains("ExecStart=/usr/local/lib/suroga-janus/apply-user-data\n"));
    let apply = cloud_init_file(&bootstrap, "/usr/local/lib/suroga-janus/apply-user-data");
    assert!(apply.contains("/metadata/instance/compute/userData?api-version=2021-01-01&format=text"));
    let compiled = Command::new("python3")
        .args(["-c", "import sys; compile(sys.stdin.read(), 'apply-user-data', 'exec')"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(apply.as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3 runs");
    assert!(compiled.status.success(), "apply-user-data: {}", String::from_utf8_lossy(&compiled.stderr));
    // userData holds at most 64 KiB (base64). Estimate it with the raw files in place of their
    // rendered forms (the same size but for a few values).
    let mut setup = read("infra/vm/setup.sh");
    for (token, file) in [
        ("__TURNSERVER_CONF__", "infra/vm/turnserver.conf"),
        ("__TURN_UNIT__", "infra/vm/suroga-turn.service"),
        ("__TURN_CERT_SERVICE__", "infra/vm/suroga-turn-cert.service"),
        ("__TURN_CERT_TIMER__", "infra/vm/suroga-turn-cert.timer"),
        ("__JANUS_JCFG__", "infra/janus/janus.jcfg"),
        ("__JANUS_HTTP_JCFG__", "infra/janus/janus.transport.http.jcfg"),
        ("__JANUS_WS_JCFG__", "infra/janus/janus.transport.websockets.jcfg"),
        ("__JANUS_VIDEOROOM_JCFG__", "infra/janus/janus.plugin.videoroom.jcfg"),
        ("__JANUS_EVENTS_JCFG__", "infra/janus/janus.eventhandler.sampleevh.jcfg"),
        ("__RENDER_CONFIG__", "infra/vm/render-config.sh"),
        ("__SERVICE_UNIT__", "infra/vm/suroga-janus.service"),
        ("__CADDYFILE__", "infra/vm/Caddyfile"),
    ] {
        use base64::Engine as _;
        setup = setup.replace(token, &base64::engine::general_purpose::STANDARD.encode(read(file)));
    }
    let encoded = setup.len().div_ceil(3) * 4;
    assert!(encoded < 48 * 1024, "userData would be {encoded} bytes: close to Azure's 64 KiB");
    // The procedure says what cannot change on an existing VM.
    assert!(read("docs/deploy.md").contains("What a redeployment cannot change on an existing VM: its customData"));
}

/// Item 4: custom role names are unique per tenant; the subscription keeps them apart (checked
/// for the VM operator role in `vm_operator_role_has_exactly_four_actions`, here for both).
#[test]
fn every_custom_role_name_holds_the_subscription() {
    let main = main_bicep();
    let roles: Vec<&str> = main
        .lines()
        .filter(|l| l.starts_with("resource ") && l.contains("'Microsoft.Authorization/roleDefinitions@"))
        .collect();
    assert_eq!(roles.len(), 2, "{roles:?}");
    for role in roles {
        let name = role.split_whitespace().nth(1).unwrap();
        let text = block(&main, &format!("resource {name} "));
        assert!(line_with(text, "roleName: ").contains("(${subscription().subscriptionId}/${resourceGroup().name})"));
    }
}

/// Item 5: following start/deallocate needs Microsoft.Compute/locations/operations/read at
/// resource-group scope: its own role, that one action, assigned to the app on the group.
#[test]
fn the_app_may_read_vm_operations_at_resource_group_scope() {
    let main = main_bicep();
    let role = block(&main, "resource vmOperationReaderRole ");
    let actions: Vec<&str> = block(&role[role.find("actions: [").unwrap()..], "actions: [")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('\''))
        .collect();
    assert_eq!(actions, ["'Microsoft.Compute/locations/operations/read'"]);
    assert!(role.contains("assignableScopes: [\n      resourceGroup().id\n    ]"));
    let assignment = resource_text(&main, "appReadsVmOperations");
    assert!(!assignment.contains("scope:"), "no scope property: the template's scope, the resource group");
    assert!(assignment.contains("principalId: functionApp.identity.principalId"));
    assert!(
        assignment
            .contains("subscriptionResourceId('Microsoft.Authorization/roleDefinitions', vmOperationReaderRoleGuid)")
    );
    assert!(
        main.starts_with("// Suroga Stream on Azure")
            && line_with(&main, "targetScope") == "targetScope = 'resourceGroup'"
    );
}

/// Item 6: the documented app registration issues v2 access tokens, so the issuer is the v2 one
/// and the audience the client id; its admin role is the app's admin role.
#[test]
fn the_entra_registration_issues_v2_tokens_for_the_client_id() {
    let registration: serde_json::Value =
        serde_json::from_str(&read("infra/entra/api-registration.json")).expect("valid JSON");
    assert_eq!(registration["api"]["requestedAccessTokenVersion"], 2);
    assert_eq!(registration["api"]["oauth2PermissionScopes"][0]["value"], "access_as_user");
    let main = main_bicep();
    let admin_role = param_default(&main, "authAdminRole");
    assert_eq!(admin_role, "'admin'");
    assert_eq!(Config::from_map(&HashMap::new()).unwrap().auth.admin_role, "admin");
    let role = registration["appRoles"].as_array().unwrap().iter().find(|r| r["value"] == "admin").expect("admin role");
    assert_eq!(role["allowedMemberTypes"], serde_json::json!(["User", "Application"]));
    let role_id = role["id"].as_str().unwrap();
    assert!(
        read("docs/deploy.md").contains(&format!("\\\"appRoleId\\\":\\\"{role_id}\\\"")),
        "the docs assign role {role_id}"
    );
    // The example parameters: a tenant's v2 issuer, and a client id (a GUID) as the audience.
    let issuer = bicepparam_value("authIssuer");
    let tenant = issuer.trim_matches('\'').strip_prefix("https://login.microsoftonline.com/").unwrap();
    let tenant = tenant.strip_suffix("/v2.0").expect("the v2 issuer");
    assert!(uuid::Uuid::parse_str(tenant).is_ok(), "{issuer}");
    assert!(uuid::Uuid::parse_str(bicepparam_value("authAudience").trim_matches('\'')).is_ok(), "a client id");
    assert!(read("docs/deploy.md").contains("--body @infra/entra/api-registration.json"));
}

/// Item 8: the Janus hosts may live in the operator's own domain, and Caddy gets an ACME email.
#[test]
fn janus_hosts_may_use_a_custom_domain_and_caddy_an_acme_email() {
    let main = main_bicep();
    let fqdns = line_with(&main, "var janusFqdns = ");
    assert!(fqdns.contains("empty(janusDomain) ?") && fqdns.contains("'${prefix}-janus-${i + 1}.${janusDomain}'"));
    assert!(block(&main, "var janusHosts = ").contains("public_http_url: 'https://${janusFqdns[i]}/janus'"));
    assert!(block(&main, "module janusVms ").contains("fqdn: janusFqdns[i]\n    acmeEmail: acmeEmail\n"));
    assert_eq!(param_default(&main, "janusDomain"), "''");
    assert_eq!(param_default(&main, "acmeEmail"), "''");
    assert!(main.contains("output janusFqdns array = janusFqdns"));
    let vm = vm_bicep();
    assert!(line_with(&vm, "loadTextContent('../vm/Caddyfile')").contains("'__GLOBAL_OPTIONS__', caddyGlobalOptions)"));
}

/// Caddy 2.6.2, Debian 12's (what the VMs install; scripts/deps unpacks it under target/tools).
fn caddy() -> &'static str {
    ["caddy", concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/caddy/usr/bin/caddy")]
        .into_iter()
        .find(|c| Command::new(c).arg("version").output().is_ok_and(|o| o.status.success()))
        .expect("no caddy: run scripts/deps (it unpacks Debian's caddy under target/tools)")
}

/// The Caddyfile with every token but the global options replaced as the module does, for one
/// VM whose main and TURN addresses are `main_ip` and `turn_ip`.
fn rendered_caddyfile(global: &str, main_ip: &str, turn_ip: &str) -> String {
    let vm = vm_bicep();
    let line = line_with(&vm, "loadTextContent('../vm/Caddyfile')");
    for (token, expr) in [
        ("__FQDN__", "fqdn"),
        ("__PRIVATE_IP__", "privateIp"),
        ("__TURN_PRIVATE_IP__", "turnPrivateIp"),
        ("__TURN_FQDN__", "turnFqdn"),
    ] {
        assert!(line.contains(&format!("'{token}', {expr})")), "the module replaces {token} with {expr}");
    }
    read("infra/vm/Caddyfile")
        .replace("__GLOBAL_OPTIONS__", global)
        .replace("__FQDN__", "suroga-janus-1.video.example.org")
        .replace("__TURN_FQDN__", "suroga-janus-1-turn.video.example.org")
        .replace("__TURN_PRIVATE_IP__", turn_ip)
        .replace("__PRIVATE_IP__", main_ip)
        .replace("__HTTP_PORT__", "8088")
        .replace("__WS_PORT__", "8188")
}

/// The Caddyfile as the template renders it, with and without an ACME email, is valid for Caddy
/// 2.6.2: HTTPS for the Janus name, and a certificate for the TURN name obtained by the HTTP-01
/// challenge only (TLS-ALPN-01 would need port 443 of the TURN address, which is coturn's).
#[test]
fn the_rendered_caddyfile_is_valid_for_caddy() {
    let vm = vm_bicep();
    let options = line_with(&vm, "var caddyGlobalOptions = ");
    let (empty, set) = options.split_once(" ? ").unwrap().1.split_once(" : ").unwrap();
    assert_eq!(empty, "''");
    let dir = tempfile::tempdir().unwrap();
    for (email, global) in [(None, String::new()), (Some("ops@example.org"), set.trim_matches('\'').to_string())] {
        let global = global.replace("\\n", "\n").replace("\\t", "\t").replace("${acmeEmail}", email.unwrap_or(""));
        let text = rendered_caddyfile(&global, "10.40.1.10", "10.40.1.110");
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, &text).unwrap();
        let out =
            Command::new(caddy()).args(["adapt", "--adapter", "caddyfile", "--config"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let adapted = json.to_string();
        assert!(adapted.contains("suroga-janus-1.video.example.org") && adapted.contains("127.0.0.1:8188"));
        assert_eq!(adapted.contains("\"email\":\"ops@example.org\""), email.is_some(), "{adapted}");
        let policies = json["apps"]["tls"]["automation"]["policies"].as_array().expect("TLS automation policies");
        let turn = policies
            .iter()
            .find(|p| p["subjects"] == serde_json::json!(["suroga-janus-1-turn.video.example.org"]))
            .expect("a certificate policy for the TURN name");
        assert_eq!(turn["issuers"][0]["challenges"]["tls-alpn"]["disabled"], true, "{turn}");
        if email.is_some() {
            assert_eq!(turn["issuers"][0]["email"], "ops@example.org", "the TURN certificate's account too");
        }
    }
}

/// Port 443 of the TURN address stays free for coturn (TURN over TLS): Caddy, run with the
/// rendered Caddyfile, listens for HTTPS on the VM's main address only, and for HTTP (ACME
/// challenges) on both. Run on two loopback addresses and unprivileged ports, with Caddy's local
/// CA instead of Let's Encrypt (nothing leaves the machine).
#[test]
fn caddy_leaves_port_443_of_the_turn_address_to_coturn() {
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};
    let (main_ip, turn_ip) = ("127.83.1.10", "127.83.1.110");
    let (http, https) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let global = format!(
        "{{\n\tadmin off\n\tlocal_certs\n\tskip_install_trust\n\tstorage file_system {}\n\thttp_port {http}\n\thttps_port {https}\n}}\n",
        dir.path().join("data").display()
    );
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, rendered_caddyfile(&global, main_ip, turn_ip)).unwrap();
    let mut child = Command::new(caddy())
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let open = |ip: &str, port: u16| {
        TcpStream::connect_timeout(&SocketAddr::new(ip.parse().unwrap(), port), Duration::from_millis(500)).is_ok()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(open(main_ip, https) && open(turn_ip, http)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let listening = [
        (main_ip, https, open(main_ip, https)),
        (main_ip, http, open(main_ip, http)),
        (turn_ip, http, open(turn_ip, http)),
        (turn_ip, https, open(turn_ip, https)),
    ];
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        listening.map(|(_, _, o)| o),
        [true, true, true, false],
        "(address, port, listening): {listening:?}\n{log}"
    );
}

/// A TCP port nobody listens on right now (the kernel's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The app's storage roles, container by container: the deployment package (Storage Blob Data
/// Contributor on its container), the Functions host's own containers (Storage Blob Data Owner,
/// the host's documented role, on each of them), the host's diagnostic tables (the only role on
/// the whole account); no queue role (HTTP and timer triggers only). And the bounds the platform
/// puts on the instance count.
#[test]
fn the_app_has_the_storage_roles_the_host_uses_and_bounded_instances() {
    let main = main_bicep();
    let assignment = |var: &str| {
        main.split("\nresource ")
            .find(|r| {
                r.contains(&format!("roleDefinitions', {var})"))
                    && r.contains("Microsoft.Authorization/roleAssignments")
            })
            .unwrap_or_else(|| panic!("no assignment of {var}"))
    };
    for (var, id, scope) in [
        ("storageBlobDataContributorRoleId", "ba92f5b4-2d11-453d-a403-e96b0029c9fe", "scope: deploymentContainer\n"),
        ("storageBlobDataOwnerRoleId", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "scope: hostContainers[i]\n"),
        ("storageTableDataContributorRoleId", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "scope: storage\n"),
    ] {
        assert_eq!(var_literal(&main, var), id);
        let a = assignment(var);
        assert!(a.contains(scope) && a.contains("principalId: functionApp.identity.principalId"), "{a}");
        assert_eq!(main.matches(&format!("roleDefinitions', {var})")).count(), 1, "{var} is assigned once");
    }
    assert!(!main.contains("storageQueueDataContributorRoleId"), "no queue role");
    // The host containers exist, and the deployment container is the one Flex deploys from.
    let hosts = block(&main, "var hostContainerNames = ");
    assert!(hosts.contains("'azure-webjobs-hosts'") && hosts.contains("'azure-webjobs-secrets'"), "{hosts}");
    assert!(block(&main, "resource hostContainers ").contains("[for name in hostContainerNames: {"));
    assert!(
        block(&main, "resource functionApp ")
            .contains("value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'")
    );
    let bounds = param_decorators(&main, "maximumInstanceCount");
    assert!(
        bounds.contains(&"@minValue(40)".to_string()) && bounds.contains(&"@maxValue(1000)".to_string()),
        "{bounds:?}"
    );
}

/// The web client reclaims a Janus session after a lost WebSocket: Janus keeps it that long.
#[test]
fn janus_keeps_a_dropped_session_reclaimable() {
    let core = TEMPLATES.iter().find(|(f, _)| *f == "janus.jcfg").unwrap().1;
    let general = &core[core.find("general: {").unwrap()..core.find("certificates:").unwrap()];
    assert!(general.contains("\treclaim_session_timeout = 30\n"), "{general}");
}

/// PUBLIC_BASE_URL (invitation links): the app's default host name, or its custom domain.
#[test]
fn the_public_base_url_is_the_apps_address() {
    let main = main_bicep();
    let settings = app_settings(&main);
    assert_eq!(settings.iter().find(|(k, _)| k == "PUBLIC_BASE_URL").unwrap().1, "publicBaseUrl");
    assert_eq!(
        line_with(&main, "var publicBaseUrl = "),
        "var publicBaseUrl = empty(appCustomDomain) ? 'https://${functionAppName}.azurewebsites.net' : 'https://${appCustomDomain}'"
    );
    assert_eq!(param_default(&main, "appCustomDomain"), "''");
}

/// docs/deploy.md is one procedure: its commands, in order, as written here; every parameter,
/// output and file they use exists; and it says what must be checked on the first deployment.
#[test]
fn the_deployment_procedure_uses_what_exists_in_order() {
    let doc = read("docs/deploy.md");
    let lines = shell_lines(&doc);
    let procedure = [
        "az provider register --namespace Microsoft.App --wait",
        r#"az group create -n "$rg" -l "$loc""#,
        r#"az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/$obj" --headers Content-Type=application/json --body @infra/entra/api-registration.json"#,
        r#"az deployment group create -g "$rg" -n main -f infra/main.bicep -p infra/main.bicepparam -p janusApiSecret="$(openssl rand -hex 32)" janusAdminKey="$(openssl rand -hex 32)" janusTokenSecret="$(openssl rand -hex 32)" janusEventsSecret="$(openssl rand -hex 32)" turnSharedSecret="$(openssl rand -hex 32)""#,
        r#"app=$(out functionAppName)"#,
        r#"az vm run-command invoke -g "$rg" -n "$vm" --command-id RunShellScript --scripts "cloud-init status --wait; systemctl start suroga-janus-setup; sleep 20; systemctl is-active suroga-janus-setup suroga-janus suroga-turn caddy; curl -s http://127.0.0.1:8088/janus/info | head -c 200""#,
        "scripts/package.sh",
        r#"(cd publish && func azure functionapp publish "$app" --custom)"#,
        r#"az rest --method GET --url "https://management.azure.com/subscriptions/$sub/resourceGroups/$rg/providers/Microsoft.Web/sites/$app/config/configreferences/appsettings?api-version=2022-03-01" --query "value[].{setting:name, status:properties.status}" -o table"#,
        r#"curl -s "https://$host/api/v1/health""#,
        r#"az rest --method POST --url "https://management.azure.com/subscriptions/$sub/resourceGroups/$rg/providers/Microsoft.Web/sites/$app/config/configreferences/appsettings/refresh?api-version=2022-03-01""#,
    ];
    let mut last = 0;
    for command in procedure {
        let at = lines.iter().position(|l| l == command).unwrap_or_else(|| panic!("docs/deploy.md lacks:\n{command}"));
        assert!(at >= last, "out of order: {command}");
        last = at;
    }
    // Variables are set before they are used.
    for (var, set) in [
        ("rg", "rg="),
        ("loc", "loc="),
        ("sub", "sub="),
        ("api", "api="),
        ("obj", "obj="),
        ("sp", "sp="),
        ("app", "app="),
        ("host", "host="),
        ("kv", "kv="),
        ("vm", "vm="),
    ] {
        let first_set = lines.iter().position(|l| l.starts_with(set)).unwrap_or_else(|| panic!("${var} is never set"));
        let first_use =
            lines.iter().position(|l| l.contains(&format!("${var}")) || l.contains(&format!("${{{var}}}"))).unwrap();
        assert!(first_set < first_use, "${var} is used before it is set");
    }
    // Parameters passed with -p exist (secrets as @secure), outputs read exist, files exist.
    let main = main_bicep();
    let main_params = params(&main);
    let outputs: BTreeSet<String> = main
        .lines()
        .filter_map(|l| l.strip_prefix("output "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    for line in &lines {
        if line.starts_with("az deployment group create") {
            for word in line.split_whitespace().filter(|w| w.contains('=')) {
                let name = word.split('=').next().unwrap();
                assert!(main_params.contains_key(name), "{name} is not a parameter of infra/main.bicep");
                assert!(param_decorators(&main, name).contains(&"@secure()".to_string()), "{name} must be @secure");
            }
        }
        let mut rest = line.as_str();
        while let Some(i) = rest.find("outputs.") {
            rest = &rest[i + 8..];
            // `outputs.name.value`, or `outputs.[a.value, b.value]`.
            let names: Vec<&str> = match rest.strip_prefix('[') {
                Some(list) => list[..list.find(']').unwrap()].split(',').map(|n| n.trim()).collect(),
                None => vec![rest],
            };
            for n in names {
                let name: String = n.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                if !name.is_empty() {
                    assert!(outputs.contains(&name), "output {name} does not exist");
                }
            }
        }
        if let Some(name) = line.split("$(out ").nth(1).map(|r| r.trim_end_matches(')')) {
            assert!(outputs.contains(name), "output {name} does not exist");
        }
        for word in line.split(|c: char| c.is_whitespace() || c == '@' || c == '(' || c == ')') {
            if word.starts_with("infra/") || word.starts_with("scripts/") {
                assert!(root().join(word).exists(), "{word} does not exist");
            }
        }
    }
    assert!(block(&main, "var janusHosts = ").contains("vm_name: janusVmNames[i]"), "janusHosts.value[0].vm_name");
    // What no test can check is said, with how to check it.
    let unchecked = &doc[doc.find("## What cannot be checked before the first deployment").expect("the section")..];
    for point in [
        "`custom` runtime on Flex Consumption",
        "cloud-init on the chosen image",
        "az bicep build",
        "the secret-scoped roles",
        "through the vault's firewall",
        "storage roles per container",
        "TURN: a browser forced to relay",
    ] {
        assert!(unchecked.contains(point), "the first-deployment checks lack {point}");
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 12, infrastructure: Checkov clean, Key Vault and Cosmos DB behind network rules, each VM
// reading only its own secrets, storage roles per container, the API ↔ Janus channel, TURN.

/// Checkov (PyPI, pinned by scripts/deps under target/tools/checkov) parses every Bicep file of
/// infra/ and fails no check; every check skipped is skipped by a `checkov:skip=<id>: <why>`
/// comment inside the resource it concerns, with its reason, and no such comment is stale. Run in
/// a network namespace of its own: it cannot reach anything (`--skip-download` asks it not to).
#[test]
fn checkov_fails_no_check_and_every_skip_says_why() {
    let checkov = root().join("target/tools/checkov/bin/checkov");
    assert!(checkov.exists(), "no Checkov: run scripts/deps (it installs checkov 3.3.30 under target/tools/checkov)");
    let out = Command::new("unshare")
        .arg("--net")
        .arg(&checkov)
        .args(["-d", "infra", "--framework", "bicep", "--skip-download", "--compact", "-o", "json"])
        .current_dir(root())
        .output()
        .expect("unshare runs (as root, like the rest of the suite)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("Checkov printed no JSON report ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let report = if report.is_array() { report[0].clone() } else { report };
    assert_eq!(report["check_type"], "bicep");
    assert_eq!(report["summary"]["checkov_version"], "3.3.30");
    assert_eq!(report["summary"]["parsing_errors"], 0, "{}", report["results"]["parsing_errors"]);
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} ({}): {}", c["check_id"], c["resource"], c["file_path"], c["check_name"]))
        .collect();
    assert!(failed.is_empty(), "Checkov failed checks:\n{}", failed.join("\n"));

    // Both files were read: resources of each are among those checked.
    let checked: BTreeSet<String> = ["passed_checks", "skipped_checks"]
        .iter()
        .flat_map(|k| report["results"][k].as_array().unwrap().iter())
        .map(|c| c["resource"].as_str().unwrap().to_string())
        .collect();
    for resource in [
        "Microsoft.KeyVault/vaults.keyVault",
        "Microsoft.DocumentDB/databaseAccounts.cosmos",
        "Microsoft.Storage/storageAccounts.storage",
        "Microsoft.Web/sites.functionApp",
        "Microsoft.Network/networkSecurityGroups.nsg",
        "Microsoft.Compute/virtualMachines.vm",
        "Microsoft.Network/networkInterfaces.nic",
    ] {
        assert!(checked.contains(resource), "Checkov did not check {resource}: {checked:?}");
    }

    // Every skip carries its reason, and every skip comment is one Checkov applied.
    let skipped = report["results"]["skipped_checks"].as_array().unwrap();
    for c in skipped {
        let why = c["check_result"]["suppress_comment"].as_str().unwrap_or("");
        assert!(
            why.trim().len() > 30 && why != "No comment provided",
            "{} on {}: no reason",
            c["check_id"],
            c["resource"]
        );
    }
    let mut comments = vec![];
    for file in ["infra/main.bicep", "infra/modules/janus-vm.bicep"] {
        for line in read(file).lines().map(str::trim).filter(|l| l.contains("checkov:skip=")) {
            let rest = line.strip_prefix("// checkov:skip=").unwrap_or_else(|| panic!("{file}: {line}"));
            let (id, why) = rest.split_once(": ").unwrap_or_else(|| panic!("{file}: no reason in {line}"));
            assert!(why.len() > 30, "{file}: {line}");
            comments.push(id.to_string());
        }
    }
    let mut applied: Vec<String> = skipped.iter().map(|c| c["check_id"].as_str().unwrap().to_string()).collect();
    comments.sort();
    applied.sort();
    assert_eq!(comments, applied, "skip comments and the checks Checkov skipped differ");
}

/// The subnets' blocks in the VNet: (janus, functions).
fn subnets(main: &str) -> (&str, &str) {
    let vnet = block(main, "resource vnet ");
    let at = vnet.find("name: 'functions'").unwrap();
    (&vnet[..at], &vnet[at..])
}

/// Key Vault: purge protection, and reachable only from the Function app's and the Janus VMs'
/// subnets (service endpoints and VNet rules; no IP rule, no trusted-service exception).
#[test]
fn key_vault_has_purge_protection_and_answers_only_the_two_subnets() {
    let main = main_bicep();
    let kv = block(&main, "resource keyVault ");
    for setting in [
        "enableRbacAuthorization: true",
        "enableSoftDelete: true",
        "enablePurgeProtection: true",
        "defaultAction: 'Deny'",
        "bypass: 'None'",
        "ipRules: []",
    ] {
        assert!(kv.contains(setting), "Key Vault lacks {setting}");
    }
    let rules = block(&kv[kv.find("virtualNetworkRules:").unwrap()..], "virtualNetworkRules:");
    let ids: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("id: ")).collect();
    assert_eq!(ids, ["appSubnetId", "janusSubnetId"]);
    assert_eq!(rules.matches("ignoreMissingVnetServiceEndpoint: false").count(), 2);
    assert!(kv.contains("dependsOn: [\n    vnet\n  ]"), "the rules need the subnets' service endpoints first");
    let (janus, functions) = subnets(&main);
    assert!(janus.contains("service: 'Microsoft.KeyVault'"));
    assert!(functions.contains("service: 'Microsoft.KeyVault'"));
    // The procedure says which (network rules, not private endpoints) and why.
    let doc = read("docs/deploy.md");
    let access = &doc[doc.find("## Network access").expect("a Network access section")..];
    let access = &access[..access.find("\n## ").unwrap()];
    for point in ["service endpoints", "Why not private endpoints", "Key Vault reference", "Resource Manager"] {
        assert!(access.contains(point), "Network access lacks {point}");
    }
    // Secrets state their content type (Checkov cannot see it on conditional resources).
    for var in vm_secret_vars(&main).iter().chain(std::iter::once(&"alertWebhookSecretName".to_string())) {
        let secret = main
            .split("\nresource ")
            .find(|r| r.contains("'Microsoft.KeyVault/vaults/secrets@") && r.contains(&format!("name: {var}\n")))
            .unwrap_or_else(|| panic!("no secret resource for {var}"));
        assert!(secret.contains("contentType: 'text/plain'"), "{var}");
    }
}

/// Cosmos DB answers only the Function app's subnet (its service endpoint and the account's VNet
/// rule), with Entra ID only.
#[test]
fn cosmos_answers_only_the_app_subnet() {
    let main = main_bicep();
    let cosmos = block(&main, "resource cosmos ");
    assert!(cosmos.contains("isVirtualNetworkFilterEnabled: true"));
    let rules = block(&cosmos[cosmos.find("virtualNetworkRules:").unwrap()..], "virtualNetworkRules:");
    let ids: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("id: ")).collect();
    assert_eq!(ids, ["appSubnetId"]);
    assert!(rules.contains("ignoreMissingVNetServiceEndpoint: false"));
    assert!(!cosmos.contains("ipRules"), "no IP rule");
    assert!(cosmos.contains("disableLocalAuth: true"));
    assert!(cosmos.contains("dependsOn: [\n    vnet\n  ]"));
    let (janus, functions) = subnets(&main);
    assert!(functions.contains("service: 'Microsoft.AzureCosmosDB'"));
    assert!(!janus.contains("Microsoft.AzureCosmosDB"), "the VMs never talk to Cosmos DB");
}

/// Each Janus VM's identity may read exactly the secrets its services read (render-config), each
/// by a role assignment scoped to that secret: nothing else in the vault (not the alert webhook),
/// and no role on the vault itself.
#[test]
fn each_vm_identity_reads_only_its_secrets_each_by_a_role_on_that_secret() {
    let main = main_bicep();
    let vm = vm_bicep();
    let names: BTreeSet<String> = vm_secret_vars(&main).iter().map(|v| var_literal(&main, v)).collect();
    let script = read("infra/vm/render-config.sh");
    let read_by_script: BTreeSet<String> =
        script.split("$(secret ").skip(1).map(|rest| rest[..rest.find(')').unwrap()].to_string()).collect();
    assert_eq!(names, read_by_script, "the VMs may read exactly what render-config reads");
    assert!(!names.contains(&var_literal(&main, "alertWebhookSecretName")));

    let module = block(&main, "module janusVms ");
    assert!(module.contains("secretNames: vmSecretNames\n"));
    let existing = block(&vm, "resource readableSecrets ");
    assert!(existing.contains("existing = [for name in secretNames: {") && existing.contains("parent: keyVault"));
    let assignment = block(&vm, "resource vmReadsSecrets ");
    for part in [
        "[for (name, i) in secretNames: {",
        "scope: readableSecrets[i]\n",
        "roleDefinitions', keyVaultSecretsUserRoleId)",
        "principalId: vm.identity.principalId",
    ] {
        assert!(assignment.contains(part), "vmReadsSecrets lacks {part}");
    }
    assert!(!vm.contains("scope: keyVault\n"), "no VM role on the whole vault");
    assert_eq!(vm.matches("Microsoft.Authorization/roleAssignments@").count(), 2, "vmReadsSecrets and appOperatesVm");
    // The scoped assignments need the secrets: the module waits for every secret resource.
    let depends = block(&module[module.find("dependsOn: [").unwrap()..], "dependsOn: [");
    for var in vm_secret_vars(&main) {
        let secret = main
            .split("\nresource ")
            .find(|r| r.contains("'Microsoft.KeyVault/vaults/secrets@") && r.contains(&format!("name: {var}\n")))
            .unwrap_or_else(|| panic!("no secret resource for {var}"));
        let name = secret.split_whitespace().next().unwrap();
        assert!(depends.lines().any(|l| l.trim() == name), "the VM module does not wait for {name}");
    }
}

/// TURN: coturn on every Janus VM, on a second address of the NIC with its own public IP and name
/// (Caddy keeps 443 of the main address), UDP and TCP on 3478 and TLS on 443, time-limited
/// credentials from a shared secret kept in Key Vault (TURN_SHARED_SECRET for the app), relaying
/// to the Janus on the same VM only; the firewall, Janus, the app's TURN_URLS and the outputs
/// agree with it.
#[test]
fn each_janus_vm_runs_coturn_with_time_limited_credentials_on_its_own_address() {
    let main = main_bicep();
    let vm = vm_bicep();
    let conf = read("infra/vm/turnserver.conf");
    let lines: BTreeSet<&str> = conf.lines().map(str::trim).collect();
    for line in [
        "use-auth-secret",
        "static-auth-secret=@@TURN_SHARED_SECRET@@",
        "realm=__TURN_FQDN__",
        "listening-ip=__TURN_PRIVATE_IP__",
        "relay-ip=__TURN_PRIVATE_IP__",
        "external-ip=__TURN_PUBLIC_IP__/__TURN_PRIVATE_IP__",
        "listening-port=__TURN_PORT__",
        "tls-listening-port=__TURN_TLS_PORT__",
        "cert=/run/suroga-turn/cert.pem",
        "pkey=/run/suroga-turn/key.pem",
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "allowed-peer-ip=__JANUS_PRIVATE_IP__",
        "no-tcp-relay",
        "no-cli",
    ] {
        assert!(lines.contains(line), "turnserver.conf lacks {line}");
    }
    assert!(!conf.contains("lt-cred-mech") && !conf.lines().any(|l| l.starts_with("user=")), "no static users");
    let conf_line = line_with(&vm, "loadTextContent('../vm/turnserver.conf')");
    for replacement in [
        "'__TURN_PRIVATE_IP__', turnPrivateIp)",
        "'__TURN_PUBLIC_IP__', turnPublicIp.properties.ipAddress)",
        "'__TURN_PORT__', string(turnPort))",
        "'__TURN_TLS_PORT__', string(turnTlsPort))",
        "'__TURN_FQDN__', turnFqdn)",
        "'__JANUS_PRIVATE_IP__', privateIp)",
    ] {
        assert!(conf_line.contains(replacement), "turnserver.conf: {replacement}");
    }
    assert_eq!(line_with(&main, "var turnPort = "), "var turnPort = 3478");
    assert_eq!(line_with(&main, "var turnTlsPort = "), "var turnTlsPort = 443");
    let module = block(&main, "module janusVms ");
    for p in
        ["turnPrivateIp: turnPrivateIps[i]", "turnFqdn: turnFqdns[i]", "turnPort: turnPort", "turnTlsPort: turnTlsPort"]
    {
        assert!(module.contains(p), "the VM module gets {p}");
    }

    // Its own address: a second IP configuration with a static public IP and DNS label; the guest
    // adds the address; the TURN addresses (.110 + i) never meet the VMs' (.10 + i, at most 20).
    let nic = block(&vm, "resource nic ");
    let second = &nic[nic.find("name: 'turn'").expect("a 'turn' IP configuration")..];
    assert!(second.contains("privateIPAddress: turnPrivateIp") && second.contains("id: turnPublicIp.id"));
    assert!(second.contains("primary: false"));
    let pip = block(&vm, "resource turnPublicIp ");
    assert!(pip.contains("publicIPAllocationMethod: 'Static'") && pip.contains("domainNameLabel: turnDnsLabel"));
    assert_eq!(line_with(&main, "var turnPrivateIps = ").split('\'').nth(1).unwrap(), "${vnetOctets}.1.${110 + i}");
    assert!(param_decorators(&main, "janusVmCount").contains(&"@maxValue(20)".to_string()));
    let setup = read("infra/vm/setup.sh");
    assert!(
        setup.contains("has_address '__TURN_PRIVATE_IP__'") && setup.contains("ip addr add \"__TURN_PRIVATE_IP__/$2\"")
    );
    assert!(setup.contains("for p in janus coturn caddy curl jq chrony; do"));
    assert!(
        setup.contains("systemctl disable --now janus.service coturn.service"),
        "Debian's own coturn.service stays off"
    );

    // The firewall: TURN on 3478 over UDP and TCP, TURN over TLS under the HTTPS rule (443/tcp).
    let nsg = block(&main, "resource nsg ");
    for (rule, protocol, port) in [
        ("allow-turn-udp", "Udp", "string(turnPort)"),
        ("allow-turn-tcp", "Tcp", "string(turnPort)"),
        ("allow-https-signalling", "Tcp", "'443'"),
    ] {
        let r = &nsg[nsg.find(&format!("name: '{rule}'")).unwrap_or_else(|| panic!("no {rule}"))..];
        let r = &r[..r.find("}\n").unwrap()];
        assert!(
            r.contains(&format!("protocol: '{protocol}'")) && r.contains(&format!("destinationPortRange: {port}\n")),
            "{r}"
        );
        assert!(r.contains("sourceAddressPrefix: 'Internet'") && r.contains("access: 'Allow'"), "{r}");
    }

    // The app: the shared secret from Key Vault, and the URLs of each host's own TURN server.
    assert_eq!(var_literal(&main, "turnSecretName"), "turn-shared-secret");
    let settings = app_settings(&main);
    let value = |n: &str| settings.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(value("TURN_SHARED_SECRET"), "'@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${turnSecretName}/)'");
    assert_eq!(value("TURN_URLS"), "string(turnServers)");
    let servers = block(&main, "var turnServers = ");
    for part in [
        "name: janusVmNames[i]",
        "'stun:${turnFqdns[i]}:${turnPort}'",
        "'turn:${turnFqdns[i]}:${turnPort}?transport=udp'",
        "'turn:${turnFqdns[i]}:${turnPort}?transport=tcp'",
        "'turns:${turnFqdns[i]}:${turnTlsPort}?transport=tcp'",
    ] {
        assert!(servers.contains(part), "TURN_URLS lacks {part}");
    }
    assert!(
        block(&main, "var janusHosts = ").contains("name: janusVmNames[i]"),
        "TURN_URLS names are JANUS_HOSTS names"
    );
    let fqdns = line_with(&main, "var turnFqdns = ");
    assert!(fqdns.contains("'${janusDnsLabels[i]}-turn.${location}.cloudapp.azure.com'"));
    assert!(fqdns.contains("'${prefix}-janus-${i + 1}-turn.${janusDomain}'"));
    assert!(module.contains("turnDnsLabel: '${janusDnsLabels[i]}-turn'"));
    for output in ["janusTurnFqdns", "janusTurnPublicIps", "turnUrls"] {
        assert!(main.contains(&format!("\noutput {output} array = ")), "output {output}");
    }
}

/// Janus announces its private address too (keep_private_host), which the coturn on the same VM
/// relays to, and gathers candidates on the main address only (not the TURN one). Both options
/// are Janus 1.1's: Debian's sample janus.jcfg documents them in its nat section.
#[test]
fn janus_offers_its_private_address_to_the_local_turn_relay() {
    let vm = vm_bicep();
    let mapping = line_with(&vm, "var natMapping = ");
    assert!(mapping.contains("\\n\\tkeep_private_host = true"), "{mapping}");
    assert!(mapping.contains("\\n\\tice_enforce_list = \"${privateIp}\""), "{mapping}");
    let sample = std::fs::read_to_string("/etc/janus/janus.jcfg").expect("Debian's janus package (scripts/deps)");
    let nat = &sample[sample.find("\nnat: {").expect("a nat section")..];
    let nat = &nat[..nat.find("\n}").unwrap()];
    for option in ["nat_1_1_mapping", "keep_private_host", "ice_enforce_list"] {
        assert!(nat.contains(&format!("#{option} = ")), "Janus's nat section does not know {option}");
    }
}

/// The API ↔ Janus channel stays plain HTTP inside the VNet, with a written threat analysis
/// (docs/janus-channel.md) naming what travels on it; the facts it rests on are the files'.
#[test]
fn the_api_to_janus_channel_has_a_threat_analysis_the_files_bear_out() {
    let doc = read("docs/janus-channel.md");
    for what in ["`apisecret`", "`admin_key`", "room `secret`", "`pin`", "token", "8088", "deny-other-vnet-inbound"] {
        assert!(doc.contains(what), "docs/janus-channel.md does not name {what}");
    }
    assert!(read("docs/deploy.md").contains("(janus-channel.md)"), "docs/deploy.md links the analysis");
    let main = main_bicep();
    // The channel: the app calls each VM's private address; nothing else may reach that port.
    assert!(
        block(&main, "var janusHosts = ")
            .contains("backend_url: 'http://${janusPrivateIps[i]}:${janusHttpPort}/janus'")
    );
    let nsg = block(&main, "resource nsg ");
    let deny = &nsg[nsg.find("name: 'deny-other-vnet-inbound'").unwrap()..];
    assert!(deny.contains("access: 'Deny'") && deny.contains("sourceAddressPrefix: 'VirtualNetwork'"));
    // The VNet holds exactly the two subnets, and is peered with nothing.
    let vnet = block(&main, "resource vnet ");
    assert_eq!(vnet.matches("addressPrefix: ").count(), 2);
    assert!(!main.contains("virtualNetworkPeerings") && !main.contains("Microsoft.Network/privateEndpoints"));
}

/// Issue 10: the Janus VMs report their events to the app's events route, authenticated with the
/// deployment's events secret (from Key Vault, never in userData), which the app checks too.
#[test]
fn janus_vms_post_their_events_to_the_app_with_the_events_secret() {
    let main = main_bicep();
    let vm = vm_bicep();
    assert_eq!(var_literal(&main, "janusEventsUrl"), "${publicBaseUrl}/api/v1/janus/events");
    assert!(block(&main, "module janusVms ").contains("eventsUrl: janusEventsUrl"));
    let line = line_with(&vm, "loadTextContent('../janus/janus.eventhandler.sampleevh.jcfg')");
    assert!(line.contains("'{{events_enabled}}', 'true')"), "{line}");
    assert!(line.contains("'{{events_backend}}', eventsUrl)"), "{line}");
    assert!(line.contains("'{{events_secret}}', '@@JANUS_EVENTS_SECRET@@')"), "{line}");
    let template = TEMPLATES.iter().find(|(f, _)| *f == "janus.eventhandler.sampleevh.jcfg").unwrap().1;
    assert!(template.contains(&format!("backend_user = \"{}\"", suroga::api::janus_events::EVENTS_USER)));
    assert!(template.contains("backend_pwd = \"{{events_secret}}\""));
    assert!(template.contains("events = \"plugins\""), "the VideoRoom's events");
    // The route is a function the host forwards.
    assert!(root().join("handlers/v1-janus-events/function.json").is_file());
}
