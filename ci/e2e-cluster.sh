# shellcheck shell=bash
# The cluster part of ci/test-e2e (sourced: uses its ok/bad/expect helpers and its
# $veil, $work, $B, $tpm_ca). Real nodes under QEMU, each with its own swtpm:
#
#   A ("boot")    `veil init`: A creates its LUKS2 state disk with the derived key,
#                 keeps the master secret and reference there, extends PCR 15 and
#                 starts its join service.
#   B ("joiner")  boots with A's join port in fw_cfg and joins through A: activation
#                 both ways, mutual aTLS, its own state disk created with the key A
#                 derived for B's partition.
#   C ("tampered") the changed-cmdline image ($work/changed.raw) tries the same and is
#                 refused by A's join service (PCR 4, 9, 11 differ from the reference).
#   Kubernetes: A runs kubeadm init (veil init streams its stages and writes the admin
#   kubeconfig), B kubeadm join with a single-use token from its ticket; both are
#   Ready with only the baked system images; pods pulled from a registry on the host
#   talk across nodes through a Service's DNS name; B reboots and comes back Ready
#   with its pods' data, without a new kubeadm join.
#   Then A and B stop (a full restart): neither disk holds a key or the secret in the
#   clear; A stays locked until `veil recover` (a wrong secret opens nothing), whose
#   control plane comes back with etcd's data; B comes back by Rejoin through the
#   recovered A; each finds the file written before.
#   Last, A's LUKS headers are damaged: recover says so and nothing is reformatted.
#   D ("sealed") is a one-node cluster whose state disks are LUKS2 with dm-integrity.

# wait_console FILE PATTERN SECONDS: until FILE has a line matching PATTERN (ERE).
wait_console() {
    local file=$1 pattern=$2 deadline=$(($(date +%s) + $3))
    until grep -a -q -E "$pattern" "$file"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 2
    done
}

# no_secrets_on_disk NAME PARTUUID SECRET CLUSTER: the node's disk, converted to raw,
# holds neither its disk key (nor half of it), nor the master secret, nor the marker
# text (inside the encrypted file system) in the clear.
no_secrets_on_disk() {
    local raw=$work/$1-disk.raw rc=0
    qemu-img convert -O raw "$B/nodes/$1/disk.qcow2" "$raw"
    python3 - "$3" "$2" "$raw" "$4" <<'PY' || rc=1
import base64, hashlib, hmac, json, mmap, sys
f = json.load(open(sys.argv[1]))
secret, salt = base64.b64decode(f["secret"]), base64.b64decode(f["salt"])
prk = hmac.new(salt, secret, hashlib.sha256).digest()
okm, t = b"", b""
for i in range(1, 3):
    t = hmac.new(prk, t + b"veil/v1/disk:" + sys.argv[2].encode() + bytes([i]), hashlib.sha256).digest()
    okm += t
with open(sys.argv[3], "rb") as d, mmap.mmap(d.fileno(), 0, access=mmap.ACCESS_READ) as m:
    for name, needle in [("disk key", okm), ("disk key (first half)", okm[:32]),
                         ("master secret", secret), ("marker", sys.argv[4].encode())]:
        if m.find(needle) != -1:
            sys.exit(f"{name} found on the disk in the clear")
PY
    rm -f "$raw"
    return $rc
}

stop_quietly() { "$VEIL_ROOT/ci/boot-node" --stop "$1" 2>&1 | sed 's/^/# /'; }

# The host's attack on a stopped node's state disk: its LUKS2 header rewritten with
# valid checksums (agents/disk/examples/luks2_tamper.rs; ATTACK as named there).
cargo build -q --locked -p veil-disk --example luks2_tamper --manifest-path "$VEIL_ROOT/Cargo.toml"
tamper=${CARGO_TARGET_DIR:-$VEIL_ROOT/target}/debug/examples/luks2_tamper
# state_offset NODE PARTUUID: the state partition's byte offset on the node's disk.
state_offset() {
    qemu-img convert -O raw "$B/nodes/$1/disk.qcow2" "$work/$1-disk.raw"
    echo $(( $(sfdisk --json "$work/$1-disk.raw" | jq --arg u "$2" \
        '.partitiontable.partitions[] | select((.uuid | ascii_downcase) == $u) | .start') * 512 ))
}
# tamper_header NODE PARTUUID ATTACK (the header as it was is kept, for restore_header)
tamper_header() {
    local at
    at=$(state_offset "$1" "$2") && [ "$at" -gt 0 ] || return 1
    dd if="$work/$1-disk.raw" of="$work/$1-header.orig" bs=512 skip=$((at / 512)) count=64 status=none
    "$tamper" "$work/$1-disk.raw" "$at" "$3" || return 1
    # Both header copies: 32 KiB.
    dd if="$work/$1-disk.raw" of="$work/$1-header.bin" bs=512 skip=$((at / 512)) count=64 status=none
    qemu-io -f qcow2 -c "write -s $work/$1-header.bin $at 32768" "$B/nodes/$1/disk.qcow2" >/dev/null
    rm -f "$work/$1-disk.raw"
}
# restore_header NODE PARTUUID: what tamper_header changed, back as it was.
restore_header() {
    local at
    at=$(state_offset "$1" "$2") && rm -f "$work/$1-disk.raw"
    qemu-io -f qcow2 -c "write -s $work/$1-header.orig $at 32768" "$B/nodes/$1/disk.qcow2" >/dev/null
}
# state_digest NODE PARTUUID: SHA-256 of the first 64 MiB of the state partition
# (both headers, the keyslots, the start of the data: what a format or mkfs writes).
state_digest() {
    local at
    at=$(state_offset "$1" "$2")
    # (Partitions start on a sector, not on a MiB: dd in sectors.)
    dd if="$work/$1-disk.raw" bs=512 skip=$((at / 512)) count=131072 status=none | sha256sum | cut -c1-64
    rm -f "$work/$1-disk.raw"
}

# Every node's segment NIC is captured (build/nodes/NAME/segment.pcap, anew at each
# boot), as the cloud's network would see it: the mesh checks read it.
export VEIL_SEGMENT_DUMP=1
boot() { # boot NAME [boot-node options...] IMAGE
    local name=$1; shift
    "$VEIL_ROOT/ci/boot-node" --name "$name" --keep --timeout 400 --retry-emulator-faults 2 "$@"
}

# kubectl from the build (the multicall binary under the name kubectl), against the
# admin kubeconfig `veil init` wrote.
kbin=$("$VEIL_ROOT/ci/build-kubernetes")
kube_version=$(. "$kbin/versions.env"; echo "$KUBERNETES_VERSION")
mkdir -p "$work/bin"
ln -sf "$kbin/veil-k8s" "$work/bin/kubectl"
k() { "$work/bin/kubectl" --kubeconfig "$work/admin.conf" --request-timeout=120s "$@"; }
# node_ready NAME SECONDS: the node is Ready within SECONDS.
node_ready() { k wait --for=condition=Ready "node/$1" --timeout="$2s" >/dev/null 2>&1; }
# system_images NODE: the image names kubelet reports for NODE (tags, not digests).
system_images() {
    k get node "$1" -o json | jq -r '[.status.images[].names[] | select(test("@sha256:") | not)] | sort | .[]'
}
# pod_log_has POD TEXT SECONDS
pod_log_has() {
    local deadline=$(($(date +%s) + $3))
    until k logs "$1" 2>/dev/null | grep -q -- "$2"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 3
    done
}
# kubelet_versions: each node's kubelet version, on one line.
kubelet_versions() { k get nodes -o jsonpath='{.items[*].status.nodeInfo.kubeletVersion}'; }
node_ip() { k get node "$1" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}'; }
export -f k node_ready system_images pod_log_has kubelet_versions node_ip wait_console
export work

# The workloads: an HTTP server pod on the control-plane node behind a ClusterIP
# Service, and a client pod on the worker that calls it by its DNS name (through
# CoreDNS and kube-proxy), counting its own starts in an emptyDir.
workloads() { # workloads IMAGE SERVER_NODE CLIENT_NODE MARKER
    cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  nodeName: $2
  tolerations: [{operator: Exists}]
  containers:
  - name: httpd
    image: $1
    imagePullPolicy: IfNotPresent
    command: [/bin/sh, -c, 'mkdir -p /www && echo "$4 from \$(hostname)" >/www/index.html && exec httpd -f -v -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: $3
  containers:
  - name: client
    image: $1
    imagePullPolicy: IfNotPresent
    command: [/bin/sh, -c, 'n=\$(cat /data/starts 2>/dev/null || echo 0); n=\$((n+1)); echo \$n >/data/starts; echo "start \$n"; while true; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 echo.default.svc.cluster.local 8080 | tail -n 1; sleep 5; done']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
EOF
}

# The mesh, node to node: a page served on the control-plane node's mesh address only,
# fetched by the worker; both pods use their node's network, so the request leaves
# the worker by wg0 and crosses the segment inside WireGuard.
mesh_workloads() { # mesh_workloads IMAGE SERVER_NODE SERVER_MESH_IP CLIENT_NODE MARKER
    cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: mesh-server}
spec:
  nodeName: $2
  hostNetwork: true
  tolerations: [{operator: Exists}]
  containers:
  - name: httpd
    image: $1
    imagePullPolicy: IfNotPresent
    command: [/bin/sh, -c, 'mkdir -p /www && echo "$5 over the mesh" >/www/index.html && exec httpd -f -v -p $3:18080 -h /www']
---
apiVersion: v1
kind: Pod
metadata: {name: mesh-client}
spec:
  nodeName: $4
  hostNetwork: true
  containers:
  - name: nc
    image: $1
    imagePullPolicy: IfNotPresent
    command: [/bin/sh, -c, 'while true; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 $3 18080 | tail -n 1; sleep 5; done']
EOF
}

# nft_reader NODE: a privileged pod in NODE's PID namespace, to read its nftables
# counters with the node's own nft (nsenter into PID 1's namespaces).
nft_reader() {
    cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: nft-reader}
spec:
  nodeName: $1
  hostPID: true
  tolerations: [{operator: Exists}]
  containers:
  - name: nsenter
    image: $image
    imagePullPolicy: IfNotPresent
    securityContext: {privileged: true}
    command: [/bin/sh, -c, 'exec sleep 100000']
EOF
}
# outside_drops: the packets dropped so far by the control-plane node's rules for
# traffic from outside the node to its mesh address and to its pods: "MESH PODS".
outside_drops() {
    local mesh pods
    mesh=$(k exec nft-reader -- busybox nsenter -t 1 -m -n /usr/sbin/nft list chain inet veil-mesh input | grep 'ip daddr .* iifname != ' | grep -o 'packets [0-9]*' | cut -d' ' -f2 || true)
    pods=$(k exec nft-reader -- busybox nsenter -t 1 -m -n /usr/sbin/nft list chain ip veil-pods forward | grep 'ip daddr .* iifname != ' | grep -o 'packets [0-9]*' | cut -d' ' -f2 || true)
    echo "${mesh:-none} ${pods:-none}"
}

# wireguard_both_ways PCAP A B: the segment capture holds WireGuard transport data
# (message type 4: sent only once a handshake completed, so both ends agree on keys
# and preshared key) from A to B and from B to A.
wireguard_both_ways() {
    local pcap=$1 a=$2 b=$3
    # -c 1: the first such packet will do (and no pipe for pipefail to trip on when a
    # busy capture outlasts its reader).
    for dir in "src $a and dst $b" "src $b and dst $a"; do
        [ -n "$(tcpdump -r "$pcap" -n -c 1 "udp and $dir and port 51820 and udp[8] = 4" 2>/dev/null)" ] || return 1
    done
}

cluster_checks() {
    local port secret=$work/master-secret.json cluster partuuid console=$B/nodes/boot/console.log
    local join b_console=$B/nodes/joiner/console.log b_partuuid c_console=$B/nodes/tampered/console.log
    local api marker image token_id
    port=$(cat "$B/nodes/boot/agent-port")
    api="https://127.0.0.1:$(cat "$B/nodes/boot/api-port")"
    marker="veil-e2e-$RANDOM$RANDOM"
    # The registry's CA exists before init (nodes trust it for that registry); the
    # registry itself runs only once the cluster is up: bring-up pulls nothing.
    "$VEIL_ROOT/ci/test-registry" ca >/dev/null
    # A platform policy that would also take SEV-SNP nodes (it requires no hardware, so
    # the QEMU joiners get in): A keeps it, and its join service runs under it.
    echo '{"sevSnp": {"product": "milan", "minTcb": {"snp": 8}}}' >"$work/policy.json"
    : >"$work/exists.conf"
    expect_error "veil init --kubeconfig naming an existing file is refused before anything" "refusing to overwrite" \
        "$veil" init --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --master-secret "$work/unused-secret.json" --init-secret "$work/init-secret.json" --kubeconfig "$work/exists.conf"
    expect "...and it made no master secret and touched nothing on the node" \
        bash -c "[ ! -e '$work/unused-secret.json' ] && ! grep -a -q 'veil-state ' '$console'"
    # Whoever reaches the node first cannot initialize it: it was launched with the
    # operator's init secret hash, and shows it in PCR 14.
    # (veil-ready comes before the TPM is opened; the measurement right after it.)
    expect "the node measured its launch configuration (the init secret's hash) into PCR 14" \
        wait_console "$console" "veil-launch-config measured pcr=14 init-secret-hash=$(jq -r .initSecretHash "$work/init-secret.out")" 180
    "$veil" init-secret new "$work/intruder-init-secret.json" >/dev/null
    expect_error "veil init with another init secret is refused in the handshake (PCR 14 differs)" \
        "launch configuration of this init secret \(PCR 14\)" \
        "$veil" init --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --master-secret "$work/intruder-secret.json" --init-secret "$work/intruder-init-secret.json"
    expect "...and the node was not touched" bash -c "! grep -a -q 'veil-state ' '$console'"
    if ! "$veil" init --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --policy "$work/policy.json" --kubeconfig "$work/admin.conf" --api-server "$api" \
        --registry-ca "10.0.2.2:$(cat "$B/registry/port")=$B/registry/ca.pem" \
        --master-secret "$secret" --init-secret "$work/init-secret.json" --output json >"$work/init.json" 2>"$work/init.err"; then
        bad "veil init: $(tail -n 5 "$work/init.err")"
        return
    fi
    ok "veil init: an attested node takes the master secret and runs kubeadm init"
    cp "$console" "$B/nodes/boot/console.init.log"   # for ci/bench-join (a reboot truncates)
    cp "$work/init.err" "$B/nodes/boot/init.stages"   # for ci/bench-kube
    cluster=$(jq -r .clusterId "$work/init.json")
    expect "veil init: the node created its state disk" quiet jq -e '.stateDiskCreated == true' "$work/init.json"
    expect "veil init: master-secret file has mode 0600" test "$(stat -c %a "$secret")" = 600
    expect "veil init showed kubeadm's stages as they came" \
        bash -c "grep -q 'kubeadm: \[certs\]' '$work/init.err' && grep -q 'kubeadm: \[control-plane\]' '$work/init.err' && grep -q 'system images imported' '$work/init.err'"
    expect "veil init wrote the admin kubeconfig, mode 0600, pointing at the forwarded API port" \
        bash -c "[ \"\$(stat -c %a '$work/admin.conf')\" = 600 ] && grep -q 'server: $api' '$work/admin.conf'"
    expect "node: state disk created, cluster id reported" \
        bash -c "grep -a -q 'veil-state created partuuid=' '$console' && grep -a -q 'veil-cluster $cluster' '$console'"
    partuuid=$(grep -a -o 'veil-state created partuuid=[0-9a-f-]*' "$console" | head -n 1 | cut -d= -f2)
    expect "veil verify --cluster-id: PCR 15 holds the cluster id" \
        quiet "$veil" verify --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" --cluster-id "$cluster"
    expect_error "a second veil init, even the operator's, is refused (PCR 15 set)" "already belongs to a cluster" \
        "$veil" init --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --master-secret "$work/second-secret.json" --init-secret "$work/init-secret.json"
    "$veil" recover --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --master-secret "$secret" >"$work/recover-running.txt" 2>&1 || true
    expect "veil recover with the cluster's own secret on a running node changes nothing" \
        grep -q 'Kubernetes is up already' "$work/recover-running.txt"
    expect "the initialized node starts its join service, under the platform policy given to init" \
        wait_console "$console" 'veil-joinservice-ready port=7444 accepts=tpm,sev-snp' 180
    expect "Kubernetes: the first node is Ready as 'boot', running $kube_version" \
        bash -c "node_ready boot 600 && [ \"\$(k get node boot -o jsonpath='{.status.nodeInfo.kubeletVersion}')\" = '$kube_version' ]"

    # B joins through A over the node segment (A's address there, as B sees it).
    join=$(cat "$B/nodes/boot/segment-ip"):7444
    # Launched to join this cluster only: it checks the service's PCR 15.
    if boot joiner --join "$join" --cluster-id "$cluster" "$B/veil.raw"; then
        if wait_console "$b_console" 'veil-join ok' 600; then
            ok "a second node joins through the first one's join service"
        else
            bad "a second node joins through the first one's join service: $(grep -a 'veil-join' "$b_console" | tail -n 3)"
        fi
        expect "the joiner measured the cluster id it was launched with into PCR 14" \
            wait_console "$b_console" "veil-launch-config measured pcr=14 init-secret-hash=none cluster-id=$cluster" 60
        expect "the joined node created its state disk (by Join) in the same cluster" \
            bash -c "grep -a -q 'veil-state created partuuid=.* by=Join' '$b_console' && grep -a -q 'veil-cluster $cluster' '$b_console'"
        b_partuuid=$(grep -a -o 'veil-state created partuuid=[0-9a-f-]*' "$b_console" | head -n 1 | cut -d= -f2)
        expect "veil verify --cluster-id: the joined node's PCR 15 holds the cluster id" \
            quiet "$veil" verify --node "127.0.0.1:$(cat "$B/nodes/joiner/agent-port")" \
            --measurements "$work/reference.json" "${tpm_ca[@]}" --cluster-id "$cluster"
        expect "the join service logged the admission" grep -a -q 'admitted a new node' "$console"
        expect "the worker ran kubeadm join and is Ready as 'joiner'" bash -c "node_ready joiner 900"
        cp "$b_console" "$B/nodes/joiner/console.join.log"   # for ci/bench-kube
        expect "both nodes run the pinned Kubernetes version" \
            test "$(kubelet_versions)" = "$kube_version $kube_version"
        if wait_console "$console" 'veil-joinservice-token-deleted node=joiner' 300; then
            token_id=$(grep -a -o 'veil-joinservice-token-deleted node=joiner id=[a-z0-9]*' "$console" | head -n 1 | cut -d= -f3)
            expect "the joiner's bootstrap token is gone once it registered (one join per token)" \
                bash -c "k -n kube-system get secret bootstrap-token-$token_id 2>&1 | grep -q NotFound"
        else
            bad "the join service deletes the joiner's bootstrap token once it registered"
        fi
        expect "the worker's wg0 is up at its mesh address with the control-plane node as its peer" \
            wait_console "$b_console" 'veil-mesh up interface=wg0 address=10\.90\.0\.2/16 .*peers=boot@10\.90\.0\.1[[:space:]]*$' 120
        expect "the control-plane node (10.90.0.1) put the worker on its wg0 once it was admitted" \
            bash -c "wait_console '$console' 'veil-mesh up interface=wg0 address=10\.90\.0\.1/16 ' 60 && wait_console '$console' 'veil-mesh peers .*peers=joiner@10\.90\.0\.2[[:space:]]*$' 120"
        expect "Kubernetes rides the mesh: each node's InternalIP is its mesh address" \
            bash -c "[ \"\$(node_ip boot) \$(node_ip joiner)\" = '10.90.0.1 10.90.0.2' ]"
        expect "the join service put both nodes' pod ranges into the roster (from the controller manager)" \
            wait_console "$console" 'veil-joinservice-pod-ranges .*boot=10\.244\.[0-9]+\.0/24,joiner=10\.244\.[0-9]+\.0/24' 300
        expect "each node's wg0 took the other's pod range: those pods go to that node alone" \
            bash -c "wait_console '$b_console' 'veil-mesh (up|peers) .* pods=boot:10\.244\.[0-9]+\.0/24 ' 120 && wait_console '$console' 'veil-mesh peers .* pods=joiner:10\.244\.[0-9]+\.0/24 ' 120"
        expect "both nodes' pods get wg0's MTU (1420 on the 1500-byte segment)" \
            bash -c "grep -a -q 'veil-kube-podcidr boot .* mtu=1420' '$console' && grep -a -q 'veil-kube-podcidr joiner .* mtu=1420' '$b_console'"
        expect "the underlay's rules are on both nodes (segment and peers only WireGuard and aTLS)" \
            bash -c "grep -a -q 'veil-mesh-firewall underlay=.* mesh=10\.90\.0\.0/16' '$console' && grep -a -q 'veil-mesh-firewall underlay=.* mesh=10\.90\.0\.0/16' '$b_console'"
        for n in boot joiner; do
            expect "no system image was pulled: $n's images are exactly the baked set" \
                bash -c "diff <(system_images $n) <(sort '$kbin/images.txt')"
        done
    else
        bad "a second node boots to join"
    fi

    # Workloads come from a registry, as users' do: the host's, over TLS checked
    # against the CA the cluster was given.
    "$VEIL_ROOT/ci/test-registry" start >/dev/null || bad "the test registry starts"
    if image=$("$VEIL_ROOT/ci/test-registry" push); then
        workloads "$image" boot joiner "$marker" | k apply -f - >/dev/null
        if k wait --for=condition=Ready pod/echo pod/client --timeout=600s >/dev/null; then
            ok "pods pulled from the host's registry run on both nodes"
        else
            bad "pods pulled from the host's registry run on both nodes: $(k get pods -o wide 2>&1 | tail -n 3)"
        fi
        expect "a pod on the worker reaches a Service by its DNS name, served by a pod on the control-plane node, and back (kubectl logs)" \
            bash -c "pod_log_has client '$marker from echo' 300"
        expect "kubectl exec into a pod on the worker" \
            bash -c "k exec client -- sh -c 'printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | nc -w 5 echo 8080' | grep -q '$marker'"
        local mesh_marker="veil-mesh-$RANDOM$RANDOM" a_seg b_seg
        a_seg=$(cat "$B/nodes/boot/segment-ip") b_seg=$(cat "$B/nodes/joiner/segment-ip")
        mesh_workloads "$image" boot 10.90.0.1 joiner "$mesh_marker" | k apply -f - >/dev/null
        expect "node to node over the mesh: the worker fetches a page served on the control-plane node's mesh address" \
            bash -c "pod_log_has mesh-client '$mesh_marker over the mesh' 300"
        for n in boot joiner; do
            expect "...and the marker never crossed the segment in the clear ($n's capture)" \
                bash -c "[ -s '$B/nodes/$n/segment.pcap' ] && ! grep -a -q '$mesh_marker' '$B/nodes/$n/segment.pcap'"
        done
        expect "...while WireGuard sessions ran both ways between the two nodes on the segment" \
            wireguard_both_ways "$B/nodes/joiner/segment.pcap" "$a_seg" "$b_seg"
        for n in boot joiner; do
            expect "pod to pod across nodes: the echo marker never crossed the segment in the clear ($n's capture)" \
                bash -c "[ -s '$B/nodes/$n/segment.pcap' ] && ! grep -a -q '$marker' '$B/nodes/$n/segment.pcap'"
        done
        # The underlay carries WireGuard and aTLS only: the worker's kubelet answers on
        # its mesh address, and nothing reaches it on its segment address.
        # (busybox nc fails without input: it gets a line.)
        expect "the control-plane node reaches the worker's kubelet on its mesh address" \
            k exec mesh-server -- sh -c 'echo | nc -w 5 10.90.0.2 10250'
        expect "...and not on its segment address (nftables drops it)" \
            bash -c "! k exec mesh-server -- sh -c 'echo | nc -w 5 $b_seg 10250'"
        # kubelet serves on the node's mesh address only: not even the node itself
        # reaches it on its user-mode NIC's address (a cloud NIC's, elsewhere).
        expect "kubelet serves on the mesh address only: the control-plane node's own 10.0.2.15:10250 is closed" \
            bash -c "! k exec mesh-server -- sh -c 'echo | nc -w 5 10.0.2.15 10250'"
        # A machine on the segment that is no member (a rogue VM in the same VPC): it
        # reaches the ports that attest before they release anything, nothing else,
        # and gets no answer in the clear, not even a reset.
        local probe
        probe=$("$VEIL_ROOT/ci/segment-probe" "$a_seg" 7444 6443 2379 2380 10250 2>&1 | tr '\n' ' ') || true
        expect "a non-member on the segment reaches the control-plane node's join port (aTLS) and not its API server, etcd or kubelet: $probe" \
            test "$probe" = "7444 answers 6443 silent 2379 silent 2380 silent 10250 silent "
        probe=$("$VEIL_ROOT/ci/segment-probe" "$b_seg" 7443 10250 2>&1 | tr '\n' ' ') || true
        expect "...and the worker's agent port (aTLS) but not its kubelet: $probe" \
            test "$probe" = "7443 answers 10250 silent "
        # Whoever routes to a node from outside the underlay (the cloud's host may use
        # any source address): its packets for the node's mesh address (etcd, the
        # API server, kubelet) and for a pod on it are dropped on arrival. The node
        # would answer such a packet by its default route, not on the segment, so the
        # rules' own counters show it: before and after the probe, read on the node
        # (a privileged pod entering its namespaces: the image has no shell).
        local echo_ip before after
        echo_ip=$(k get pod echo -o jsonpath='{.status.podIP}')
        nft_reader boot | k apply -f - >/dev/null
        if k wait --for=condition=Ready pod/nft-reader --timeout=300s >/dev/null && [ -n "$echo_ip" ]; then
            before=$(outside_drops)
            "$VEIL_ROOT/ci/segment-probe" --wait 3 --src 192.0.2.66 --via "$a_seg" 10.90.0.1 2379 6443 10250 >/dev/null || true
            "$VEIL_ROOT/ci/segment-probe" --wait 3 --src 192.0.2.66 --via "$a_seg" "$echo_ip" 8080 >/dev/null || true
            after=$(outside_drops)
            expect "from outside the underlay, the control-plane node's mesh address (etcd, API server, kubelet) and its pod take nothing: drops by the mesh rule and the pod rule $before -> $after" \
                bash -c "read -r m0 p0 <<<'$before'; read -r m1 p1 <<<'$after'; [ \"\$m1\" -ge \$((m0 + 3)) ] && [ \"\$p1\" -gt \"\$p0\" ]"
        else
            bad "a privileged pod reads the control-plane node's rules: $(k get pod nft-reader -o wide 2>&1 | tail -n 1)"
        fi
        k delete pod nft-reader --wait=false >/dev/null 2>&1 || true
        # QEMU's user-mode network sends router advertisements, as a cloud's may: the
        # node takes no IPv6 address or route from them (80-veil.network), and its
        # two NICs (the user-mode one, 10.0.2.15, and the segment's) carry no IPv6 at
        # all. (The pod bridge and its veths keep their link-local addresses: they
        # face only the node's pods.)
        local v6
        if v6=$(k exec mesh-server -- sh -c 'nic=$(ip -o -4 addr | awk "/ 10\.0\.2\.15\// { print \$2 }"); seg=$(ip -o -4 addr | awk "/ 10\.76\./ { print \$2 }"); echo "nics=$nic,$seg"; ip -6 addr show dev $nic; ip -6 addr show dev $seg; ip -6 addr show scope global; ip -6 addr show scope site; ip -6 route show default' 2>&1); then
            expect "the control-plane node took no IPv6 address or route from the network, and its NICs have none: $(tr -s ' \n' ' ' <<<"$v6")" \
                bash -c "grep -q -E '^nics=[a-z0-9]+,[a-z0-9]+$' <<<'$v6' && [ \$(wc -l <<<'$v6') = 1 ]"
        else
            bad "listing the control-plane node's IPv6 addresses: $v6"
        fi
        k delete pod mesh-server mesh-client --wait=false >/dev/null 2>&1 || true
    else
        bad "the test image is pushed to the host's registry"
    fi
    k create configmap before-restart --from-literal=marker="$marker" >/dev/null \
        || bad "a ConfigMap is written before the restarts"

    # The worker reboots: Rejoin gives it its disk key, and kubelet comes back with its
    # credentials and its pods' data from the state disk (no new kubeadm join).
    stop_quietly joiner
    if [ -n "${b_partuuid:-}" ] && boot joiner --reuse-disk --join "$join" "$B/veil.raw"; then
        expect "the rebooted worker rejoins (disk key only)" wait_console "$b_console" 'veil-join ok by=Rejoin' 600
        # Ready again only once kubelet reported after the reboot: wait for its restart.
        expect "...and is Ready again under its name" \
            bash -c "wait_console '$b_console' 'veil-kube-ready' 600 && node_ready joiner 900"
        expect "...without running kubeadm join again" bash -c "! grep -a -q 'kubeadm join' '$b_console'"
        expect "...and is back on the mesh with the same address and peer" \
            wait_console "$b_console" 'veil-mesh up interface=wg0 address=10\.90\.0\.2/16 .*peers=boot@10\.90\.0\.1[[:space:]]*$' 120
        expect "its pod kept its state across the reboot (second start, same emptyDir)" \
            bash -c "pod_log_has client 'start 2' 600"
    else
        bad "the worker reboots"
    fi

    # C runs another UKI (changed cmdline): A refuses it in the handshake; C gets nothing.
    if boot tampered --join "$join" "$work/changed.raw"; then
        if wait_console "$c_console" 'veil-join-failed' 300; then
            ok "a node booted from a tampered image does not get in"
            # The service checked C's evidence in the handshake and refused it; C
            # itself stops too, since the service does not run its UKI.
            expect "the join service refused the tampered node: its PCRs differ from the reference" \
                bash -c "grep -a 'refused a joiner' '$console' | grep -q 'PCR 4'"
            expect "the tampered node got no key: no state disk, no cluster, no token" \
                bash -c "! grep -a -q -E 'veil-state |veil-cluster|veil-join ok|kubeadm' '$c_console'"
            expect "the tampered node never appears in kubectl get nodes" \
                bash -c "! k get nodes -o name | grep -q tampered"
            # On the same segment as the members, it is no peer of theirs: their rules
            # send it nothing but the join service's aTLS answers.
            local c_seg m_segs
            c_seg=$(cat "$B/nodes/tampered/segment-ip") m_segs="src host $(cat "$B/nodes/boot/segment-ip") or src host $(cat "$B/nodes/joiner/segment-ip")"
            expect "no member sent the tampered node anything but the join service's aTLS (its segment capture)" \
                bash -c "[ -s '$B/nodes/tampered/segment.pcap' ] && [ -z \"\$(tcpdump -r '$B/nodes/tampered/segment.pcap' -n 'ip and dst host $c_seg and ($m_segs) and not tcp src port 7444' 2>/dev/null)\" ]"
        else
            bad "a node booted from a tampered image is refused at Join (no answer)"
        fi
    else
        bad "a node boots from the tampered image"
    fi
    stop_quietly tampered

    # The host rewrites B's state disk header (valid checksums; B's key still opens
    # the keyslot): half the volume key. On Rejoin B does not use it, says why, and
    # writes nothing; then the header is put back as it was.
    stop_quietly joiner
    local before
    if [ -n "${b_partuuid:-}" ] && tamper_header joiner "$b_partuuid" small-key \
        && before=$(state_digest joiner "$b_partuuid") \
        && boot joiner --reuse-disk --join "$join" "$B/veil.raw" >/dev/null; then
        expect "on Rejoin a worker refuses a state disk whose volume key the host halved, and says why" \
            wait_console "$b_console" "not the one Veil wrote: keyslot 0's key size is 32" 300
        expect "...and unlocked nothing" bash -c "! grep -a -q 'veil-state unlocked' '$b_console'"
        stop_quietly joiner
        expect "...and wrote nothing to it" test "$(state_digest joiner "$b_partuuid")" = "$before"
        restore_header joiner "$b_partuuid"
    else
        bad "the host's header rewrite (a halved key) is applied to the worker's disk, and it boots"
    fi

    # A full restart: both nodes stop. Their disks hold nothing secret in the clear.
    stop_quietly boot
    expect "no disk key, master secret or plaintext marker on the first node's disk" \
        no_secrets_on_disk boot "$partuuid" "$secret" "$cluster"
    if [ -n "${b_partuuid:-}" ]; then
        expect "no disk key, master secret or plaintext marker on the joined node's disk" \
            no_secrets_on_disk joiner "$b_partuuid" "$secret" "$cluster"
    fi

    # A comes back: its state disk stays locked until recover.
    if ! boot boot --reuse-disk "$B/veil.raw"; then
        bad "node reboots with its state disk"
        return
    fi
    ok "node reboots with its state disk"
    port=$(cat "$B/nodes/boot/agent-port")
    expect "after a reboot nothing is unlocked before recover" bash -c "! grep -a -q 'veil-state ' '$console'"
    expect "...and nothing of Kubernetes runs before it" bash -c "! grep -a -q -E 'veil-kube|containerd|kubelet' '$console'"
    python3 -c "
import base64, json, os
fd = os.open('$work/wrong-secret.json', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, json.dumps({'veilMasterSecret': 1, 'secret': base64.b64encode(os.urandom(32)).decode(),
                         'salt': base64.b64encode(os.urandom(32)).decode()}).encode())"
    expect_error "veil recover with another cluster's secret opens nothing" "does not open" \
        "$veil" recover --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --master-secret "$work/wrong-secret.json"
    if "$veil" recover --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --master-secret "$secret" --output json >"$work/recover.json" 2>"$work/recover.err"; then
        ok "veil recover: the rebooted node takes its master secret again"
        cp "$work/recover.err" "$B/nodes/boot/recover.stages"   # for ci/bench-kube
        expect "veil recover: the state disk was unlocked, not recreated" quiet jq -e '.stateDiskCreated == false' "$work/recover.json"
        expect "the file written at init is back after the reboot" \
            grep -a -q "veil-state-marker $cluster" "$console"
        expect "veil verify --cluster-id after recover" \
            quiet "$veil" verify --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" --cluster-id "$cluster"
        expect "the recovered node starts its join service again, under the policy kept on its disk" \
            wait_console "$console" 'veil-joinservice-ready port=7444 accepts=tpm,sev-snp' 180
        # The API server answers before its authorizer has loaded RBAC: retry a while.
        expect "the control plane is back from the state disk: a ConfigMap written before the restart reads back" \
            bash -c "for _ in \$(seq 1 60); do [ \"\$(k get configmap before-restart -o jsonpath='{.data.marker}' 2>/dev/null)\" = '$marker' ] && exit 0; sleep 5; done; exit 1"
    else
        bad "veil recover: $(tail -n 3 "$work/recover.err")"
    fi

    # B comes back by Rejoin through the recovered A, and its file is back too.
    if [ -n "${b_partuuid:-}" ] && boot joiner --reuse-disk --join "$join" "$B/veil.raw"; then
        if wait_console "$b_console" 'veil-join ok' 600; then
            ok "the joined node rejoins after the restart"
        else
            bad "the joined node rejoins after the restart: $(grep -a 'veil-join' "$b_console" | tail -n 3)"
        fi
        expect "the rejoined node unlocked its state disk (by Rejoin), not a new one" \
            grep -a -q "veil-state unlocked partuuid=$b_partuuid .* by=Rejoin" "$b_console"
        expect "the file written at join is back after the restart" \
            grep -a -q "veil-state-marker $cluster" "$b_console"
        expect "the join service logged the rejoin" grep -a -q 'admitted a rebooted node' "$console"
        expect "after the full restart both nodes are Ready again" \
            bash -c "node_ready boot 900 && node_ready joiner 900"
        expect "after the full restart the mesh is back: same addresses, each the other's peer" \
            bash -c "wait_console '$console' 'veil-mesh (up|peers) .*peers=joiner@10\.90\.0\.2[[:space:]]*$' 120 && wait_console '$b_console' 'veil-mesh up interface=wg0 address=10\.90\.0\.2/16 .*peers=boot@10\.90\.0\.1[[:space:]]*$' 120"
    else
        bad "the joined node reboots"
    fi
    # veil remove: the operator drops the worker for good, at the control-plane node's
    # join port (attested first, as init attests). The control-plane node drops it
    # from its wg0 at once; after a reboot the worker's Rejoin is refused.
    if [ -n "${b_partuuid:-}" ]; then
        local join_port
        join_port=127.0.0.1:$(cat "$B/nodes/boot/join-port")
        expect_error "veil remove: an unknown name is a clear error" "no member is named 'nobody'" \
            "$veil" remove nobody --node "$join_port" --measurements "$work/reference.json" \
            "${tpm_ca[@]}" --master-secret "$secret"
        expect_error "veil remove: another cluster's master secret removes nothing" \
            "is not this cluster's control-plane node" \
            "$veil" remove joiner --node "$join_port" --measurements "$work/reference.json" \
            "${tpm_ca[@]}" --master-secret "$work/wrong-secret.json"
        if "$veil" remove joiner --node "$join_port" --measurements "$work/reference.json" \
            "${tpm_ca[@]}" --master-secret "$secret" >"$work/remove.txt" 2>&1; then
            ok "veil remove joiner: $(cat "$work/remove.txt")"
        else
            bad "veil remove joiner: $(tail -n 3 "$work/remove.txt")"
        fi
        expect "...within seconds the control-plane node's wg0 has no peer" \
            wait_console "$console" 'veil-mesh peers .*removed=1 peers=none' 30
        expect "...and Kubernetes has no Node 'joiner'" \
            bash -c "k get node joiner 2>&1 | grep -q NotFound"
        stop_quietly joiner
        if boot joiner --reuse-disk --join "$join" "$B/veil.raw" >/dev/null; then
            expect "...after its reboot the removed node's Rejoin is refused (its disk key is not given again)" \
                wait_console "$b_console" 'veil-join-failed .*was removed from the cluster' 300
        else
            bad "the removed node reboots"
        fi
        expect "...while the control-plane node keeps working (Ready)" bash -c "node_ready boot 300"
    fi
    "$VEIL_ROOT/ci/test-registry" stop
    stop_quietly joiner
    stop_quietly boot

    # The host rewrites A's state disk header (valid checksums; A's key still opens the
    # keyslot): its data segment to cipher_null. A does not use it, says why, and
    # writes nothing.
    if tamper_header boot "$partuuid" cipher-null && before=$(state_digest boot "$partuuid") \
        && boot boot --reuse-disk "$B/veil.raw" >/dev/null; then
        port=$(cat "$B/nodes/boot/agent-port")
        expect_error "veil recover refuses a state disk whose header the host switched to cipher_null" \
            "not the one Veil wrote: it names cipher_null" \
            "$veil" recover --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
            --master-secret "$secret"
        stop_quietly boot
        expect "...and wrote nothing to it" test "$(state_digest boot "$partuuid")" = "$before"
    else
        bad "the host's header rewrite (cipher_null) is applied to the first node's disk and it boots"
    fi

    # (A header that does not load at all, both copies damaged, is refused the same
    # way and never reformatted: agents/disk/tests/luks.rs, on a plain file.)
}

# A cluster whose state disks are authenticated too (veil init --state-disk-integrity):
# the node formats LUKS2 with dm-integrity (HMAC-SHA256), wipes it so every tag is
# valid, and after a reboot unlocks it again and reads its file back through the tags.
# A small disk (1.5 GiB: ~0.8 GiB of state) keeps the wipe short under emulation.
integrity_checks() {
    local console=$B/nodes/sealed/console.log secret=$work/sealed-secret.json port cluster
    port=$(cat "$B/nodes/sealed/agent-port")
    if ! "$veil" init --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
        --master-secret "$secret" --init-secret "$work/init-secret.json" --state-disk-integrity --output json >"$work/sealed.json" 2>"$work/sealed.err"; then
        bad "veil init --state-disk-integrity: $(grep -v -E '^ +([0-9]+:|at )' "$work/sealed.err" | tail -n 4)"
        return
    fi
    cluster=$(jq -r .clusterId "$work/sealed.json")
    cp "$console" "$B/nodes/sealed/console.init.log"
    expect "veil init --state-disk-integrity: the state disk is LUKS2 with dm-integrity (HMAC-SHA256)" \
        grep -a -q 'veil-state created .* integrity=hmac-sha256' "$console"
    expect "the integrity volume was wiped before use (every tag valid)" \
        grep -a -q 'veil-state-timing .*integrity-wipe=' "$console"
    stop_quietly sealed
    if boot sealed --reuse-disk "$B/veil.raw" >/dev/null; then
        port=$(cat "$B/nodes/sealed/agent-port")
        if quiet "$veil" recover --node "127.0.0.1:$port" --measurements "$work/reference.json" "${tpm_ca[@]}" \
            --master-secret "$secret"; then
            expect "an integrity-protected state disk unlocks after a reboot, its file read back through the tags" \
                bash -c "grep -a -q 'veil-state unlocked .* integrity=hmac-sha256' '$console' && grep -a -q 'veil-state-marker $cluster' '$console'"
        else
            bad "veil recover of an integrity-protected state disk"
        fi
    else
        bad "a node with an integrity-protected state disk reboots"
    fi
    stop_quietly sealed
}

# The nodes must not outlive a failed check or an error exit.
trap 'for n in boot joiner tampered sealed; do "$VEIL_ROOT/ci/boot-node" --stop $n >/dev/null 2>&1 || true; done; "$VEIL_ROOT/ci/test-registry" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# The operator's init secret; the first nodes are launched with its hash.
"$veil" init-secret new --output json "$work/init-secret.json" >"$work/init-secret.out"
init_hash=$(jq -r .initSecretHash "$work/init-secret.out")
if boot boot --init-secret-hash "$init_hash" "$B/veil.raw"; then
    ok "a fresh node boots for cluster bootstrap"
    cluster_checks
else
    bad "a fresh node boots for cluster bootstrap"
fi
for n in boot joiner tampered; do "$VEIL_ROOT/ci/boot-node" --stop $n >/dev/null 2>&1 || true; done
if boot sealed --disk-size 1536M --init-secret-hash "$init_hash" "$B/veil.raw"; then
    integrity_checks
else
    bad "a fresh node boots for an integrity-protected cluster"
fi
"$VEIL_ROOT/ci/boot-node" --stop sealed >/dev/null 2>&1 || true
trap 'rm -rf "$work"' EXIT
rm -f "$work/changed.raw"
