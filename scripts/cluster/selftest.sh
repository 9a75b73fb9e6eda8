#!/usr/bin/env bash
# Proves the loopback cluster ($KUBECONFIG, from scripts/cluster/up.sh, with
# scripts/cluster/nodes.sh applied) does what the end-to-end tests rely on:
#   1. both admission policy APIs are served (mutating and validating);
#   2. the controller-manager creates ServiceAccount "default" in a new namespace;
#   3. kube-scheduler binds a plain pod with nodeSelector workload=gitlab to a gitlab node,
#      and the ServiceAccount admission plugin injected its token volume;
#   4. a pod selecting the tainted runner nodes without a toleration stays Unschedulable;
#   5. a MutatingAdmissionPolicy bound to the test namespace mutates a ConfigMap.
# Cleans up after itself (pods are force-deleted: without a kubelet a bound pod
# would stay Terminating forever). Not run by up.sh.
set -euo pipefail

me="scripts/cluster/selftest.sh"
[ -n "${KUBECONFIG:-}" ] || { echo "$me: KUBECONFIG is not set (see DIR/env written by up.sh)" >&2; exit 1; }
timeout_s=${RF_SELFTEST_TIMEOUT:-20}
# kubectl's discovery cache goes in the cluster directory, not ~/.kube/cache.
if [ -z "${KUBECACHEDIR:-}" ] && [ -e "$(dirname "$KUBECONFIG")/.runner-fence-cluster" ]; then
  KUBECACHEDIR="$(dirname "$KUBECONFIG")/kubectl-cache"
  export KUBECACHEDIR
fi
ns="rf-selftest-$$-$RANDOM"
passed=0

fail() { echo "$me: FAIL: $*" >&2; exit 1; }
ok() { passed=$((passed + 1)); echo "ok - $*"; }

policy=""
cleanup() {
  if [ -n "$policy" ]; then
    kubectl delete mutatingadmissionpolicybinding "$policy" --ignore-not-found >/dev/null 2>&1 || true
    kubectl delete mutatingadmissionpolicy "$policy" --ignore-not-found >/dev/null 2>&1 || true
  fi
  kubectl -n "$ns" delete pods --all --grace-period=0 --force >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# poll DESCRIPTION CMD...: CMD until it succeeds or timeout_s passes.
poll() {
  local what=$1; shift
  local deadline=$(( $(date +%s) + timeout_s ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${timeout_s}s"
    sleep 0.2
  done
}

# 1. admission policy APIs
resources=$(kubectl api-resources --api-group=admissionregistration.k8s.io -o name)
for r in mutatingadmissionpolicies validatingadmissionpolicies mutatingadmissionpolicybindings validatingadmissionpolicybindings; do
  grep -qx "$r.admissionregistration.k8s.io" <<<"$resources" || fail "API resource $r is not served; served: $(echo "$resources" | tr '\n' ' ')"
done
ok "admissionregistration.k8s.io serves mutating and validating admission policies (and bindings)"

# 2. ServiceAccount default in a new namespace
kubectl create namespace "$ns" >/dev/null
has_default_sa() { kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; }
poll "ServiceAccount default in namespace $ns" has_default_sa
ok "controller-manager created ServiceAccount default in new namespace $ns"

# pod NAME NODESELECTOR_JSON
pod() {
  kubectl -n "$ns" create -f - >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "$1"},
 "spec": {"nodeSelector": $2, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}
EOF
}

# 3. scheduling onto an untainted gitlab node
pod on-gitlab '{"workload": "gitlab"}'
node_of() { kubectl -n "$ns" get pod "$1" -o jsonpath='{.spec.nodeName}'; }
bound() { [ -n "$(node_of on-gitlab)" ]; }
poll "pod on-gitlab bound by kube-scheduler" bound
node=$(node_of on-gitlab)
[ "$(kubectl get node "$node" -o jsonpath='{.metadata.labels.workload}')" = gitlab ] \
  || fail "pod on-gitlab was bound to $node, which is not a workload=gitlab node"
ok "kube-scheduler bound pod on-gitlab to $node"
vol=$(kubectl -n "$ns" get pod on-gitlab -o jsonpath='{.spec.volumes[*].name}')
[[ "$vol" == *kube-api-access-* ]] || fail "ServiceAccount admission did not add the kube-api-access volume (volumes: [$vol])"
ok "ServiceAccount admission injected $vol"
kubectl -n "$ns" delete pod on-gitlab --grace-period=0 --force >/dev/null 2>&1
gone() { ! kubectl -n "$ns" get pod on-gitlab >/dev/null 2>&1; }
poll "pod on-gitlab deleted" gone
ok "force-deleted the bound pod"

# 4. taints respected: runner nodes only take pods that tolerate them
pod on-runner '{"workload": "gitlab-runner"}'
unschedulable() {
  [ "$(kubectl -n "$ns" get pod on-runner -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}')" = Unschedulable ]
}
poll "pod on-runner reported Unschedulable" unschedulable
[ -z "$(node_of on-runner)" ] || fail "pod on-runner without a toleration was bound to $(node_of on-runner)"
ok "pod selecting runner nodes without a toleration stays Unschedulable (taint workload=gitlab-runner:NoSchedule)"

# 5. a MutatingAdmissionPolicy is enforced, not merely served
policy="rf-selftest-$$-$RANDOM"
kubectl apply -f - >/dev/null <<EOF
{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
 "metadata": {"name": "$policy"},
 "spec": {"failurePolicy": "Fail", "reinvocationPolicy": "Never",
          "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                               "operations": ["CREATE"], "resources": ["configmaps"]}]},
          "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {
            "expression": "Object{metadata: Object.metadata{labels: {\"rf-selftest\": \"mutated\"}}}"}}]}}
{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
 "metadata": {"name": "$policy"},
 "spec": {"policyName": "$policy",
          "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "$ns"}}}}}
EOF
# The policy takes effect a moment after it is created: retry with fresh ConfigMaps.
mutated() {
  kubectl -n "$ns" delete configmap probe --ignore-not-found >/dev/null 2>&1
  kubectl -n "$ns" create configmap probe >/dev/null 2>&1 &&
    [ "$(kubectl -n "$ns" get configmap probe -o jsonpath='{.metadata.labels.rf-selftest}')" = mutated ]
}
poll "MutatingAdmissionPolicy $policy labels a new ConfigMap" mutated
kubectl delete mutatingadmissionpolicybinding "$policy" >/dev/null
kubectl delete mutatingadmissionpolicy "$policy" >/dev/null
policy=""
ok "MutatingAdmissionPolicy (admissionregistration.k8s.io/v1) mutated a ConfigMap on create"

echo "selftest: $passed passed, 0 failed"
