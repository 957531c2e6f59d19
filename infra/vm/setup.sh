#!/bin/sh
# A Suroga Stream Janus host: everything a deployment decides, given to the VM as its userData
# (Azure lets a redeployment change userData; customData, infra/vm/bootstrap.yaml, stays fixed).
# Rendered by infra/modules/janus-vm.bicep: every double-underscore token below is replaced there,
# with files in base64 so their text needs no shell quoting. Run as root by
# suroga-janus-setup.service at every boot (and by `systemctl restart suroga-janus-setup` after a
# redeployment). Idempotent: installs what is missing, adds the TURN address to the NIC, writes
# the files, and restarts Janus, coturn and Caddy when a file changed.
set -eu

log() {
	echo "suroga-janus-setup: $*" >&2
}

missing=""
for p in janus coturn caddy curl jq chrony; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "installing$missing"
	apt-get -o DPkg::Lock::Timeout=600 update -q
	# shellcheck disable=SC2086 # one word per package
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $missing
fi
# The Debian packages enable their own janus.service (on /etc/janus) and coturn.service (on
# /etc/turnserver.conf): they would hold our ports.
systemctl disable --now janus.service coturn.service 2>/dev/null || true

# The TURN address: Azure's DHCP configures the NIC's primary address only. Added with the
# primary address's prefix length, on the interface that holds it.
has_address() {
	ip -4 -o addr show | awk -v ip="$1" '{ split($4, a, "/") } a[1] == ip { found = 1 } END { exit !found }'
}
if ! has_address '__TURN_PRIVATE_IP__'; then
	# shellcheck disable=SC2046 # two words: interface, prefix length
	set -- $(ip -4 -o addr show | awk -v ip='__PRIVATE_IP__' '{ split($4, a, "/") } a[1] == ip { print $2, a[2]; exit }')
	[ $# -eq 2 ] || {
		log "no interface holds __PRIVATE_IP__"
		exit 1
	}
	ip addr add "__TURN_PRIVATE_IP__/$2" dev "$1"
	log "added __TURN_PRIVATE_IP__ to $1"
fi

changed=0
# put PATH MODE BASE64: writes PATH when its content differs, and notes the change.
put() {
	mkdir -p "$(dirname "$1")"
	printf '%s' "$3" | base64 -d >"$1.new"
	chmod "$2" "$1.new"
	if cmp -s "$1.new" "$1"; then
		rm -f "$1.new"
	else
		mv "$1.new" "$1"
		changed=1
		log "updated $1"
	fi
}

put /etc/suroga-janus/janus.jcfg 0644 '__JANUS_JCFG__'
put /etc/suroga-janus/janus.transport.http.jcfg 0644 '__JANUS_HTTP_JCFG__'
put /etc/suroga-janus/janus.transport.websockets.jcfg 0644 '__JANUS_WS_JCFG__'
put /etc/suroga-janus/janus.plugin.videoroom.jcfg 0644 '__JANUS_VIDEOROOM_JCFG__'
put /etc/suroga-janus/janus.eventhandler.sampleevh.jcfg 0644 '__JANUS_EVENTS_JCFG__'
put /etc/suroga-turn/turnserver.conf 0644 '__TURNSERVER_CONF__'
put /usr/local/lib/suroga-janus/render-config 0755 '__RENDER_CONFIG__'
put /etc/systemd/system/suroga-janus.service 0644 '__SERVICE_UNIT__'
put /etc/systemd/system/suroga-turn.service 0644 '__TURN_UNIT__'
put /etc/systemd/system/suroga-turn-cert.service 0644 '__TURN_CERT_SERVICE__'
put /etc/systemd/system/suroga-turn-cert.timer 0644 '__TURN_CERT_TIMER__'
put /etc/caddy/Caddyfile 0644 '__CADDYFILE__'

systemctl daemon-reload
systemctl enable suroga-janus.service suroga-turn.service suroga-turn-cert.timer caddy.service
# --no-block: the units are ordered after this one, which is still running.
if [ "$changed" = 1 ]; then
	systemctl --no-block restart suroga-janus.service suroga-turn.service suroga-turn-cert.timer caddy.service
else
	systemctl --no-block start suroga-janus.service suroga-turn.service suroga-turn-cert.timer caddy.service
fi
