// Example parameters for infra/main.bicep. Copy, fill in, deploy:
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
// Secrets are not kept here: set them in Key Vault (docs/deploy.md), or pass them once on the
// command line (-p janusApiSecret=$(openssl rand -hex 32) ...).
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

// The Entra ID app registration that protects the API.
param authIssuer = 'https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0'
param authAudience = 'api://suroga-stream'
param authAdminRole = 'admin'

// Object id of the operator (user or group) who may write the Janus secrets in Key Vault.
param operatorPrincipalId = ''

param maximumInstanceCount = 40
param instanceMemoryMB = 512
