// One Janus host for Suroga Stream: a Debian 12 VM with a static public IP and DNS label, a NIC
// with a static private IP, its own managed identity (to read its secrets from Key Vault at every
// start, each secret by its own role assignment), Janus and Caddy configured from the same
// templates the tests use (infra/janus/*.jcfg), and coturn (TURN for clients whose networks block
// UDP) on a second address of the NIC with its own public IP and name: TURN over TLS needs port
// 443, which Caddy holds on the main address for HTTPS and WSS.
//
// What the VM is given, in three parts:
// - customData, infra/vm/bootstrap.yaml, FIXED. Azure refuses any change of customData on an
//   existing VM (PropertyChangeNotAllowed), so it depends on no parameter: it only installs a
//   unit that runs the VM's userData at every boot.
// - userData, infra/vm/setup.sh with every deployment choice filled in (the Janus and Caddy
//   configuration, the service units). Azure lets a redeployment change it; the VM applies it at
//   its next boot (or `systemctl restart suroga-janus-setup`).
// - the secrets: never in customData or userData (Azure keeps both with the VM model). Here the
//   secret placeholders become @@...@@ markers; infra/vm/render-config.sh replaces them at every
//   start of suroga-janus.service with the secrets read from Key Vault, into a tmpfs.
//
// Access: the Function app's identity gets the custom "Suroga Janus VM operator" role on this
// VM only (read, instance view, start, deallocate), not on the whole resource group.

@description('Azure region (the resource group\'s by default).')
param location string

@description('VM name; also the Janus server_name and the host name in JANUS_HOSTS.')
param vmName string

@description('VM size.')
param vmSize string

@description('Accelerated networking (D*s_v5 and other sizes that support it; not Standard_B2s).')
param acceleratedNetworking bool

@description('Admin user for SSH.')
param adminUsername string

@description('SSH public key of the admin user (password login is disabled).')
param sshPublicKey string

@description('Resource id of the subnet for the NIC.')
param subnetId string

@description('Static private IP of the NIC (inside the subnet); the Function app reaches Janus there.')
param privateIp string

@description('DNS label of the public IP: <label>.<region>.cloudapp.azure.com.')
param dnsLabel string

@description('Public FQDN the TLS certificate is issued for: <dnsLabel>.<region>.cloudapp.azure.com, or a name in the operator\'s own domain whose DNS record points at this VM\'s public IP.')
param fqdn string

@description('Email of the ACME (Let\'s Encrypt) account Caddy registers, for expiry notices. Empty: no account email.')
param acmeEmail string = ''

@description('Name of the Key Vault holding the secrets the VM reads.')
param keyVaultName string

@description('The Key Vault secrets this VM reads (infra/vm/render-config.sh): Key Vault Secrets User on each of them, on nothing else in the vault.')
param secretNames array

@description('Static private IP of the TURN server: a second address on the NIC, in the same subnet.')
param turnPrivateIp string

@description('DNS label of the TURN public IP: <label>.<region>.cloudapp.azure.com.')
param turnDnsLabel string

@description('Public FQDN of the TURN server (its TLS certificate is issued for it): <turnDnsLabel>.<region>.cloudapp.azure.com, or a name in the operator\'s own domain pointing at the TURN public IP.')
param turnFqdn string

@description('coturn port for STUN and TURN over UDP and TCP.')
param turnPort int

@description('coturn port for TURN over TLS (443: allowed by networks that block everything else).')
param turnTlsPort int

@description('Janus RTP port range, min-max (the NSG opens the same range).')
param rtpPortRange string

@description('Janus HTTP API port (backend, and behind Caddy for clients).')
param janusHttpPort int

@description('Janus WebSocket port (behind Caddy only).')
param janusWsPort int

@description('Janus HTTP ACL: comma-separated address prefixes allowed to call the HTTP API.')
param janusHttpAcl string

@description('Where Janus\'s event handler posts (the app\'s POST /api/v1/janus/events, over HTTPS).')
param eventsUrl string

@description('Principal id of the Function app\'s managed identity.')
param functionPrincipalId string

@description('Role definition id (subscription form) of the custom "Suroga Janus VM operator" role.')
param vmOperatorRoleDefinitionId string

param tags object = {}

// Built-in role: Key Vault Secrets User (read secret values).
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

var keyVaultUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/'

// Where the service finds its files on the VM (see infra/vm/suroga-janus.service).
var runtimeFolder = '/run/suroga-janus'
var modulesFolder = '${runtimeFolder}/modules'

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource readableSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for name in secretNames: {
  parent: keyVault
  name: name
}]

resource publicIp 'Microsoft.Network/publicIPAddresses@2023-11-01' = {
  name: '${vmName}-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    // Static: the address and the DNS name survive deallocation, so clients' URLs and the
    // TLS certificate stay valid between sessions.
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
    dnsSettings: {
      domainNameLabel: dnsLabel
    }
  }
}

// The TURN server's own address: port 443 there is coturn's (TURN over TLS), not Caddy's.
resource turnPublicIp 'Microsoft.Network/publicIPAddresses@2023-11-01' = {
  name: '${vmName}-turn-ip'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
    dnsSettings: {
      domainNameLabel: turnDnsLabel
    }
  }
}

resource nic 'Microsoft.Network/networkInterfaces@2023-11-01' = {
  name: '${vmName}-nic'
  location: location
  tags: tags
  properties: {
    enableAcceleratedNetworking: acceleratedNetworking
    ipConfigurations: [
      {
        name: 'ipconfig1'
        properties: {
          subnet: {
            id: subnetId
          }
          // Static: the backend URL in JANUS_HOSTS is this address.
          privateIPAllocationMethod: 'Static'
          privateIPAddress: privateIp
          publicIPAddress: {
            id: publicIp.id
          }
          primary: true
        }
      }
      {
        // The guest adds this address itself (infra/vm/setup.sh): Azure's DHCP hands out the
        // primary one only.
        name: 'turn'
        properties: {
          subnet: {
            id: subnetId
          }
          privateIPAllocationMethod: 'Static'
          privateIPAddress: turnPrivateIp
          publicIPAddress: {
            id: turnPublicIp.id
          }
          primary: false
        }
      }
    ]
  }
}

// --- Janus configuration: the repository's templates, rendered here (non-secret values) ---
// One line per template holds every replacement for that file (tests/infra.rs checks the line
// against the template's placeholders). Secret placeholders become markers for render-config.
// Janus binds media to the private address (`interface`) and announces the public one
// (nat_1_1_mapping, spec 2.2), because Azure maps the public IP 1:1 onto the NIC. It keeps the
// private host candidate too (keep_private_host): the coturn on this VM relays to Janus's private
// address, its only permitted peer. ICE uses the main address only, not the TURN one. Janus needs
// no STUN or TURN server of its own: its public address is known and not behind a NAT it must
// discover.
var natAnchor = 'nat: {'
var natMapping = 'nat: {\n\tnat_1_1_mapping = "${publicIp.properties.ipAddress}"\n\tkeep_private_host = true\n\tice_enforce_list = "${privateIp}"'
var janusJcfg = replace(replace(replace(replace(replace(replace(replace(replace(replace(loadTextContent('../janus/janus.jcfg'), '{{configs_folder}}', runtimeFolder), '{{modules_folder}}', modulesFolder), '{{interface}}', privateIp), '{{server_name}}', vmName), '{{rtp_port_range}}', rtpPortRange), '{{api_secret}}', '@@JANUS_API_SECRET@@'), '{{admin_secret}}', '@@JANUS_ADMIN_SECRET@@'), '{{token_secret}}', '@@JANUS_TOKEN_SECRET@@'), natAnchor, natMapping)
// HTTP API on all addresses: the backend (Function app subnet) calls the private IP, Caddy
// calls 127.0.0.1; the Janus ACL and the NSG admit nobody else. Admin API: loopback only.
var janusHttpJcfg = replace(replace(replace(replace(replace(replace(loadTextContent('../janus/janus.transport.http.jcfg'), '{{http_ip}}', '0.0.0.0'), '{{http_port}}', string(janusHttpPort)), '{{http_acl}}', janusHttpAcl), '{{admin_ip}}', '127.0.0.1'), '{{admin_port}}', '7088'), '{{admin_acl}}', '127.')
// WebSockets: loopback only; clients come through Caddy (wss://<fqdn>/ws).
var janusWsJcfg = replace(replace(replace(loadTextContent('../janus/janus.transport.websockets.jcfg'), '{{ws_ip}}', '127.0.0.1'), '{{ws_port}}', string(janusWsPort)), '{{ws_acl}}', '127.')
var janusVideoroomJcfg = replace(loadTextContent('../janus/janus.plugin.videoroom.jcfg'), '{{admin_key}}', '@@JANUS_ADMIN_KEY@@')
// Janus reports joins and departures to the app (session records, webhooks, early release),
// with basic auth whose password is the Key Vault secret janus-events-secret.
var janusEventsJcfg = replace(replace(replace(loadTextContent('../janus/janus.eventhandler.sampleevh.jcfg'), '{{events_enabled}}', 'true'), '{{events_backend}}', eventsUrl), '{{events_secret}}', '@@JANUS_EVENTS_SECRET@@')

var serviceUnit = replace(loadTextContent('../vm/suroga-janus.service'), '__KEY_VAULT_URI__', keyVaultUri)
// Caddy's global options block comes first in the Caddyfile, and only when there is an option.
var caddyGlobalOptions = empty(acmeEmail) ? '' : '{\n\temail ${acmeEmail}\n}\n'
var caddyfile = replace(replace(replace(replace(replace(replace(replace(loadTextContent('../vm/Caddyfile'), '__FQDN__', fqdn), '__HTTP_PORT__', string(janusHttpPort)), '__WS_PORT__', string(janusWsPort)), '__GLOBAL_OPTIONS__', caddyGlobalOptions), '__PRIVATE_IP__', privateIp), '__TURN_PRIVATE_IP__', turnPrivateIp), '__TURN_FQDN__', turnFqdn)
var renderConfig = loadTextContent('../vm/render-config.sh')
// coturn: its configuration (the shared secret stays a marker for render-config), its unit, and
// the hourly hand-over of the certificate Caddy renews.
var turnserverConf = replace(replace(replace(replace(replace(replace(loadTextContent('../vm/turnserver.conf'), '__TURN_PRIVATE_IP__', turnPrivateIp), '__TURN_PUBLIC_IP__', turnPublicIp.properties.ipAddress), '__TURN_PORT__', string(turnPort)), '__TURN_TLS_PORT__', string(turnTlsPort)), '__TURN_FQDN__', turnFqdn), '__JANUS_PRIVATE_IP__', privateIp)
var turnUnit = replace(replace(loadTextContent('../vm/suroga-turn.service'), '__KEY_VAULT_URI__', keyVaultUri), '__TURN_FQDN__', turnFqdn)
var turnCertService = loadTextContent('../vm/suroga-turn-cert.service')
var turnCertTimer = loadTextContent('../vm/suroga-turn-cert.timer')

var setupScript = replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(loadTextContent('../vm/setup.sh'), '__JANUS_JCFG__', base64(janusJcfg)), '__JANUS_HTTP_JCFG__', base64(janusHttpJcfg)), '__JANUS_WS_JCFG__', base64(janusWsJcfg)), '__JANUS_VIDEOROOM_JCFG__', base64(janusVideoroomJcfg)), '__JANUS_EVENTS_JCFG__', base64(janusEventsJcfg)), '__RENDER_CONFIG__', base64(renderConfig)), '__SERVICE_UNIT__', base64(serviceUnit)), '__CADDYFILE__', base64(caddyfile)), '__TURNSERVER_CONF__', base64(turnserverConf)), '__TURN_UNIT__', base64(turnUnit)), '__TURN_CERT_SERVICE__', base64(turnCertService)), '__TURN_CERT_TIMER__', base64(turnCertTimer)), '__PRIVATE_IP__', privateIp), '__TURN_PRIVATE_IP__', turnPrivateIp)

resource vm 'Microsoft.Compute/virtualMachines@2024-07-01' = {
  // checkov:skip=CKV_AZURE_50: the VM agent's extensions stay allowed: the procedure checks and restarts the services with Run Command (docs/deploy.md, step 6), which is one.
  // checkov:skip=CKV_AZURE_97: no encryption at host: the OS disk is a managed disk (encrypted at rest by the platform) and holds no secret (they live in tmpfs); encryption at host needs a subscription feature registration and a deallocated VM to change.
  // checkov:skip=CKV_AZURE_151: the same setting as CKV_AZURE_97 (encryptionAtHost), see there.
  name: vmName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    hardwareProfile: {
      vmSize: vmSize
    }
    osProfile: {
      computerName: vmName
      adminUsername: adminUsername
      // Fixed for the VM's life: the file alone, no parameter (see the top of this file).
      customData: loadFileAsBase64('../vm/bootstrap.yaml')
      linuxConfiguration: {
        disablePasswordAuthentication: true
        ssh: {
          publicKeys: [
            {
              path: '/home/${adminUsername}/.ssh/authorized_keys'
              keyData: sshPublicKey
            }
          ]
        }
      }
    }
    storageProfile: {
      imageReference: {
        publisher: 'Debian'
        offer: 'debian-12'
        sku: '12-gen2'
        version: 'latest'
      }
      osDisk: {
        createOption: 'FromImage'
        deleteOption: 'Delete'
        managedDisk: {
          storageAccountType: 'StandardSSD_LRS'
        }
      }
    }
    // Everything a deployment decides; updatable, applied by the VM at its next boot.
    userData: base64(setupScript)
    networkProfile: {
      networkInterfaces: [
        {
          id: nic.id
          properties: {
            primary: true
          }
        }
      ]
    }
  }
}

// The VM reads its secrets at every start of suroga-janus.service and suroga-turn.service: one
// role assignment per secret, scoped to that secret, so it can read no other secret in the vault
// (the app's alert webhook, for one).
resource vmReadsSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in secretNames: {
  name: guid(keyVault.id, name, vm.id, keyVaultSecretsUserRoleId)
  scope: readableSecrets[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: vm.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// The Function app may read, start and deallocate this VM, and nothing else on it.
resource appOperatesVm 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vm.id, functionPrincipalId, vmOperatorRoleDefinitionId)
  scope: vm
  properties: {
    roleDefinitionId: vmOperatorRoleDefinitionId
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

@description('Public IP address of the VM (static).')
output publicIpAddress string = publicIp.properties.ipAddress

@description('Public FQDN of the VM.')
output fqdn string = publicIp.properties.dnsSettings.fqdn

@description('Public IP address of the VM\'s TURN server (static).')
output turnPublicIpAddress string = turnPublicIp.properties.ipAddress
