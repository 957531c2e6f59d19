#!/bin/sh
# Renders Janus's configuration for one start of suroga-janus.service (ExecStartPre).
#
# The non-secret values were filled in at deployment (Bicep) into /etc/suroga-janus/*.jcfg; the
# secrets stand there as @@...@@ markers. This script reads the secrets from Key Vault with the VM's
# managed identity and writes the final files into the service's runtime directory (a tmpfs,
# mode 0700, removed when the service stops), so secrets never reach the disk nor the VM's
# customData or userData, and a secret rotated in Key Vault reaches Janus at the next start (the
# app starts the VM before every session).
set -eu

out="${RUNTIME_DIRECTORY:-/run/suroga-janus}"
staged=/etc/suroga-janus
vault="${SUROGA_KEY_VAULT_URI:?SUROGA_KEY_VAULT_URI is not set}"
vault="${vault%/}"

fail() {
	echo "suroga-janus: $*" >&2
	exit 1
}

# A token for Key Vault from the instance metadata service (the VM's system-assigned identity).
token=$(curl -fsS --max-time 10 -H 'Metadata: true' \
	'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net' |
	jq -er .access_token) || fail "no managed-identity token (is the identity's role assignment in place yet?)"

# Prints one secret's value. The bearer token goes to curl on stdin (--config -), never on a
# command line other users could read. Values are limited to characters that neither Janus's
# config syntax nor the awk replacement below can misread (openssl rand -hex / -base64 fit).
secret() {
	v=$(printf 'header = "Authorization: Bearer %s"\n' "$token" |
		curl -fsS --max-time 10 --config - "$vault/secrets/$1?api-version=7.4" | jq -er .value) ||
		fail "cannot read secret $1 from $vault"
	case "$v" in
	'' | *[!A-Za-z0-9._~+/=-]*) fail "secret $1 is empty or holds a character other than A-Z a-z 0-9 . _ ~ + / = -" ;;
	esac
	printf '%s' "$v"
}

api_secret=$(secret janus-api-secret)
admin_key=$(secret janus-admin-key)
token_secret=$(secret janus-token-secret)
# The admin API listens on 127.0.0.1 only: a fresh secret per start is enough, and root can
# read it from the rendered janus.jcfg when debugging.
admin_secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

# Only the modules the service uses, as in local hosts (see src/fleet/local.rs).
lib="/usr/lib/$(uname -m)-linux-gnu/janus"
for kind in plugins transports events loggers; do
	mkdir -p "$out/modules/$kind"
done
ln -sf "$lib/plugins/libjanus_videoroom.so" "$out/modules/plugins/"
ln -sf "$lib/transports/libjanus_http.so" "$out/modules/transports/"
ln -sf "$lib/transports/libjanus_websockets.so" "$out/modules/transports/"
ln -sf "$lib/events/libjanus_sampleevh.so" "$out/modules/events/"

umask 077
for f in "$staged"/*.jcfg; do
	JANUS_API_SECRET="$api_secret" JANUS_ADMIN_SECRET="$admin_secret" \
		JANUS_TOKEN_SECRET="$token_secret" JANUS_ADMIN_KEY="$admin_key" \
		awk '{
			gsub(/@@JANUS_API_SECRET@@/, ENVIRON["JANUS_API_SECRET"])
			gsub(/@@JANUS_ADMIN_SECRET@@/, ENVIRON["JANUS_ADMIN_SECRET"])
			gsub(/@@JANUS_TOKEN_SECRET@@/, ENVIRON["JANUS_TOKEN_SECRET"])
			gsub(/@@JANUS_ADMIN_KEY@@/, ENVIRON["JANUS_ADMIN_KEY"])
			print
		}' "$f" >"$out/$(basename "$f")"
done

if grep -l '@@' "$out"/*.jcfg >/dev/null 2>&1; then
	fail "a secret marker is left in $(grep -l '@@' "$out"/*.jcfg | tr '\n' ' ')"
fi
