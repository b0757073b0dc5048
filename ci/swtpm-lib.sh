# swtpm helpers: a local CA of our own (never the system-wide /var/lib/swtpm-localca)
# and TPM state provisioned with an EK certificate from it, so even a local node's
# TPM has a certificate chain for the verifier to check.
# shellcheck shell=bash

# local_ca DIR: creates (once) the CA config in DIR; swtpm_localca makes the root CA
# (DIR/swtpm-localca-rootca-cert.pem) and the intermediate (DIR/issuercert.pem) that
# signs EK certificates on first use.
local_ca() {
    local d=$1
    mkdir -p "$d"
    [ -f "$d/swtpm_setup.conf" ] && return 0
    printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
        "$d" "$d" "$d" "$d" >"$d/swtpm-localca.conf"
    printf -- '--platform-manufacturer Veil\n--platform-version 2.1\n--platform-model qemu\n' >"$d/swtpm-localca.options"
    printf 'create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s/swtpm-localca.conf\ncreate_certs_tool_options = %s/swtpm-localca.options\nactive_pcr_banks = sha256\n' \
        "$d" "$d" >"$d/swtpm_setup.conf"
}

# provision_tpm STATE_DIR CA_DIR: a fresh TPM 2.0 with an RSA-2048 EK and its
# certificate (NV 0x01c00002) signed by the local CA.
provision_tpm() {
    local state=$1 ca=$2
    need_cmd swtpm_setup "run ci/setup-host (installs swtpm-tools)"
    mkdir -p "$state"
    swtpm_setup --tpm2 --tpmstate "$state" --create-ek-cert --create-platform-cert \
        --lock-nvram --overwrite --config "$ca/swtpm_setup.conf" --logfile "$state/setup.log" \
        >/dev/null 2>&1 || { cat "$state/setup.log" >&2; die "swtpm_setup failed for $state"; }
}
