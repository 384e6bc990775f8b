#!/usr/bin/env bash
# The sandbox's demo credentials, exported the way real secrets would be.
# Real deployments set these variables from their secret store instead.
export SALESFORCE_ACCESS_TOKEN="${SALESFORCE_ACCESS_TOKEN:-sandbox-salesforce-token}"
export VOUCHERIFY_APP_ID="${VOUCHERIFY_APP_ID:-sandbox-app-id}"
export VOUCHERIFY_APP_TOKEN="${VOUCHERIFY_APP_TOKEN:-sandbox-app-token}"
export VOYADO_API_KEY="${VOYADO_API_KEY:-sandbox-voyado-key}"
export EXACT_ACCESS_TOKEN="${EXACT_ACCESS_TOKEN:-sandbox-exact-token}"
export ICOMM_API_KEY="${ICOMM_API_KEY:-sandbox-icomm-key}"
export KATANA_API_KEY="${KATANA_API_KEY:-sandbox-katana-key}"
export SHOP_API_KEY="${SHOP_API_KEY:-sandbox-shop-key}"
# a sandbox on another base port (CUSTSYNC_SANDBOX_PORT): every connector of the packaged
# config pointed at it, at the sandbox's port offsets (a URL set already stays)
if [ -n "${CUSTSYNC_SANDBOX_PORT:-}" ]; then
  _offset=0
  for _system in salesforce voucherify voyado exact icomm katana shop; do
    _var="CUSTSYNC_$(echo "$_system" | tr '[:lower:]' '[:upper:]')_BASE_URL"
    export "$_var=${!_var:-http://127.0.0.1:$((CUSTSYNC_SANDBOX_PORT + _offset))}"
    _offset=$((_offset + 1))
  done
  unset _offset _system _var
fi
