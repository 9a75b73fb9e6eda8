#!/usr/bin/env bash
# Creates fake Nodes shaped like the production cluster in the cluster that
# $KUBECONFIG points at (scripts/cluster/up.sh), and makes them Ready and
# schedulable. No kubelet runs: the Nodes are API objects only. Idempotent.
#
#   gitlab-1, gitlab-2   workload=gitlab, zone-a / zone-b, no taints
#   runner-1, runner-2   workload=gitlab-runner, zone-a / zone-b, taint workload=gitlab-runner:NoSchedule
#   fargate-1            eks.amazonaws.com/compute-type=fargate, taint eks.amazonaws.com/compute-type=fargate:NoSchedule
#
# Every node: cpu 8, memory 32Gi, pods 110; kubernetes.io/hostname, os, arch labels.
set -euo pipefail

me="scripts/cluster/nodes.sh"
[ -n "${KUBECONFIG:-}" ] || { echo "$me: KUBECONFIG is not set (see DIR/env written by up.sh)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "$me: kubectl is required" >&2; exit 1; }
# kubectl's discovery cache goes in the cluster directory, not ~/.kube/cache.
if [ -z "${KUBECACHEDIR:-}" ] && [ -e "$(dirname "$KUBECONFIG")/.runner-fence-cluster" ]; then
  KUBECACHEDIR="$(dirname "$KUBECONFIG")/kubectl-cache"
  export KUBECACHEDIR
fi

# name|labels (k=v,...)|taints (k=v:Effect,...)
nodes=(
  "gitlab-1|workload=gitlab,topology.kubernetes.io/zone=zone-a|"
  "gitlab-2|workload=gitlab,topology.kubernetes.io/zone=zone-b|"
  "runner-1|workload=gitlab-runner,topology.kubernetes.io/zone=zone-a|workload=gitlab-runner:NoSchedule"
  "runner-2|workload=gitlab-runner,topology.kubernetes.io/zone=zone-b|workload=gitlab-runner:NoSchedule"
  "fargate-1|eks.amazonaws.com/compute-type=fargate|eks.amazonaws.com/compute-type=fargate:NoSchedule"
)

# json NAME LABELS TAINTS -> prints "<node manifest>\t<status patch>\t<taints patch>" as JSON
render() {
  python3 - "$@" <<'PY'
import json, sys, datetime
name, labels, taints = sys.argv[1:4]
lab = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
for kv in filter(None, labels.split(",")):
    k, v = kv.split("=", 1)
    lab[k] = v
tl = []
for t in filter(None, taints.split(",")):
    kv, effect = t.rsplit(":", 1)
    k, v = kv.split("=", 1)
    tl.append({"key": k, "value": v, "effect": effect})
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
res = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": lab}, "spec": {"taints": tl}}
def cond(t, s, reason, msg):
    return {"type": t, "status": s, "reason": reason, "message": msg,
            "lastHeartbeatTime": now, "lastTransitionTime": now}
status = {"status": {
    "capacity": res, "allocatable": res,
    "conditions": [
        cond("Ready", "True", "KubeletReady", "fake node (runner-fence e2e): no kubelet"),
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "fake node"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "fake node"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "fake node"),
    ],
    "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.36.3",
                 "kubeProxyVersion": "", "containerRuntimeVersion": "fake://0", "osImage": "fake",
                 "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
}}
# A merge patch replaces the whole list, dropping e.g. node.kubernetes.io/not-ready.
spec = {"spec": {"taints": tl or None, "unschedulable": None}}
print(json.dumps(node), json.dumps(status), json.dumps(spec), sep="\t")
PY
}

for entry in "${nodes[@]}"; do
  IFS='|' read -r name labels taints <<<"$entry"
  IFS=$'\t' read -r manifest status spec < <(render "$name" "$labels" "$taints")
  # apply, not create: re-running updates labels and taints of existing nodes.
  kubectl apply --server-side --force-conflicts --field-manager=runner-fence-nodes -f - <<<"$manifest" >/dev/null
  # Ready=True through the status subresource, THEN the taints: on create the
  # TaintNodesByCondition admission plugin adds node.kubernetes.io/not-ready:NoSchedule.
  kubectl patch node "$name" --subresource=status --type=merge -p "$status" >/dev/null
  kubectl patch node "$name" --type=merge -p "$spec" >/dev/null
done

# Check: exactly the intended taints, Ready=True.
for entry in "${nodes[@]}"; do
  IFS='|' read -r name _ taints <<<"$entry"
  got=$(kubectl get node "$name" -o jsonpath='{range .spec.taints[*]}{.key}={.value}:{.effect},{end}')
  got=${got%,}
  ready=$(kubectl get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
  if [ "$got" != "$taints" ] || [ "$ready" != True ]; then
    echo "$me: node $name has taints [$got] (want [$taints]) and Ready=$ready (want True)" >&2
    exit 1
  fi
done
kubectl get nodes -L workload,topology.kubernetes.io/zone,eks.amazonaws.com/compute-type
