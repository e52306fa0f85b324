# Sourced by ci/bench, ci/bench-network and ci/prof/*: a local cluster of nodes, a DeFS mount
# over it, and the helpers their measurements share.
#
# start_cluster starts $1 `defs node` processes (binary $2) on
# 127.0.0.1 with data dirs under $3 (made with `defs init` unless they have an identity already,
# so a caller may prepare their config.toml), waits until each has written DIR/addrs, and sets
#   CLUSTER_PIDS  the node processes (stop_cluster kills them)
#   BOOT          --bootstrap arguments naming every node
# CLUSTER_LISTEN (default /ip4/127.0.0.1/tcp/0) is the nodes' listen addresses, space-separated;
# CLUSTER_PROTO (default tcp) picks the address BOOT names: tcp or quic-v1.
start_cluster() {
    local nodes=$1 bin=$2 dir=$3 i first a listen=()
    CLUSTER_PIDS=()
    BOOT=()
    for a in ${CLUSTER_LISTEN:-/ip4/127.0.0.1/tcp/0}; do listen+=(--listen "$a"); done
    for i in $(seq 0 $((nodes - 1))); do
        [ -e "$dir/n$i/identity.key" ] ||
            "$bin" init --data-dir "$dir/n$i" --difficulty 0 >/dev/null
    done
    "$bin" node --data-dir "$dir/n0" "${listen[@]}" --no-mdns 2>"$dir/n0.log" &
    CLUSTER_PIDS+=($!)
    until [ -s "$dir/n0/addrs" ]; do sleep 0.1; done
    first=$(cluster_addr "$dir/n0")
    for i in $(seq 1 $((nodes - 1))); do
        "$bin" node --data-dir "$dir/n$i" "${listen[@]}" --no-mdns \
            --bootstrap "$first" 2>"$dir/n$i.log" &
        CLUSTER_PIDS+=($!)
    done
    for i in $(seq 0 $((nodes - 1))); do
        until [ -s "$dir/n$i/addrs" ]; do sleep 0.1; done
        BOOT+=(--bootstrap "$(cluster_addr "$dir/n$i")")
    done
}

# The address of the node with data dir $1 for CLUSTER_PROTO (tcp unless set).
cluster_addr() {
    local a
    until a=$(grep -m1 "/${CLUSTER_PROTO:-tcp}/" "$1/addrs"); do sleep 0.1; done
    echo "$a"
}

stop_cluster() {
    local p
    for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# A tree of $2 files of 1-16 KiB of random data at $1, in directories of 100.
make_tree() {
    local dir=$1 files=$2 i
    mkdir -p "$dir"
    for ((i = 0; i < files; i++)); do
        ((i % 100 == 0)) && mkdir -p "$dir/d$((i / 100))"
        head -c $(((i % 16 + 1) * 1024)) /dev/urandom >"$dir/d$((i / 100))/f$i"
    done
}

# The CPU time, in ticks of 10 ms, that the processes $@ have used.
cpu_ticks() {
    local t=0 p f
    for p in "$@"; do
        read -ra f <"/proc/$p/stat"
        t=$((t + f[13] + f[14]))
    done
    echo "$t"
}

# Mounts DeFS (binaries in $1) at $2/defs with data dir $2/data over the cluster, making the
# mount's identity first when $2/data has none; further arguments go to defs-mount. The
# identity has difficulty 0 like the nodes' (fast to create): a mount of the default
# difficulty asks as much of its peers and would refuse them. The mount's node listens on
# loopback only, like the cluster's, unless the arguments name its --listen addresses.
mount_defs() {
    local bin=$1 work=$2 listen=(--listen /ip4/127.0.0.1/tcp/0)
    shift 2
    [[ " $* " == *" --listen "* ]] && listen=()
    [ -e "$work/data/identity.key" ] ||
        "$bin/defs" init --data-dir "$work/data" --difficulty 0 >/dev/null
    DEFS_DATA_DIR="$work/data" "$bin/defs-mount" "$work/defs" --no-mdns "${listen[@]}" \
        "${BOOT[@]}" "$@"
}

# Unmounts $1/defs and waits until its daemon has exited (it removes its pid file last).
unmount_defs() {
    fusermount3 -u "$1/defs"
    while [ -e "$1/data/defs-mount.pid" ]; do sleep 0.05; done
}
