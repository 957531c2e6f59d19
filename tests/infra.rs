//! Offline checks of the Azure deployment files (`infra/`): what can be checked without the
//! Bicep compiler or Azure. These read the files as text; they prove the files agree with the
//! app (template placeholders, container names and partition key, settings the app needs,
//! the VM operator role), not that Azure accepts them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use suroga::config::{Config, CosmosCredentialKind, FleetKind, StoreKind};
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
    let secret_placeholders = ["api_secret", "admin_secret", "token_secret", "admin_key"];

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
    assert_eq!(tokens(&script, "@@"), markers, "render-config fills exactly the module's markers");
    for m in &markers {
        assert!(script.contains(&format!("gsub(/@@{m}@@/, ENVIRON[\"{m}\"])")), "render-config does not fill @@{m}@@");
    }

    // The Key Vault secrets the VMs read are the ones the app's settings reference.
    let main = main_bicep();
    for var in ["apiSecretName", "adminKeyName", "tokenSecretName"] {
        let secret = var_literal(&main, var);
        assert!(script.contains(&format!("$(secret {secret})")), "render-config does not read {secret}");
        assert!(main.contains(&format!("${{keyVaultSecretsUri}}${{{var}}}/)'")), "no app setting references {secret}");
    }
    // Secret values never go to the VM module (its customData).
    assert!(!vm.contains("@secure()"));
    let module = block(&main, "module janusVms ");
    for p in ["janusApiSecret", "janusAdminKey", "janusTokenSecret", "alertWebhookUrl"] {
        assert!(!module.contains(p), "{p} must not be passed to the VM module");
    }
}

#[test]
fn render_config_is_valid_posix_shell() {
    let out = Command::new("sh").arg("-n").arg(root().join("infra/vm/render-config.sh")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_token_of_the_vm_files_is_replaced_on_the_line_that_loads_it() {
    let vm = vm_bicep();
    for file in ["cloud-init.yaml", "Caddyfile", "suroga-janus.service", "render-config.sh"] {
        let text = read(&format!("infra/vm/{file}"));
        let line = line_with(&vm, &format!("loadTextContent('../vm/{file}')"));
        let replaced: BTreeSet<String> =
            tokens(line, "__").into_iter().filter(|t| line.contains(&format!("'__{t}__'"))).collect();
        assert_eq!(replaced, tokens(&text, "__"), "{file}: tokens and replacements differ");
    }
    // Every Janus template is written by cloud-init to the folder the service renders from.
    let cloud_init = read("infra/vm/cloud-init.yaml");
    for (file, _) in TEMPLATES {
        assert!(cloud_init.contains(&format!("path: /etc/suroga-janus/{file}\n")), "cloud-init does not write {file}");
    }
    assert!(cloud_init.starts_with("#cloud-config\n"));
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
    assert!(!rooms.contains("defaultTtl"), "rooms documents must never expire");
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
    // Assigned to the app on each Janus VM, nowhere else.
    let vm = vm_bicep();
    let assignment = block(&vm, "resource appOperatesVm ");
    assert!(assignment.contains("scope: vm\n") && assignment.contains("principalId: functionPrincipalId"));
    assert_eq!(main.matches("vmOperatorRoleGuid)").count(), 1, "the custom role is passed only to the VM module");
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
        "AUTH_ISSUER",
        "AUTH_AUDIENCE",
        "ALERT_WEBHOOK_URL",
    ] {
        assert!(names.contains(required), "app setting {required} is missing");
    }
    // Flex Consumption takes the runtime from functionAppConfig, and keys are off.
    for forbidden in ["FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "AzureWebJobsStorage", "COSMOS_KEY"] {
        assert!(!names.contains(forbidden), "{forbidden} must not be set");
    }
    let value = |n: &str| settings.iter().find(|(k, _)| k == n).unwrap().1.clone();
    for secret in ["JANUS_API_SECRET", "JANUS_ADMIN_KEY", "JANUS_TOKEN_SECRET", "ALERT_WEBHOOK_URL"] {
        assert!(value(secret).starts_with("'@Microsoft.KeyVault(SecretUri="), "{secret} must be a Key Vault reference");
    }

    // The environment the app would see: literals as written; expressions as Azure resolves them.
    let hosts_block = block(&main, "var janusHosts = ");
    let host: serde_json::Map<String, serde_json::Value> = hosts_block
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, _)| {
            let v = if k == "capacity" { serde_json::json!(10) } else { serde_json::json!(format!("sample-{k}")) };
            (k.to_string(), v)
        })
        .collect();
    let env: HashMap<String, String> = settings
        .iter()
        .map(|(k, v)| {
            let resolved = match k.as_str() {
                "COSMOS_ENDPOINT" => "https://suroga.documents.azure.com:443/".to_string(),
                "JANUS_HOSTS" => serde_json::Value::Array(vec![serde_json::Value::Object(host.clone())]).to_string(),
                "AUTH_ISSUER" => "https://login.microsoftonline.com/tenant/v2.0".to_string(),
                "AUTH_AUDIENCE" => "api://suroga".to_string(),
                // A Key Vault reference resolves to the secret itself: here, a webhook URL.
                "ALERT_WEBHOOK_URL" => "https://hooks.example.com/services/T/B/X".to_string(),
                _ if v.starts_with("'@Microsoft.KeyVault(") => "resolved-from-key-vault".to_string(),
                _ if v.starts_with('\'') && v.ends_with('\'') && !v.contains("${") => v.trim_matches('\'').to_string(),
                _ => format!("sample-{k}"),
            };
            (k.clone(), resolved)
        })
        .collect();
    let config = Config::from_map(&env).unwrap_or_else(|e| panic!("the app rejects the Bicep settings: {e}"));
    let StoreKind::Cosmos(cosmos) = &config.store else { panic!("STORE is not cosmos") };
    assert_eq!(cosmos.credential, CosmosCredentialKind::ManagedIdentity);
    assert!(cosmos.key.is_none());
    assert_eq!(config.fleet, FleetKind::Azure);
    let h = &config.hosts[0];
    assert!(h.resource_group.is_some() && h.vm_name.is_some(), "FLEET=azure hosts need resource_group and vm_name");
    assert!(config.auth.issuer.is_some() && config.auth.audience.is_some());
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
