#!/bin/sh
# Start Mosquitto with the service accounts taken from the environment (compose refuses to start
# without them). The password file lives in a volume: sensor accounts added there with
# `mosquitto_passwd` survive restarts, service accounts are re-written on every start (rotation =
# change the secret, restart). The health-check account gets a fresh random password each start.
set -eu
PASSWD_FILE="${MOSQUITTO_PASSWD_FILE:-/mosquitto/passwd/passwd}"
CONF_FILE="${MOSQUITTO_CONF_FILE:-/mosquitto/config/mosquitto.conf}"
HEALTH_FILE="$(dirname "$PASSWD_FILE")/healthcheck.pw"

umask 077
mkdir -p "$(dirname "$PASSWD_FILE")"
touch "$PASSWD_FILE"

account() {  # account NAME PASSWORD (an empty password removes the account)
  if [ -n "$2" ]; then
    mosquitto_passwd -b "$PASSWD_FILE" "$1" "$2"
  else
    mosquitto_passwd -D "$PASSWD_FILE" "$1" >/dev/null 2>&1 || true
  fi
}

account ioc-bridge "${MQTT_BRIDGE_PASSWORD:?set MQTT_BRIDGE_PASSWORD}"
account ioc-worker "${MQTT_WORKER_PASSWORD:?set MQTT_WORKER_PASSWORD}"
account operator "${MQTT_OPERATOR_PASSWORD:?set MQTT_OPERATOR_PASSWORD}"
account ioc-sim "${MQTT_SIM_PASSWORD:-}"  # only the "sim" profile needs it

tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 >"$HEALTH_FILE"
account healthcheck "$(cat "$HEALTH_FILE")"

# Hashes are secrets too: owner-only, whoever created the file. Mosquitto drops root for its
# own user, which must be that owner.
chmod 600 "$PASSWD_FILE" "$HEALTH_FILE"
if id mosquitto >/dev/null 2>&1; then
  chown mosquitto "$PASSWD_FILE" "$HEALTH_FILE"
fi
exec mosquitto -c "$CONF_FILE"
