# Sourced by ci/bench and ci/bench-network: starts $1 `defs node` processes (binary $2) on
# 127.0.0.1 with data dirs under $3, waits until each has written DIR/addrs, and sets
#   CLUSTER_PIDS  the node processes (stop_cluster kills them)
#   BOOT          --bootstrap arguments naming every node
start_cluster() {
    local nodes=$1 bin=$2 dir=$3 i first
    CLUSTER_PIDS=()
    BOOT=()
    for i in $(seq 0 $((nodes - 1))); do
        "$bin" init --data-dir "$dir/n$i" --difficulty 0 >/dev/null
    done
    "$bin" node --data-dir "$dir/n0" --listen /ip4/127.0.0.1/tcp/0 --no-mdns 2>"$dir/n0.log" &
    CLUSTER_PIDS+=($!)
    until [ -s "$dir/n0/addrs" ]; do sleep 0.1; done
    first=$(head -1 "$dir/n0/addrs")
    for i in $(seq 1 $((nodes - 1))); do
        "$bin" node --data-dir "$dir/n$i" --listen /ip4/127.0.0.1/tcp/0 --no-mdns \
            --bootstrap "$first" 2>"$dir/n$i.log" &
        CLUSTER_PIDS+=($!)
    done
    for i in $(seq 0 $((nodes - 1))); do
        until [ -s "$dir/n$i/addrs" ]; do sleep 0.1; done
        BOOT+=(--bootstrap "$(head -1 "$dir/n$i/addrs")")
    done
}

stop_cluster() {
    local p
    for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
