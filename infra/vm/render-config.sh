#!/bin/sh
# Renders a service's configuration for one start, with the secrets read from Key Vault:
#   render-config janus      suroga-janus.service (ExecStartPre): Janus's *.jcfg
#   render-config turn       suroga-turn.service (ExecStartPre, as root): coturn's turnserver.conf
#                            and the TLS certificate Caddy obtained for the TURN name
#   render-config turn-cert  suroga-turn.service (ExecReload, as root): a renewed certificate
#
# The non-secret values were filled in at deployment (Bicep) into /etc/suroga-janus and
# /etc/suroga-turn; the secrets stand there as @@...@@ markers. This script reads the secrets from
# Key Vault with the VM's managed identity (which may read exactly these secrets, each by its own
# role assignment) and writes the final files into the service's runtime directory (a tmpfs,
# mode 0700, removed when the service stops), so secrets never reach the disk nor the VM's
# customData or userData, and a secret rotated in Key Vault reaches the service at its next start
# (the app starts the VM before every session).
set -eu

mode="${1:-janus}"
# The service's runtime directory: /run/suroga-janus, /run/suroga-turn.
out="${RUNTIME_DIRECTORY:-/run/suroga-${mode%-cert}}"

fail() {
	echo "suroga-$mode: $*" >&2
	exit 1
}

# A token for Key Vault from the instance metadata service (the VM's system-assigned identity).
vault_token() {
	vault="${SUROGA_KEY_VAULT_URI:?SUROGA_KEY_VAULT_URI is not set}"
	vault="${vault%/}"
	token=$(curl -fsS --max-time 10 -H 'Metadata: true' \
		'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net' |
		jq -er .access_token) || fail "no managed-identity token (is the identity's role assignment in place yet?)"
}

# Prints one secret's value. The bearer token goes to curl on stdin (--config -), never on a
# command line other users could read. Values are limited to characters that neither Janus's
# config syntax, coturn's nor the awk replacement below can misread (openssl rand -hex / -base64
# fit).
secret() {
	v=$(printf 'header = "Authorization: Bearer %s"\n' "$token" |
		curl -fsS --max-time 10 --config - "$vault/secrets/$1?api-version=7.4" | jq -er .value) ||
		fail "cannot read secret $1 from $vault"
	case "$v" in
	'' | *[!A-Za-z0-9._~+/=-]*) fail "secret $1 is empty or holds a character other than A-Z a-z 0-9 . _ ~ + / = -" ;;
	esac
	printf '%s' "$v"
}

# Fails when a rendered file still holds a marker.
no_marker_left() {
	if grep -l '@@' "$@" >/dev/null 2>&1; then
		fail "a secret marker is left in $(grep -l '@@' "$@" | tr '\n' ' ')"
	fi
}

# The newest certificate Caddy holds for the TURN name (whichever ACME issuer gave it), or nothing.
caddy_certificate() {
	name="${SUROGA_TURN_FQDN:?SUROGA_TURN_FQDN is not set}"
	# shellcheck disable=SC2012 # names are FQDNs under Caddy's own store
	ls -t /var/lib/caddy/.local/share/caddy/certificates/*/"$name"/"$name".crt 2>/dev/null | head -n 1
}

# Copies Caddy's certificate and key for the TURN name to coturn's runtime directory.
copy_certificate() {
	install -o turnserver -g turnserver -m 0600 "$1" "$out/cert.pem"
	install -o turnserver -g turnserver -m 0600 "${1%.crt}.key" "$out/key.pem"
}

case "$mode" in
janus)
	vault_token
	api_secret=$(secret janus-api-secret)
	admin_key=$(secret janus-admin-key)
	token_secret=$(secret janus-token-secret)
	events_secret=$(secret janus-events-secret)
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
	for f in /etc/suroga-janus/*.jcfg; do
		JANUS_API_SECRET="$api_secret" JANUS_ADMIN_SECRET="$admin_secret" \
			JANUS_TOKEN_SECRET="$token_secret" JANUS_ADMIN_KEY="$admin_key" \
			JANUS_EVENTS_SECRET="$events_secret" \
			awk '{
				gsub(/@@JANUS_API_SECRET@@/, ENVIRON["JANUS_API_SECRET"])
				gsub(/@@JANUS_ADMIN_SECRET@@/, ENVIRON["JANUS_ADMIN_SECRET"])
				gsub(/@@JANUS_TOKEN_SECRET@@/, ENVIRON["JANUS_TOKEN_SECRET"])
				gsub(/@@JANUS_ADMIN_KEY@@/, ENVIRON["JANUS_ADMIN_KEY"])
				gsub(/@@JANUS_EVENTS_SECRET@@/, ENVIRON["JANUS_EVENTS_SECRET"])
				print
			}' "$f" >"$out/$(basename "$f")"
	done
	no_marker_left "$out"/*.jcfg
	;;
turn)
	vault_token
	turn_secret=$(secret turn-shared-secret)
	umask 077
	TURN_SHARED_SECRET="$turn_secret" awk '{
		gsub(/@@TURN_SHARED_SECRET@@/, ENVIRON["TURN_SHARED_SECRET"])
		print
	}' /etc/suroga-turn/turnserver.conf >"$out/turnserver.conf"
	no_marker_left "$out/turnserver.conf"
	crt=$(caddy_certificate)
	if [ -n "$crt" ] && [ -f "${crt%.crt}.key" ]; then
		copy_certificate "$crt"
	else
		# A new VM: Caddy obtains the certificate once the TURN name resolves to this VM.
		echo "suroga-turn: no certificate for $SUROGA_TURN_FQDN yet; TURN over TLS is off until Caddy has one" >&2
		echo no-tls >>"$out/turnserver.conf"
	fi
	chown turnserver:turnserver "$out/turnserver.conf"
	;;
turn-cert)
	crt=$(caddy_certificate)
	[ -n "$crt" ] && [ -f "${crt%.crt}.key" ] || exit 0
	if grep -qx no-tls "$out/turnserver.conf"; then
		# TLS was off at start: only a restart opens the TLS listener (a new VM, before sessions).
		systemctl --no-block restart suroga-turn.service
	elif ! cmp -s "$crt" "$out/cert.pem"; then
		copy_certificate "$crt"
		# coturn reloads its certificates on SIGUSR2 and keeps every relay.
		kill -USR2 "${MAINPID:?MAINPID is not set}"
	fi
	;;
*)
	fail "usage: render-config janus|turn|turn-cert"
	;;
esac
