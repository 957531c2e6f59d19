// Parameters of infra/main.bicep: the record of this installation's choices. Keep it with your
// changes and deploy with it every time (docs/deploy.md):
//   az deployment group create -g <rg> -n main -f infra/main.bicep -p infra/main.bicepparam
// Every app setting comes from here: a redeployment replaces them all, so a value tuned by hand
// in the portal is lost on the next deployment; change it here instead.
using './main.bicep'

param prefix = 'suroga'
param location = 'westeurope'

// One Janus VM, burstable (spec 1.1 cost section); raise the count for overlapping sessions.
param janusVmCount = 1
param janusVmSize = 'Standard_B2s'
param janusAcceleratedNetworking = false
param janusHostCapacity = 10
param rtpPortRange = '10000-10200'

param adminUsername = 'suroga'
param sshPublicKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithYourOwnPublicKey operator@example'
// Your office or VPN egress address; '' closes SSH entirely.
param sshSourceCidr = '203.0.113.7/32'

param vnetOctets = '10.40'
param cosmosDatabaseName = 'suroga'

// The Entra ID app registration that protects the API (docs/deploy.md, step 2): v2 access
// tokens, so the issuer ends in /v2.0 and the audience is the registration's client id.
param authIssuer = 'https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0'
param authAudience = '11111111-1111-1111-1111-111111111111'
param authAdminRole = 'admin'

// Object id of the operator (user or group) who may write the Janus secrets in Key Vault.
param operatorPrincipalId = ''

// The Janus secrets: never in this file. Pass them on the FIRST deployment only (docs/deploy.md,
// step 4); left empty, a deployment keeps the values stored in Key Vault.
param janusApiSecret = ''
param janusAdminKey = ''
param janusTokenSecret = ''
param janusEventsSecret = ''

// Operator alerts: true once the webhook is stored (pass alertWebhookUrl once, or set the Key
// Vault secret alert-webhook-url yourself).
param alertWebhookEnabled = false
param alertWebhookUrl = ''

// Integrators' webhooks (Standard Webhooks): true once the URL and the whsec_ secret are stored
// (pass webhookUrl and webhookSecret once, or set the Key Vault secrets webhook-url and
// webhook-secret yourself).
param webhooksEnabled = false
param webhookUrl = ''
param webhookSecret = ''

// Names: '' keeps the Azure ones. A Janus domain avoids Let's Encrypt's limits on the shared
// cloudapp.azure.com domain (docs/deploy.md, "Your own domain for the Janus hosts").
param appCustomDomain = ''
param janusDomain = ''
param acmeEmail = ''

// Tunables (the app's defaults).
param fleetLeadMinutes = 30
param fleetGraceMinutes = 10
param fleetKeepWarmMinutes = 30
param fleetMaxHosts = 0
param fleetOverrunLimitMinutes = 60
param sessionGraceMinutes = 5
param fleetReleaseEarly = true
param webhookMaxAgeMinutes = 1440

param maximumInstanceCount = 40
param instanceMemoryMB = 512
