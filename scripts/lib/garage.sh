# Sourced by scripts: start a one-node Garage on free loopback ports with
# data under $1, an imported key allowed to create buckets. Sets
# GARAGE_PID, GARAGE_ENDPOINT, GARAGE_KEY, GARAGE_SECRET.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_garage() {
  local dir=$1 bin="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
  local s3 rpc admin secret
  s3=$(free_port); rpc=$(free_port); admin=$(free_port)
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mkdir -p "$dir"
  cat >"$dir/garage.toml" <<EOT
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
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
  RUST_LOG=warn "$bin" -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
  GARAGE_PID=$!
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$rpc") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$s3") 2>/dev/null && break
    sleep 0.1
  done
  local g="$bin -c $dir/garage.toml" id
  # Right after start the node's RPC may refuse the CLI: try again a while.
  retry() { local i; for i in $(seq 1 300); do "$@" && return 0; sleep 0.2; done; return 1; }
  id=$(RUST_LOG=warn retry $g node id -q | cut -d@ -f1)
  RUST_LOG=warn retry $g layout assign -z dc1 -c 10G "$id" >/dev/null
  RUST_LOG=warn retry $g layout apply --version 1 >/dev/null
  GARAGE_KEY="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  GARAGE_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  RUST_LOG=warn retry $g key import --yes "$GARAGE_KEY" "$GARAGE_SECRET" -n bench >/dev/null
  RUST_LOG=warn retry $g key allow --create-bucket bench >/dev/null
  GARAGE_ENDPOINT="http://127.0.0.1:$s3"
}
