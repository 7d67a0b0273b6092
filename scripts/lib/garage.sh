# Sourced by scripts: start Garage on free loopback ports with data under
# $1: one node, or a cluster of $2 nodes (replication factor 3 when there
# are 3 or more), with an imported key allowed to create buckets. Sets
# GARAGE_PID (the first node), GARAGE_PIDS (all), GARAGE_ENDPOINT (the
# first node's S3 API), GARAGE_KEY, GARAGE_SECRET.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_garage() {
  local dir=$1 nodes=${2:-1} bin="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
  local secret replication=1 n s3 rpc admin first_conf="" first_s3=""
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  [ "$nodes" -ge 3 ] && replication=3
  GARAGE_PIDS=""
  local rpcs=()
  for n in $(seq 1 "$nodes"); do
    s3=$(free_port); rpc=$(free_port); admin=$(free_port)
    mkdir -p "$dir/n$n"
    cat >"$dir/n$n/garage.toml" <<EOT
metadata_dir = "$dir/n$n/meta"
data_dir = "$dir/n$n/data"
db_engine = "sqlite"
replication_factor = $replication
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$secret"
EOT
    RUST_LOG=warn "$bin" -c "$dir/n$n/garage.toml" server >"$dir/n$n/garage.log" 2>&1 &
    GARAGE_PIDS="$GARAGE_PIDS $!"
    [ -z "$first_conf" ] && { first_conf="$dir/n$n/garage.toml"; first_s3=$s3; GARAGE_PID=$!; }
    rpcs+=("$rpc")
    for _ in $(seq 1 600); do
      (exec 3<>"/dev/tcp/127.0.0.1/$rpc") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$s3") 2>/dev/null && break
      sleep 0.1
    done
  done
  # Right after start a node's RPC may refuse the CLI: try again a while.
  retry() { local i; for i in $(seq 1 300); do "$@" && return 0; sleep 0.2; done; return 1; }
  local id ids=()
  for n in $(seq 1 "$nodes"); do
    id=$(RUST_LOG=warn retry "$bin" -c "$dir/n$n/garage.toml" node id -q | cut -d@ -f1)
    ids+=("$id")
    if [ "$n" -gt 1 ]; then
      RUST_LOG=warn retry "$bin" -c "$first_conf" node connect "$id@127.0.0.1:${rpcs[$((n-1))]}" >/dev/null
    fi
  done
  local g="$bin -c $first_conf"
  for n in $(seq 1 "$nodes"); do
    RUST_LOG=warn retry $g layout assign -z "dc$n" -c 10G "${ids[$((n-1))]}" >/dev/null
  done
  RUST_LOG=warn retry $g layout apply --version 1 >/dev/null
  GARAGE_KEY="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  GARAGE_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  RUST_LOG=warn retry $g key import --yes "$GARAGE_KEY" "$GARAGE_SECRET" -n bench >/dev/null
  RUST_LOG=warn retry $g key allow --create-bucket bench >/dev/null
  GARAGE_ENDPOINT="http://127.0.0.1:$first_s3"
}
