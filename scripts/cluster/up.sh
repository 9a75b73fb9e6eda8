#!/usr/bin/env bash
# Starts a loopback Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) for end-to-end tests. No Docker, no
# kubelet: every process listens on 127.0.0.1 only, and all state, PKI and logs
# live under DIR. An existing DIR from an earlier run is stopped and wiped first.
#
#   scripts/cluster/up.sh DIR
#
# Writes DIR/kubeconfig (admin, client certificate, CA and key data embedded),
# DIR/env (KEY=value lines: KUBECONFIG, KUBECACHEDIR (kubectl's discovery cache,
# kept in DIR), ports, server URL) and DIR/pids (for down.sh). Ports (0 = pick a free one):
#   RF_APISERVER_PORT (16443)   RF_ETCD_PORT (0)   RF_ETCD_PEER_PORT (0)
#   RF_SCHEDULER_PORT (0)       RF_CONTROLLER_MANAGER_PORT (0)
# RF_READY_TIMEOUT (seconds, 60) bounds each wait.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
me="scripts/cluster/up.sh"

die() { echo "$me: $*" >&2; exit 1; }

{ [ $# -eq 1 ] && [ -n "$1" ]; } || die "usage: $me DIR"
dir=$(realpath -m -- "$1")
case "$dir" in
  / | "$HOME" | /root | /tmp | /home | /usr | /etc | /var) die "refusing to use $dir as the cluster directory" ;;
esac
case "$dir" in
  *[[:space:]]*) die "DIR must not contain whitespace: $dir" ;;
esac

timeout_s=${RF_READY_TIMEOUT:-60}
start_ts=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$start_ts" "$(date +%s.%N)"; }

# --- tools -------------------------------------------------------------------
for t in openssl curl python3 setsid; do
  command -v "$t" >/dev/null || die "$t is required"
done
if ! command -v etcd >/dev/null; then
  echo "== etcd missing: installing Debian's etcd-server" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update && apt-get install -y etcd-server; } >&2 || die "apt-get install etcd-server failed"
  command -v etcd >/dev/null || die "etcd-server installed but no etcd on PATH"
fi
etcd_bin=$(command -v etcd)

bin=$("$here/build.sh" | tail -n 1) || die "scripts/cluster/build.sh failed"
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  [ -x "$bin/$c" ] || die "scripts/cluster/build.sh printed $bin, which has no executable $c"
done

# --- DIR: stop and wipe a previous run ---------------------------------------
marker=.runner-fence-cluster
if [ -e "$dir" ]; then
  [ -d "$dir" ] || die "$dir exists and is not a directory"
  if [ -e "$dir/$marker" ]; then
    "$here/down.sh" "$dir" >&2
    rm -rf -- "$dir"
  elif [ -n "$(ls -A -- "$dir")" ]; then
    die "$dir exists, is not empty and was not made by $me; refusing to wipe it"
  fi
fi
mkdir -p "$dir"/{pki,etcd,logs,scheduler,controller-manager}
touch "$dir/$marker"
: > "$dir/pids"

# On any failure from here on: say what failed (fail() has already shown the
# log of a process that did not come up), then stop whatever was started.
started_ok=0 phase="" phase_log=""
cleanup() {
  local rc=$?
  [ "$started_ok" = 1 ] && return
  if [ -n "$phase" ]; then
    echo "$me: failed while $phase (exit $rc)" >&2
    [ -z "$phase_log" ] || tail -n 20 "$phase_log" >&2 2>/dev/null || true
  fi
  echo "$me: start failed; stopping what was started (state and logs kept in $dir)" >&2
  "$here/down.sh" "$dir" >&2 || true
}
trap cleanup EXIT

# --- ports -------------------------------------------------------------------
# Each requested port must be free; 0 picks free ones (held open together so
# they differ from each other).
ports=$(python3 - "${RF_ETCD_PORT:-0}" "${RF_ETCD_PEER_PORT:-0}" "${RF_APISERVER_PORT:-16443}" \
  "${RF_SCHEDULER_PORT:-0}" "${RF_CONTROLLER_MANAGER_PORT:-0}" <<'PY'
import socket, sys
names = ["RF_ETCD_PORT", "RF_ETCD_PEER_PORT", "RF_APISERVER_PORT", "RF_SCHEDULER_PORT", "RF_CONTROLLER_MANAGER_PORT"]
held, out = [], []
for name, want in zip(names, sys.argv[1:]):
    s = socket.socket()
    # As Go's listeners do: a port whose old connections linger in TIME_WAIT is
    # free, one with a live listener is not.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(want)))
    except OSError as e:
        sys.exit(f"{name}={want}: 127.0.0.1:{want} is not free ({e.strerror}); set {name}=0 to pick a free port")
    held.append(s)
    out.append(str(s.getsockname()[1]))
print(" ".join(out))
PY
) || die "port selection failed"
read -r etcd_port etcd_peer_port api_port sched_port cm_port <<<"$ports"
api_url="https://127.0.0.1:$api_port"

# --- PKI ---------------------------------------------------------------------
pki="$dir/pki"
phase="generating PKI with openssl"; phase_log="$pki/openssl.log"
(
  cd "$pki"
  exec 2>openssl.log
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
    -keyout ca.key -out ca.crt -subj "/CN=runner-fence-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign"
  # leaf NAME SUBJECT EXTENSIONS...
  leaf() {
    local name=$1 subj=$2; shift 2
    openssl req -new -nodes -newkey rsa:2048 -keyout "$name.key" -out "$name.csr" -subj "$subj"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "subjectKeyIdentifier=hash" \
      "authorityKeyIdentifier=keyid,issuer" "$@" > "$name.ext"
    openssl x509 -req -sha256 -days 365 -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
      -extfile "$name.ext" -out "$name.crt"
    rm -f "$name.csr"
  }
  leaf apiserver "/CN=kube-apiserver" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"
  leaf admin "/O=system:masters/CN=admin" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
  openssl pkey -in sa.key -pubout -out sa.pub
  chmod 600 ./*.key
)
phase=""; phase_log=""

b64() { base64 -w0 < "$1"; }
# kubeconfig FILE USER
kubeconfig() {
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: runner-fence-test
  cluster:
    server: $api_url
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: $2@runner-fence-test
  context:
    cluster: runner-fence-test
    user: $2
current-context: $2@runner-fence-test
EOF
  chmod 600 "$1"
}
# The scheduler and controller-manager reuse the admin certificate
# (system:masters): with --use-service-account-credentials=false every
# controller runs as the controller-manager's own identity and needs broad rights.
kubeconfig "$dir/kubeconfig" admin
kubeconfig "$dir/scheduler/kubeconfig" admin
kubeconfig "$dir/controller-manager/kubeconfig" admin

# --- processes ---------------------------------------------------------------

# start NAME CMD...: runs CMD in its own session, logs to DIR/logs/NAME.log.
# setsid execs (a background child is no group leader), so $! is CMD's pid.
start() {
  local name=$1; shift
  setsid "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null &
  echo "$name $!" >> "$dir/pids"
}

pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$dir/pids"; }

fail() { # NAME WHAT
  echo "$me: $1 $2; last lines of $dir/logs/$1.log:" >&2
  tail -n 30 "$dir/logs/$1.log" >&2 || true
  exit 1
}

# wait_for NAME WHAT CMD...: polls CMD until it succeeds, NAME dies or time runs out.
wait_for() {
  local name=$1 what=$2; shift 2
  local pid deadline
  pid=$(pid_of "$name")
  deadline=$(( $(date +%s) + timeout_s ))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "$name" "exited before $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$name" "did not become $what within ${timeout_s}s"
    sleep 0.2
  done
}

start etcd "$etcd_bin" \
  --name runner-fence --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "runner-fence=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state new \
  --logger zap --log-outputs stderr
etcd_healthy() { curl -sSf --max-time 2 "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; }
wait_for etcd healthy etcd_healthy

start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --endpoint-reconciler-type=none \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy \
  --allow-privileged=true
api_ready() {
  curl -sSf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$api_url/readyz" | grep -qx ok
}
wait_for kube-apiserver "ready (/readyz)" api_ready

start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager/kubeconfig" \
  --bind-address=127.0.0.1 --secure-port "$cm_port" --cert-dir "$dir/controller-manager" \
  --leader-elect=false \
  --controllers='*,-node-lifecycle-controller' \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=false \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --flex-volume-plugin-dir "$dir/controller-manager/flexvolume"

cat > "$dir/scheduler/config.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $dir/scheduler/kubeconfig
leaderElection:
  leaderElect: false
EOF
start kube-scheduler "$bin/kube-scheduler" \
  --config "$dir/scheduler/config.yaml" \
  --bind-address=127.0.0.1 --secure-port "$sched_port" --cert-dir "$dir/scheduler"

healthz() { curl -sSfk --max-time 2 "https://127.0.0.1:$1/healthz" | grep -qx ok; }
wait_for kube-controller-manager "healthy (/healthz)" healthz "$cm_port"
wait_for kube-scheduler "healthy (/healthz)" healthz "$sched_port"

# Pods are rejected by the ServiceAccount admission plugin until the
# controller-manager has made the namespace's "default" ServiceAccount.
default_sa() { KUBECONFIG="$dir/kubeconfig" KUBECACHEDIR="$dir/kubectl-cache" kubectl -n default get serviceaccount default; }
if command -v kubectl >/dev/null; then
  wait_for kube-controller-manager "done creating ServiceAccount default/default" default_sa
fi

cat > "$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
KUBECACHEDIR=$dir/kubectl-cache
RF_CLUSTER_DIR=$dir
RF_APISERVER_URL=$api_url
RF_APISERVER_PORT=$api_port
RF_ETCD_PORT=$etcd_port
RF_ETCD_PEER_PORT=$etcd_peer_port
RF_SCHEDULER_PORT=$sched_port
RF_CONTROLLER_MANAGER_PORT=$cm_port
RF_CA_FILE=$pki/ca.crt
EOF

started_ok=1
echo "== cluster up in $(elapsed): apiserver $api_url, etcd 127.0.0.1:$etcd_port, controller-manager :$cm_port, scheduler :$sched_port" >&2
echo "== export KUBECONFIG=$dir/kubeconfig   (or: set -a; . $dir/env; set +a)" >&2
echo "$dir/kubeconfig"
