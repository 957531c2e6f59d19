// Suroga Stream on Azure: everything one resource group needs.
//
//   Function app (Flex Consumption, Linux, custom handler `suroga`)  --VNet integration-->  Janus VMs
//     | system-assigned identity                                           ^ NSG: 443/80 (Caddy, TLS;
//     +-- Cosmos DB for NoSQL (serverless, Entra ID only, reachable from the app    TURN over TLS), RTP/UDP,
//     |   subnet only): suroga/rooms, suroga/ops                                    TURN 3478, 8088 from the
//     +-- Storage (AzureWebJobsStorage + deployment container, identity only)      app subnet only, 22 from
//     +-- Key Vault (RBAC, purge protection, reachable from the two subnets only):   one CIDR; coturn on each
//     |   Janus and TURN secrets as Key Vault references                            VM (its own public IP)
//     +-- Application Insights (Entra ID ingestion)
//     +-- custom role "Suroga Janus VM operator" on each Janus VM (read, instance view, start, deallocate)
//     +-- custom role "Suroga VM operation reader" on the resource group (follow start/deallocate)
//
// Deploy:  az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
// Steps, secrets, costs and checks: docs/deploy.md.

targetScope = 'resourceGroup'

// ----- parameters -----

@description('Short lowercase prefix for resource names (letters and digits, starting with a letter).')
@minLength(3)
@maxLength(12)
param prefix string = 'suroga'

@description('Azure region of every resource, as a short name (westeurope, northeurope: spec 1.1). Must offer the Flex Consumption plan; the Janus DNS names are <label>.<location>.cloudapp.azure.com.')
param location string = resourceGroup().location

@description('Number of Janus VMs (spec 1.3: one-to-one sessions; add VMs for overlapping peaks).')
@minValue(1)
@maxValue(20)
param janusVmCount int = 1

@description('Janus VM size. Standard_B2s is the low-cost burstable choice of spec 1.1; Standard_D2s_v5 (with accelerated networking) when CPU credits run out.')
param janusVmSize string = 'Standard_B2s'

@description('Accelerated networking on the Janus NICs (supported by D*s_v5, not by Standard_B2s).')
param janusAcceleratedNetworking bool = false

@description('Concurrent sessions one Janus host takes (the planner never assigns more).')
@minValue(1)
param janusHostCapacity int = 10

@description('Janus RTP/UDP port range (min-max): Janus rtp_port_range and the NSG rule use the same value.')
param rtpPortRange string = '10000-10200'

@description('Admin user name on the Janus VMs.')
param adminUsername string = 'suroga'

@description('SSH public key for the admin user (password login is disabled).')
param sshPublicKey string

@description('CIDR allowed to SSH into the Janus VMs (e.g. your office or VPN egress, 203.0.113.7/32). Empty: no SSH rule at all.')
param sshSourceCidr string = ''

@description('First two octets of the /16 private address space, e.g. 10.40 gives 10.40.0.0/16 with subnets 10.40.1.0/24 (Janus VMs) and 10.40.2.0/24 (Function app).')
param vnetOctets string = '10.40'

@description('Cosmos DB database name (COSMOS_DATABASE).')
param cosmosDatabaseName string = 'suroga'

@description('Entra ID issuer the API accepts tokens from (AUTH_ISSUER): https://login.microsoftonline.com/<tenant-id>/v2.0, for an app registration that issues v2 access tokens (docs/deploy.md).')
@minLength(1)
param authIssuer string

@description('Audience the API expects in tokens (AUTH_AUDIENCE): the API app registration\'s client id, which is the `aud` of v2 access tokens (a comma-separated list is accepted).')
@minLength(1)
param authAudience string

@description('The `roles` claim value that makes a caller an admin (AUTH_ADMIN_ROLE).')
param authAdminRole string = 'admin'

@description('The web client\'s Entra app registration (AUTH_CLIENT_ID): the browser app at /app/ signs in with it through MSAL.js. By default the API registration itself, with a single-page-application redirect URI <PUBLIC_BASE_URL>/app/ (docs/deploy.md).')
@minLength(1)
param webClientId string = authAudience

@description('Operator alerts: the app reads ALERT_WEBHOOK_URL from the Key Vault secret alert-webhook-url (store it once with alertWebhookUrl). Keep it in main.bicepparam: a redeployment without it turns alerts off.')
param alertWebhookEnabled bool = false

@description('Webhook for operator alerts (Slack-compatible), stored in Key Vault as alert-webhook-url when given. Empty: the stored value is left alone.')
@secure()
param alertWebhookUrl string = ''

@description('Integrators\' webhooks: the app reads WEBHOOK_URL and WEBHOOK_SECRET from the Key Vault secrets webhook-url and webhook-secret (store them once with webhookUrl and webhookSecret). Keep it in main.bicepparam: a redeployment without it turns webhooks off.')
param webhooksEnabled bool = false

@description('The integrators\' webhook endpoint (WEBHOOK_URL), stored in Key Vault as webhook-url when given. Empty: the stored value is left alone.')
@secure()
param webhookUrl string = ''

@description('The Standard Webhooks signing secret (WEBHOOK_SECRET, whsec_ + base64 of 24 to 64 bytes), stored in Key Vault as webhook-secret when given. Empty: the stored value is left alone.')
@secure()
param webhookSecret string = ''

// The four Janus secrets and the TURN secret are REQUIRED: the app (JANUS_API_SECRET, JANUS_ADMIN_KEY,
// JANUS_TOKEN_SECRET, JANUS_EVENTS_SECRET with FLEET=azure, TURN_SHARED_SECRET) and every VM read them.
// Pass them on the first deployment (docs/deploy.md, step 4); later deployments may leave them empty,
// which keeps the stored values. The app refuses to start while one is missing and names it; a VM's
// role assignments are scoped to the secrets themselves, so the deployment fails while one is missing.
@description('Janus API secret, stored in Key Vault as janus-api-secret. Required on the first deployment; empty afterwards keeps the stored value.')
@secure()
param janusApiSecret string = ''

@description('VideoRoom admin_key (the app creates and lists rooms with it), stored in Key Vault as janus-admin-key. Required on the first deployment; empty afterwards keeps the stored value.')
@secure()
param janusAdminKey string = ''

@description('Janus token_auth_secret, stored in Key Vault as janus-token-secret. Required on the first deployment; empty afterwards keeps the stored value.')
@secure()
param janusTokenSecret string = ''

@description('coturn static-auth-secret (TURN REST API credentials: the app mints time-limited TURN credentials from it), stored in Key Vault as turn-shared-secret. Required on the first deployment; empty afterwards keeps the stored value.')
@secure()
param turnSharedSecret string = ''

@description('Password of the Janus event handler (basic auth to the app\'s POST /api/v1/janus/events), stored in Key Vault as janus-events-secret. Required on the first deployment; empty afterwards keeps the stored value.')
@secure()
param janusEventsSecret string = ''

@description('Object id of a user or group that may write the Key Vault secrets (Key Vault Secrets Officer). Empty: none.')
param operatorPrincipalId string = ''

@description('Upper bound of Function app instances (Flex Consumption accepts 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of one Function app instance in MB (Flex Consumption sizes; the binary needs little).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Public host name of the app if you bind your own domain to the function app (az functionapp config hostname add), e.g. video.example.org. Empty: the default <app>.azurewebsites.net. Gives PUBLIC_BASE_URL (invitation links).')
param appCustomDomain string = ''

@description('Your own DNS domain for the Janus hosts, e.g. video.example.org gives <prefix>-janus-1.video.example.org (an A record per host: outputs janusFqdns and janusPublicIps). Empty: <label>.<location>.cloudapp.azure.com, which Let\'s Encrypt rate-limits as a shared domain.')
param janusDomain string = ''

@description('Email of the Let\'s Encrypt account the Janus hosts\' Caddy registers (certificate expiry notices). Empty: none.')
param acmeEmail string = ''

// Tunables: app settings come only from here, so a redeployment keeps them (App Service replaces
// the whole set of app settings on every deployment). Defaults are the app's (src/config.rs).
@description('FLEET_LEAD_MINUTES: a Janus host is on this long before its first session.')
@minValue(0)
param fleetLeadMinutes int = 30

@description('FLEET_GRACE_MINUTES: a Janus host stays on this long after its last session.')
@minValue(0)
param fleetGraceMinutes int = 10

@description('FLEET_KEEP_WARM_MINUTES: gaps between a host\'s sessions shorter than this keep it on.')
@minValue(0)
param fleetKeepWarmMinutes int = 30

@description('FLEET_MAX_HOSTS: most Janus hosts on at once. 0: no limit (the setting is left out).')
@minValue(0)
@maxValue(10000)
param fleetMaxHosts int = 0

@description('FLEET_OVERRUN_LIMIT_MINUTES: a session still occupied after its end keeps its host on at most this long.')
@minValue(0)
param fleetOverrunLimitMinutes int = 60

@description('SESSION_GRACE_MINUTES: how long after a session\'s end its participants may stay before they are removed from Janus.')
@minValue(0)
param sessionGraceMinutes int = 5

@description('FLEET_RELEASE_EARLY: deallocate a Janus host on the next tick once its sessions have ended early (everyone left), not at the booked end plus grace.')
param fleetReleaseEarly bool = true

@description('WEBHOOK_MAX_AGE_MINUTES: a webhook event not delivered this long after it was written is dead-lettered.')
@minValue(1)
param webhookMaxAgeMinutes int = 1440

param tags object = {
  app: 'suroga-stream'
}

// ----- names and constants -----

var token = take(uniqueString(resourceGroup().id, prefix), 8)
var functionAppName = '${prefix}-func-${token}'
var planName = '${prefix}-plan-${token}'
var storageAccountName = take('${prefix}st${uniqueString(resourceGroup().id, prefix)}', 24)
var cosmosAccountName = '${prefix}-cosmos-${token}'
var keyVaultName = take('${prefix}-kv-${token}', 24)
var appInsightsName = '${prefix}-appi-${token}'
var logAnalyticsName = '${prefix}-log-${token}'
var vnetName = '${prefix}-vnet'
var nsgName = '${prefix}-janus-nsg'
var deploymentContainerName = 'app-package'
// The containers the Functions host uses in AzureWebJobsStorage (blob leases, timer status, keys).
var hostContainerNames = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

// The app's defaults (src/config.rs): COSMOS_CONTAINER=rooms, COSMOS_OPS_CONTAINER=ops, and the
// store's partition key path (src/store/cosmos.rs PARTITION_KEY_PATH).
var roomsContainerName = 'rooms'
var opsContainerName = 'ops'
var partitionKeyPath = '/pk'

var janusHttpPort = 8088
var janusWsPort = 8188

// coturn on each Janus VM, on a second address of the VM (its own public IP): UDP and TCP on 3478,
// TLS on 443 (Caddy keeps 443 of the VM's main address for HTTPS and WSS).
var turnPort = 3478
var turnTlsPort = 443

var vnetPrefix = '${vnetOctets}.0.0/16'
var janusSubnetPrefix = '${vnetOctets}.1.0/24'
var appSubnetPrefix = '${vnetOctets}.2.0/24'
// Janus ACLs are string prefixes, not CIDRs: loopback (Caddy) and the Function app subnet.
var janusHttpAcl = '127.,${vnetOctets}.2.'

// Secret names in Key Vault; the VMs read exactly vmSecretNames (infra/vm/render-config.sh), each
// VM identity with a role on each of these secrets and on nothing else in the vault.
var apiSecretName = 'janus-api-secret'
var adminKeyName = 'janus-admin-key'
var tokenSecretName = 'janus-token-secret'
var eventsSecretName = 'janus-events-secret'
var turnSecretName = 'turn-shared-secret'
var alertWebhookSecretName = 'alert-webhook-url'
var webhookUrlSecretName = 'webhook-url'
var webhookSecretSecretName = 'webhook-secret'
var vmSecretNames = [
  apiSecretName
  adminKeyName
  tokenSecretName
  eventsSecretName
  turnSecretName
]

// Built-in roles.
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
// Cosmos DB data-plane built-in role: Cosmos DB Built-in Data Contributor.
var cosmosDataContributorRoleId = '00000000-0000-0000-0000-000000000002'

// The Janus hosts, known before deployment: names, static private IPs, DNS names.
var janusVmNames = [for i in range(0, janusVmCount): '${prefix}-janus-${i + 1}']
var janusPrivateIps = [for i in range(0, janusVmCount): '${vnetOctets}.1.${10 + i}']
var janusDnsLabels = [for i in range(0, janusVmCount): '${prefix}-janus-${i + 1}-${token}']
// With janusDomain, the hosts' names are in the operator's domain (an A record each, docs/deploy.md).
var janusFqdns = [for i in range(0, janusVmCount): empty(janusDomain) ? '${janusDnsLabels[i]}.${location}.cloudapp.azure.com' : '${prefix}-janus-${i + 1}.${janusDomain}']
// Each VM's TURN server: a second private address (and public IP) on the same NIC, with its own name.
var turnPrivateIps = [for i in range(0, janusVmCount): '${vnetOctets}.1.${110 + i}']
var turnFqdns = [for i in range(0, janusVmCount): empty(janusDomain) ? '${janusDnsLabels[i]}-turn.${location}.cloudapp.azure.com' : '${prefix}-janus-${i + 1}-turn.${janusDomain}']

// JANUS_HOSTS (src/config.rs HostConfig): the server calls the private IP over the VNet;
// clients get the public HTTPS and WSS URLs that Caddy terminates on each VM.
var janusHosts = [for i in range(0, janusVmCount): {
  name: janusVmNames[i]
  backend_url: 'http://${janusPrivateIps[i]}:${janusHttpPort}/janus'
  public_http_url: 'https://${janusFqdns[i]}/janus'
  public_ws_url: 'wss://${janusFqdns[i]}/ws'
  capacity: janusHostCapacity
  resource_group: resourceGroup().name
  vm_name: janusVmNames[i]
}]

// TURN_URLS: for each Janus host (by its JANUS_HOSTS name), the STUN and TURN URLs of the coturn on
// the same VM. The app hands a session's participants the URLs of the session's host, with
// credentials it mints from TURN_SHARED_SECRET (coturn's REST API scheme: use-auth-secret).
var turnServers = [for i in range(0, janusVmCount): {
  name: janusVmNames[i]
  urls: [
    'stun:${turnFqdns[i]}:${turnPort}'
    'turn:${turnFqdns[i]}:${turnPort}?transport=udp'
    'turn:${turnFqdns[i]}:${turnPort}?transport=tcp'
    'turns:${turnFqdns[i]}:${turnTlsPort}?transport=tcp'
  ]
}]

// ----- network -----

resource nsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: nsgName
  location: location
  tags: tags
  properties: {
    // Spec 2.1/2.3: only what Janus needs. Signalling only over 443 (Caddy: TLS, HTTP API
    // and WebSockets) with 80 for Let's Encrypt; media over the RTP range; TURN on 3478 (UDP and
    // TCP) and over TLS on 443 of each VM's TURN address; the backend port only from the Function
    // app subnet; SSH only from one CIDR; the admin API never. coturn's relay ports need no rule:
    // its only permitted peer is the Janus on the same VM (infra/vm/turnserver.conf).
    securityRules: concat([
      {
        // Caddy on each VM's main address, and TURN over TLS (coturn) on its TURN address.
        name: 'allow-https-signalling'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: janusSubnetPrefix
          destinationPortRange: '443'
        }
      }
      {
        name: 'allow-http-acme'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: janusSubnetPrefix
          destinationPortRange: '80'
        }
      }
      {
        name: 'allow-rtp-media'
        properties: {
          priority: 120
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Udp'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: janusSubnetPrefix
          destinationPortRange: rtpPortRange
        }
      }
      {
        name: 'allow-turn-udp'
        properties: {
          priority: 122
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Udp'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: janusSubnetPrefix
          destinationPortRange: string(turnPort)
        }
      }
      {
        name: 'allow-turn-tcp'
        properties: {
          priority: 124
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: janusSubnetPrefix
          destinationPortRange: string(turnPort)
        }
      }
      {
        name: 'allow-janus-backend-from-functions'
        properties: {
          priority: 130
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: appSubnetPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: janusSubnetPrefix
          destinationPortRange: string(janusHttpPort)
        }
      }
      {
        // The default AllowVnetInBound rule would admit every VNet address on every port.
        name: 'deny-other-vnet-inbound'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ], empty(sshSourceCidr) ? [] : [
      {
        name: 'allow-ssh-admin'
        properties: {
          priority: 140
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: sshSourceCidr
          sourcePortRange: '*'
          destinationAddressPrefix: janusSubnetPrefix
          destinationPortRange: '22'
        }
      }
    ])
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        vnetPrefix
      ]
    }
    subnets: [
      {
        name: 'janus'
        properties: {
          addressPrefix: janusSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          // The VMs read their secrets from Key Vault, whose firewall admits this subnet.
          serviceEndpoints: [
            {
              service: 'Microsoft.KeyVault'
            }
          ]
        }
      }
      {
        // Flex Consumption VNet integration: the subnet is delegated to Microsoft.App/environments.
        name: 'functions'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          // Cosmos DB and Key Vault admit this subnet only (their firewalls' VNet rules).
          serviceEndpoints: [
            {
              service: 'Microsoft.AzureCosmosDB'
            }
            {
              service: 'Microsoft.KeyVault'
            }
          ]
        }
      }
    ]
  }
}

var janusSubnetId = resourceId('Microsoft.Network/virtualNetworks/subnets', vnetName, 'janus')
var appSubnetId = resourceId('Microsoft.Network/virtualNetworks/subnets', vnetName, 'functions')

// ----- monitoring -----

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    // Ingestion only with Entra ID (the app's identity), no instrumentation key.
    DisableLocalAuth: true
  }
}

// ----- storage: AzureWebJobsStorage (timer leases, host state) and the deployment package -----

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the account stays reachable from public networks because Flex Consumption uploads a published package through its platform deployment service, which a storage firewall blocks (docs/deploy.md, "Network access"); no keys exist (shared keys off, no public blob access): only the app's identity reads or writes, through the roles below.
  // checkov:skip=CKV_AZURE_206: LRS on purpose: the account holds only the host's timer leases, keys and diagnostics and the deployment package, all rebuilt or republished from the repository; the data of record is in Cosmos DB.
  // checkov:skip=CKV_AZURE_43: the name is take('<prefix>st<uniqueString>', 24): lower-case letters and digits, 24 characters at most; Checkov cannot evaluate uniqueString.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    // Identity-based access only: the app uses AzureWebJobsStorage__accountName and its identity.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The Functions host's own containers (timer schedules and leases, the primary-host lock, host
// keys), created here so that the app's blob role can be scoped to them instead of the account.
resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for name in hostContainerNames: {
  parent: blobService
  name: name
  properties: {
    publicAccess: 'None'
  }
}]

// ----- Cosmos DB for NoSQL -----
// Serverless: the load is a booking API and a timer every minute, far below what even the
// smallest provisioned throughput (400 RU/s, billed every hour) would carry; serverless bills
// only the request units used and storage. Single region (serverless accounts are). Switch to
// provisioned autoscale if sustained traffic makes RU billing cost more than ~400 RU/s.

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  // checkov:skip=CKV_AZURE_101: network rules instead of a private endpoint (docs/deploy.md, "Network access"): the public endpoint answers only the Function app subnet (service endpoint + VNet rule below); a private endpoint and its DNS zone would be billed every hour for a few requests a minute.
  name: cosmosAccountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    // Entra ID only: no account keys for data, no key-based metadata writes.
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    // Reachable only from the Function app's subnet (its Microsoft.AzureCosmosDB service endpoint).
    publicNetworkAccess: 'Enabled'
    isVirtualNetworkFilterEnabled: true
    virtualNetworkRules: [
      {
        id: appSubnetId
        ignoreMissingVNetServiceEndpoint: false
      }
    ]
  }
  dependsOn: [
    vnet
  ]
}

resource cosmosDatabase 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: cosmos
  name: cosmosDatabaseName
  properties: {
    resource: {
      id: cosmosDatabaseName
    }
  }
}

// Rooms (partition per room) and bookings (partition per UTC day, one guard document per room and
// day: the unit of the transactional batch that keeps bookings from overlapping); see the README's
// document model. TTL on per item, no default expiry: slot hints and fences expire, rooms and
// bookings never.
resource roomsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: cosmosDatabase
  name: roomsContainerName
  properties: {
    resource: {
      id: roomsContainerName
      partitionKey: {
        paths: [
          partitionKeyPath
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: -1
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        excludedPaths: [
          {
            path: '/"_etag"/?'
          }
        ]
        // The paged lists ORDER BY two fields, which Cosmos serves only from a composite index:
        // rooms by (createdAt, roomId), bookings by (start, id), the outbox newest first by
        // (at, eventId) read backwards. The others keep the booking filters cheap (equality on
        // kind/live or kind/owner, then a range on start).
        compositeIndexes: [
          [
            {
              path: '/createdAt'
              order: 'ascending'
            }
            {
              path: '/roomId'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/at'
              order: 'descending'
            }
            {
              path: '/eventId'
              order: 'descending'
            }
          ]
          [
            {
              path: '/start'
              order: 'ascending'
            }
            {
              path: '/id'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/kind'
              order: 'ascending'
            }
            {
              path: '/live'
              order: 'ascending'
            }
            {
              path: '/start'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/kind'
              order: 'ascending'
            }
            {
              path: '/owner'
              order: 'ascending'
            }
            {
              path: '/start'
              order: 'ascending'
            }
          ]
        ]
      }
    }
  }
}

// Idempotency claims, host assignments, markers, state and the operations log. TTL on, with no
// default expiry (-1): only documents carrying their own `ttl` (idempotency claims, 24 h) expire.
resource opsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: cosmosDatabase
  name: opsContainerName
  properties: {
    resource: {
      id: opsContainerName
      partitionKey: {
        paths: [
          partitionKeyPath
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: -1
      // An owner's bookings page by (start, id) in the owner's partition (GET /bookings).
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        excludedPaths: [
          {
            path: '/"_etag"/?'
          }
        ]
        compositeIndexes: [
          [
            {
              path: '/start'
              order: 'ascending'
            }
            {
              path: '/id'
              order: 'ascending'
            }
          ]
        ]
      }
    }
  }
}

// ----- Key Vault (RBAC mode) for the Janus and TURN secrets -----

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_189: network rules instead of a private endpoint (docs/deploy.md, "Network access"): the public endpoint answers only the Function app and Janus subnets (service endpoints + VNet rules below); secrets are written through Azure Resource Manager, which the firewall does not apply to.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // Irreversible: a deleted vault (or secret) stays recoverable for the retention period and
    // nobody can purge it sooner (docs/deploy.md, "Least privilege").
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      // No trusted-service exception: nothing but the two subnets reads the vault. Deployments
      // still write secrets: Microsoft.KeyVault/vaults/secrets goes through Azure Resource
      // Manager, which the firewall does not apply to.
      bypass: 'None'
      ipRules: []
      virtualNetworkRules: [
        {
          id: appSubnetId
          ignoreMissingVnetServiceEndpoint: false
        }
        {
          id: janusSubnetId
          ignoreMissingVnetServiceEndpoint: false
        }
      ]
    }
  }
  dependsOn: [
    vnet
  ]
}

resource apiSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(janusApiSecret)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: apiSecretName
  properties: {
    value: janusApiSecret
    contentType: 'text/plain'
  }
}

resource adminKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(janusAdminKey)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: adminKeyName
  properties: {
    value: janusAdminKey
    contentType: 'text/plain'
  }
}

resource tokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(janusTokenSecret)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: tokenSecretName
  properties: {
    value: janusTokenSecret
    contentType: 'text/plain'
  }
}

resource turnSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(turnSharedSecret)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: turnSecretName
  properties: {
    value: turnSharedSecret
    contentType: 'text/plain'
  }
}

resource eventsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(janusEventsSecret)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: eventsSecretName
  properties: {
    value: janusEventsSecret
    contentType: 'text/plain'
  }
}

resource webhookUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(webhookUrl)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: webhookUrlSecretName
  properties: {
    value: webhookUrl
    contentType: 'text/plain'
  }
}

resource webhookSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(webhookSecret)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: webhookSecretSecretName
  properties: {
    value: webhookSecret
    contentType: 'text/plain'
  }
}

resource alertWebhookSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(alertWebhookUrl)) {
  // checkov:skip=CKV_AZURE_41: no expiry: Key Vault refuses to return an expired secret, which would stop the app and every VM at once; secrets are rotated by hand (docs/deploy.md, "Key Vault references and rotation").
  // checkov:skip=CKV_AZURE_114: contentType is set below; Checkov does not read the properties of a conditional resource (`= if (...)`), the same declaration without the condition passes.
  parent: keyVault
  name: alertWebhookSecretName
  properties: {
    value: alertWebhookUrl
    contentType: 'text/plain'
  }
}

// ----- Function app: Flex Consumption, Linux, custom handler -----

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption keeps at least two always-ready instances per scale group, billed around the clock; this plan scales to zero between requests and the timers (docs/deploy.md, "Costs").
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Versionless Key Vault references: the app resolves the current version, which App Service
// caches for up to 24 h (docs/deploy.md: after rotating a secret, refresh the references).
var keyVaultSecretsUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/'

// The app's public address, for invitation links. The default host name is <app>.azurewebsites.net
// (this template does not opt into unique default host names); it cannot be read from the app
// here, as the app's own settings would then depend on the app.
var publicBaseUrl = empty(appCustomDomain) ? 'https://${functionAppName}.azurewebsites.net' : 'https://${appCustomDomain}'
// Where the Janus VMs' event handler posts (src/api/janus_events.rs): the app's public address.
var janusEventsUrl = '${publicBaseUrl}/api/v1/janus/events'

var appSettings = concat([
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'Authorization=AAD'
  }
  {
    name: 'STORE'
    value: 'cosmos'
  }
  {
    name: 'COSMOS_ENDPOINT'
    value: cosmos.properties.documentEndpoint
  }
  {
    name: 'COSMOS_DATABASE'
    value: cosmosDatabaseName
  }
  {
    name: 'COSMOS_CONTAINER'
    value: roomsContainerName
  }
  {
    name: 'COSMOS_OPS_CONTAINER'
    value: opsContainerName
  }
  {
    name: 'COSMOS_CREDENTIAL'
    value: 'managed-identity'
  }
  {
    // The SDK's preferred region: the account's (only) region, by its display name.
    name: 'COSMOS_REGION'
    value: cosmos.properties.readLocations[0].locationName
  }
  {
    name: 'FLEET'
    value: 'azure'
  }
  {
    name: 'AZURE_SUBSCRIPTION_ID'
    value: subscription().subscriptionId
  }
  {
    name: 'JANUS_HOSTS'
    value: string(janusHosts)
  }
  {
    name: 'JANUS_API_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${apiSecretName}/)'
  }
  {
    name: 'JANUS_ADMIN_KEY'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${adminKeyName}/)'
  }
  {
    name: 'JANUS_TOKEN_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${tokenSecretName}/)'
  }
  {
    // The secret the VMs' coturn shares (use-auth-secret): per-join TURN credentials.
    name: 'TURN_SHARED_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${turnSecretName}/)'
  }
  {
    // [{"name": <JANUS_HOSTS name>, "urls": [stun:, turn: (UDP, TCP), turns: (TLS on 443)]}].
    name: 'TURN_URLS'
    value: string(turnServers)
  }
  {
    name: 'JANUS_EVENTS_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${eventsSecretName}/)'
  }
  {
    name: 'AUTH_ISSUER'
    value: authIssuer
  }
  {
    name: 'AUTH_AUDIENCE'
    value: authAudience
  }
  {
    name: 'AUTH_ADMIN_ROLE'
    value: authAdminRole
  }
  {
    name: 'AUTH_CLIENT_ID'
    value: webClientId
  }
  {
    // Nothing is stored locally with STORE=cosmos and an issuer; a writable place regardless.
    name: 'SUROGA_DATA_DIR'
    value: '/tmp/suroga'
  }
  {
    name: 'PUBLIC_BASE_URL'
    value: publicBaseUrl
  }
  {
    name: 'FLEET_LEAD_MINUTES'
    value: string(fleetLeadMinutes)
  }
  {
    name: 'FLEET_GRACE_MINUTES'
    value: string(fleetGraceMinutes)
  }
  {
    name: 'FLEET_KEEP_WARM_MINUTES'
    value: string(fleetKeepWarmMinutes)
  }
  {
    name: 'FLEET_OVERRUN_LIMIT_MINUTES'
    value: string(fleetOverrunLimitMinutes)
  }
  {
    name: 'SESSION_GRACE_MINUTES'
    value: string(sessionGraceMinutes)
  }
  {
    name: 'FLEET_RELEASE_EARLY'
    value: string(fleetReleaseEarly)
  }
  {
    name: 'WEBHOOK_MAX_AGE_MINUTES'
    value: string(webhookMaxAgeMinutes)
  }
], fleetMaxHosts == 0 ? [] : [
  {
    name: 'FLEET_MAX_HOSTS'
    value: string(fleetMaxHosts)
  }
], alertWebhookEnabled ? [
  {
    name: 'ALERT_WEBHOOK_URL'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${alertWebhookSecretName}/)'
  }
] : [], webhooksEnabled ? [
  {
    name: 'WEBHOOK_URL'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${webhookUrlSecretName}/)'
  }
  {
    name: 'WEBHOOK_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${keyVaultSecretsUri}${webhookSecretSecretName}/)'
  }
] : [])

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the API is public by design (browsers and mobile apps call it); every route but the health check and invitation lookups requires an Entra ID token.
  // checkov:skip=CKV_AZURE_17: clients authenticate with bearer tokens, not client certificates (browsers of invited guests hold none), and Flex Consumption offers no client-certificate mode.
  // checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP endpoint, and ARM rejects siteConfig.ftpsState for Flex Consumption sites (error 51021); code reaches the app only through its deployment container.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; a minimum instance count is billed as always-ready capacity around the clock (docs/deploy.md, "Costs").
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no platform health check (siteConfig.healthCheckPath); GET /api/v1/health is the documented check (docs/deploy.md, step 8).
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Outbound into the VNet: the app reaches Janus on the VMs' private IPs.
    virtualNetworkSubnetId: appSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    deploymentContainer
    vnet
  ]
}

// ----- the app's identity: least privilege -----

// Storage, container by container: the deployment package (Flex Consumption reads it, and writes
// it when Core Tools publishes, with the app's identity), and the host's own containers (Storage
// Blob Data Owner is the host's documented role for AzureWebJobsStorage, here scoped to them).
resource appDeploymentPackage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deploymentContainer.id, functionApp.id, storageBlobDataContributorRoleId)
  scope: deploymentContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appHostContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in hostContainerNames: {
  name: guid(storage.id, name, functionApp.id, storageBlobDataOwnerRoleId)
  scope: hostContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// The host's diagnostic events go to tables it creates by month (AzureFunctionsDiagnosticEvents
// <yyyymm>), so this role cannot be narrower than the account. No queue role: the app has HTTP
// and timer triggers only.
resource appStorageTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, storageTableDataContributorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributorRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appReadsSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, functionApp.id, keyVaultSecretsUserRoleId)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appPublishesTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionApp.id, monitoringMetricsPublisherRoleId)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Data-plane role, scoped to the one database.
resource appCosmosData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos.id, functionApp.id, cosmosDataContributorRoleId)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributorRoleId}'
    principalId: functionApp.identity.principalId
    scope: '${cosmos.id}/dbs/${cosmosDatabaseName}'
  }
  dependsOn: [
    cosmosDatabase
  ]
}

resource operatorWritesSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(keyVault.id, operatorPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: operatorPrincipalId
  }
}

// Exactly what the fleet's power control calls (src/fleet/azure.rs): nothing that creates,
// changes or deletes a VM. Assignable in this resource group; assigned on each Janus VM.
var vmOperatorRoleGuid = guid(resourceGroup().id, 'suroga-janus-vm-operator')

resource vmOperatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: vmOperatorRoleGuid
  properties: {
    // Role names are unique per tenant: the subscription and the resource group keep two
    // deployments apart (the same group name may exist in two subscriptions of one tenant).
    roleName: 'Suroga Janus VM operator (${subscription().subscriptionId}/${resourceGroup().name})'
    description: 'Read, start and deallocate the Suroga Stream Janus VMs.'
    type: 'customRole'
    permissions: [
      {
        actions: [
          'Microsoft.Compute/virtualMachines/read'
          'Microsoft.Compute/virtualMachines/instanceView/read'
          'Microsoft.Compute/virtualMachines/start/action'
          'Microsoft.Compute/virtualMachines/deallocate/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// Following start and deallocate: ARM answers them with an Azure-AsyncOperation URL
// (/subscriptions/<id>/providers/Microsoft.Compute/locations/<region>/operations/<id>), whose
// status is readable only with Microsoft.Compute/locations/operations/read at resource-group
// scope ("Track asynchronous Azure operations", permissions). Reading it grants nothing else.
var vmOperationReaderRoleGuid = guid(resourceGroup().id, 'suroga-vm-operation-reader')

resource vmOperationReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: vmOperationReaderRoleGuid
  properties: {
    roleName: 'Suroga VM operation reader (${subscription().subscriptionId}/${resourceGroup().name})'
    description: 'Read the status of the Suroga Stream Janus VMs\' start and deallocate operations.'
    type: 'customRole'
    permissions: [
      {
        actions: [
          'Microsoft.Compute/locations/operations/read'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// At resource-group scope (this template's scope: no `scope` property).
resource appReadsVmOperations 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, functionApp.id, vmOperationReaderRoleGuid)
  properties: {
    // The subscription form of a custom role's id, as for the VM operator role.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', vmOperationReaderRoleGuid)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
  dependsOn: [
    vmOperationReaderRole
  ]
}

// ----- the Janus VMs -----

module janusVms 'modules/janus-vm.bicep' = [for i in range(0, janusVmCount): {
  name: '${prefix}-janus-vm-${i + 1}'
  params: {
    location: location
    vmName: janusVmNames[i]
    vmSize: janusVmSize
    acceleratedNetworking: janusAcceleratedNetworking
    adminUsername: adminUsername
    sshPublicKey: sshPublicKey
    subnetId: janusSubnetId
    privateIp: janusPrivateIps[i]
    dnsLabel: janusDnsLabels[i]
    fqdn: janusFqdns[i]
    acmeEmail: acmeEmail
    keyVaultName: keyVault.name
    secretNames: vmSecretNames
    turnPrivateIp: turnPrivateIps[i]
    turnDnsLabel: '${janusDnsLabels[i]}-turn'
    turnFqdn: turnFqdns[i]
    turnPort: turnPort
    turnTlsPort: turnTlsPort
    rtpPortRange: rtpPortRange
    janusHttpPort: janusHttpPort
    janusWsPort: janusWsPort
    janusHttpAcl: janusHttpAcl
    eventsUrl: janusEventsUrl
    functionPrincipalId: functionApp.identity.principalId
    vmOperatorRoleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', vmOperatorRoleGuid)
    tags: tags
  }
  // The VMs' role assignments are scoped to the secrets themselves, which must exist first.
  dependsOn: [
    vmOperatorRole
    vnet
    apiSecret
    adminKey
    tokenSecret
    eventsSecret
    turnSecret
  ]
}]

// ----- outputs -----

@description('Function app name: `cd publish && func azure functionapp publish <this> --custom`.')
output functionAppName string = functionApp.name

@description('Host name of the API: https://<this>/api/v1/health.')
output functionAppHostName string = functionApp.properties.defaultHostName

@description('Cosmos DB endpoint (COSMOS_ENDPOINT).')
output cosmosEndpoint string = cosmos.properties.documentEndpoint

@description('Key Vault holding janus-api-secret, janus-admin-key, janus-token-secret, janus-events-secret, turn-shared-secret.')
output keyVaultName string = keyVault.name

@description('The JANUS_HOSTS value the app was given.')
output janusHosts array = janusHosts

@description('Public IP of each Janus VM (static).')
output janusPublicIps array = [for i in range(0, janusVmCount): janusVms[i].outputs.publicIpAddress]

@description('Public name of each Janus VM (in janusDomain when set: give each an A record to its janusPublicIps entry).')
output janusFqdns array = janusFqdns

@description('Public IP of each Janus VM\'s TURN server (static, a second address of the VM).')
output janusTurnPublicIps array = [for i in range(0, janusVmCount): janusVms[i].outputs.turnPublicIpAddress]

@description('Public name of each Janus VM\'s TURN server (in janusDomain when set: give each an A record to its janusTurnPublicIps entry).')
output janusTurnFqdns array = turnFqdns

@description('The TURN_URLS value the app was given.')
output turnUrls array = turnServers

@description('PUBLIC_BASE_URL, the address in invitation links.')
output publicBaseUrl string = publicBaseUrl

@description('Whether the app sends operator alerts (alertWebhookEnabled).')
output alertsEnabled bool = alertWebhookEnabled
