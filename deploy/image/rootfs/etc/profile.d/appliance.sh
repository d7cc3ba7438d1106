# So that `appliance detect ...`, `appliance config check` or `appliance tpus` in a shell use the
# device's config and venv, as deploy/provision.sh sets it up.
export APPLIANCE_CONFIG=/etc/appliance/config.toml
export PATH="$PATH:/opt/appliance/.venv/bin"
