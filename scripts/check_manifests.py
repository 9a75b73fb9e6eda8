#!/usr/bin/env python3
"""Safety properties of the rendered runner-fence manifests.

Usage: check_manifests.py RENDERED_DIR REPO_ROOT
RENDERED_DIR holds render-enforce.yaml and render-audit.yaml (the webhook
configurations and backstop `runner-fence render` generates for the reference policy
in both modes: what the controller applies), kustomize-base.yaml and
kustomize-cert-manager.yaml (`kubectl kustomize`) and helm-*.yaml (the chart, from
scripts/check-chart.sh). The matchConditions are evaluated with a real CEL
implementation against the GitLab job pod fixtures, so the check proves which pods
the apiserver would send to the webhook at all.
"""
import base64
import json
import pathlib
import sys

import celpy
import yaml

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def load(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    check(len(found) == 1, f"exactly one {kind} {name or ''} (found {len(found)})")
    return found[0] if found else {}


def namespace_selected(selector, ns):
    """Evaluates a namespaceSelector against a namespace's automatic name label."""
    labels = {"kubernetes.io/metadata.name": ns}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        has, val = e["key"] in labels, labels.get(e["key"])
        op, vals = e["operator"], e.get("values") or []
        ok = {"In": has and val in vals, "NotIn": not has or val not in vals,
              "Exists": has, "DoesNotExist": not has}[op]
        if not ok:
            return False
    return True


def cel_programs(webhook):
    env = celpy.Environment()
    return [(c["name"], env.program(env.compile(c["expression"]))) for c in webhook.get("matchConditions") or []]


def sent_to_webhook(webhook, review):
    """Would the apiserver call this webhook for this AdmissionReview request?"""
    req = review["request"]
    resource = req["resource"]["resource"] + ("/" + req["subResource"] if req.get("subResource") else "")
    rule_ok = any(resource in r["resources"] and req["operation"] in r["operations"] for r in webhook["rules"])
    if not rule_ok or not namespace_selected(webhook["namespaceSelector"], req["namespace"]):
        return False
    activation = {"object": celpy.json_to_cel(req["object"]),
                  "request": celpy.json_to_cel({"namespace": req["namespace"], "operation": req["operation"]})}
    return all(bool(p.evaluate(activation)) for _, p in cel_programs(webhook))


def check_webhooks(docs, overlay, fixtures, audit):
    mwc = one(docs, "MutatingWebhookConfiguration")
    vwc = one(docs, "ValidatingWebhookConfiguration")
    if not mwc or not vwc:
        return
    check(mwc["metadata"]["name"] < "0500-amazon-eks-fargate-mutation.amazonaws.com",
          f"{overlay}: mutating configuration must sort before EKS's Fargate mutation")
    want_policy = "Ignore" if audit else "Fail"
    for cfg, kind in ((mwc, "mutating"), (vwc, "validating")):
        for w in cfg["webhooks"]:
            where = f"{overlay}: {kind} webhook {w['name']}"
            check(w["sideEffects"] == "None", f"{where}: sideEffects None")
            check(w["admissionReviewVersions"] == ["v1"], f"{where}: admissionReviewVersions [v1]")
            check(0 < w["timeoutSeconds"] <= 5, f"{where}: timeoutSeconds <= 5")
            check(w["failurePolicy"] == want_policy, f"{where}: failurePolicy {want_policy}")
            svc = w["clientConfig"].get("service", {})
            check(svc.get("namespace") == "runner-fence" and svc.get("name") == "runner-fence",
                  f"{where}: points at the runner-fence Service")
            check(svc.get("path") == ("/mutate" if kind == "mutating" else "/validate"), f"{where}: path")
            sel = w["namespaceSelector"]
            for ns in ("runner-fence", "kube-system", "default", "gitlab"):
                check(not namespace_selected(sel, ns), f"{where}: namespace {ns} must not be selected")
            check(namespace_selected(sel, "gitlab-runner"), f"{where}: gitlab-runner selected")
            # Scope is the namespace only: no objectSelector, no condition on the object.
            check(not w.get("objectSelector"), f"{where}: no objectSelector (labels are the attacker's)")
            for c in w.get("matchConditions") or []:
                check("object." not in c["expression"], f"{where}: matchCondition {c['name']} must not read the object")
            pem = base64.b64decode(w["clientConfig"].get("caBundle", "")).decode()
            check(pem.startswith("-----BEGIN CERTIFICATE-----"), f"{where}: caBundle is a PEM CA")
        resources = sorted(r for rule in cfg["webhooks"][0]["rules"] for r in rule["resources"])
        if kind == "mutating":
            check(cfg["webhooks"][0].get("reinvocationPolicy") == "IfNeeded", f"{overlay}: reinvocationPolicy IfNeeded")
            check(resources == ["pods"], f"{overlay}: mutating rules cover pods only")
            ops = sorted(o for rule in cfg["webhooks"][0]["rules"] for o in rule["operations"])
            check(ops == ["CREATE"], f"{overlay}: mutating is CREATE only")
        else:
            check(resources == ["bindings", "pods", "pods/binding", "pods/ephemeralcontainers", "pods/resize"],
                  f"{overlay}: validating covers pods, pods/binding, bindings and pods/ephemeralcontainers")

    # Which fixtures reach the webhooks: every pod in the runner namespace, whatever its name or labels.
    for name, review in fixtures.items():
        op = review["request"]["operation"]
        in_scope = review["request"]["namespace"] == "gitlab-runner"
        for cfg, kind in ((mwc, "mutating"), (vwc, "validating")):
            sent = sent_to_webhook(cfg["webhooks"][0], review)
            expected = in_scope and (kind == "validating" or op == "CREATE")
            check(sent == expected, f"{overlay}: {kind} webhook {'gets' if sent else 'skips'} {name}")
    # Bindings (both paths) and ephemeral containers reach the validating webhook, whatever the pod's name.
    for pod in ("runner-abc-project-1-concurrent-0-xyz", "gitlab-runner-7d9f8b6c5d-q8kzv", "netshoot"):
        for resource, sub in (("pods", "binding"), ("bindings", None)):
            review = {"request": {"resource": {"resource": resource}, "operation": "CREATE", "namespace": "gitlab-runner",
                                  "object": {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                                             "target": {"kind": "Node", "name": "n1"}}}}
            if sub:
                review["request"]["subResource"] = sub
            check(sent_to_webhook(vwc["webhooks"][0], review), f"{overlay}: {resource} {sub or ''} of {pod}")
        eph = {"request": {"resource": {"resource": "pods"}, "subResource": "ephemeralcontainers", "operation": "UPDATE",
                           "namespace": "gitlab-runner", "object": {"metadata": {"name": pod}}}}
        check(sent_to_webhook(vwc["webhooks"][0], eph), f"{overlay}: ephemeral containers of {pod}")
    # Outside the runner namespaces nothing is sent.
    other = {"request": {"resource": {"resource": "pods"}, "operation": "CREATE", "namespace": "default",
                         "object": {"metadata": {"name": "runner-x"}}}}
    check(not sent_to_webhook(mwc["webhooks"][0], other), f"{overlay}: default namespace is not sent")


def check_backstop(docs, overlay, audit):
    """The in-tree backstop is installed, scoped like the webhooks, and denies unless in audit."""
    # Named by action: runner-fence-backstop denies, runner-fence-backstop-audit warns.
    name = "runner-fence-backstop-audit" if audit else "runner-fence-backstop"
    other = "runner-fence-backstop" if audit else "runner-fence-backstop-audit"
    vap = one(docs, "ValidatingAdmissionPolicy", name)
    binding = one(docs, "ValidatingAdmissionPolicyBinding", name)
    check(not [d for d in docs if d.get("kind", "").startswith("ValidatingAdmissionPolicy")
               and d["metadata"]["name"] == other], f"{overlay}: no {other}")
    if not vap or not binding:
        return
    want = ["Warn", "Audit"] if audit else ["Deny"]
    check(binding["spec"]["validationActions"] == want, f"{overlay}: backstop validationActions {want}")
    check(binding["spec"]["policyName"] == name, f"{overlay}: backstop binding names its policy")
    check(vap["spec"]["failurePolicy"] == "Fail", f"{overlay}: backstop failurePolicy Fail")
    # Nothing is patched in audit mode: a placement check would warn on every pod.
    placement = [v for v in vap["spec"]["validations"] if v["message"].startswith("placement:")]
    check(bool(placement) != audit, f"{overlay}: backstop placement check {'absent' if audit else 'present'}")
    sel = vap["spec"]["matchConstraints"]["namespaceSelector"]
    for ns in ("runner-fence", "kube-system", "default"):
        check(not namespace_selected(sel, ns), f"{overlay}: backstop must not select {ns}")
    check(namespace_selected(sel, "gitlab-runner"), f"{overlay}: backstop selects gitlab-runner")
    env = celpy.Environment()
    for v in vap["spec"]["validations"] + vap["spec"].get("variables", []) + vap["spec"].get("matchConditions", []):
        try:
            env.compile(v["expression"])
        except Exception as e:  # noqa: BLE001 - report which expression
            check(False, f"{overlay}: backstop CEL does not compile: {e}: {v['expression'][:80]}")


def check_deployment(docs, overlay):
    d = one(docs, "Deployment", "runner-fence")
    if not d:
        return
    spec, pod = d["spec"], d["spec"]["template"]["spec"]
    check(spec["replicas"] >= 2, f"{overlay}: at least 2 replicas")
    keys = {c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])}
    check({"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, f"{overlay}: spread over nodes and zones")
    check(not pod.get("tolerations"), f"{overlay}: the webhook tolerates nothing")
    exprs = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for term in exprs:
        e = {(x["key"], x["operator"]): x.get("values") for x in term.get("matchExpressions", [])}
        check("gitlab-runner" in (e.get(("workload", "NotIn")) or []), f"{overlay}: never on runner nodes")
        check("fargate" in (e.get(("eks.amazonaws.com/compute-type", "NotIn")) or []), f"{overlay}: never on Fargate")
    psc = pod["securityContext"]
    check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{overlay}: pod non-root with RuntimeDefault seccomp")
    for c in pod["containers"]:
        sc = c["securityContext"]
        check(sc.get("readOnlyRootFilesystem") is True, f"{overlay}: read-only root filesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{overlay}: no privilege escalation")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{overlay}: all capabilities dropped")
        check(sc.get("runAsNonRoot") is True, f"{overlay}: container non-root")
        check(c["resources"].get("requests") and c["resources"].get("limits"), f"{overlay}: requests and limits")
        for probe in ("readinessProbe", "livenessProbe"):
            check(c.get(probe, {}).get("httpGet", {}).get("port") == "admin", f"{overlay}: {probe} on the admin port")
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{overlay}: readiness on /readyz")
        for m in c.get("volumeMounts", []):
            check("subPath" not in m, f"{overlay}: {m['name']} mounted without subPath (live reload)")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        delay = int(env.get("RUNNER_FENCE_SHUTDOWN_DELAY_SECONDS") or 10)
        drain = int(env.get("RUNNER_FENCE_DRAIN_SECONDS") or 10)
        check(pre > 0, f"{overlay}: a preStop sleep before SIGTERM")
        check(delay >= c["readinessProbe"]["periodSeconds"], f"{overlay}: shutdown delay covers a readiness period")
        check(pod.get("terminationGracePeriodSeconds", 30) > pre + delay + drain,
              f"{overlay}: terminationGracePeriodSeconds exceeds preStop + delay + drain")
    check_chart_rbac(docs, overlay)


def check_chart_rbac(docs, overlay):
    """The chart runs the policy controller: it renders no policy, webhook or backstop
    (runner-fence applies them) and may write the generated objects by name only."""
    for kind in ("ConfigMap", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                 "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        check(not [d for d in docs if d["kind"] == kind and "grafana_dashboard" not in d["metadata"].get("labels", {})],
              f"{overlay}: no {kind} rendered by Helm")
    c = one(docs, "Deployment", "runner-fence")["spec"]["template"]["spec"]["containers"][0]
    check("--policies-from-cluster" in c.get("args", []), f"{overlay}: serve --policies-from-cluster")
    pdb = one(docs, "PodDisruptionBudget", "runner-fence")
    check(pdb.get("spec", {}).get("minAvailable") == 1, f"{overlay}: PDB keeps one replica")
    for role in [d for d in docs if d["kind"] in ("ClusterRole", "Role")]:
        for r in role.get("rules", []):
            name = role["metadata"]["name"]
            writes = set(r.get("verbs", [])) & {"update", "patch", "delete"}
            # Reading admission configurations is the audit's business; writing them
            # (and the Lease and certificate Secret) is by name only.
            if writes and (r.get("apiGroups") == ["admissionregistration.k8s.io"] or r.get("resources") in (["secrets"], ["leases"])):
                check(bool(r.get("resourceNames")) or r.get("verbs") == ["create"],
                      f"{overlay}: {role['kind']} {name} touches {r.get('resources')} by name only")
            check("*" not in r.get("verbs", []) and "*" not in r.get("resources", []), f"{overlay}: {name} has no wildcards")


def strip_helm(doc):
    """A chart object as the kustomize manifests ship it (scripts/update-kustomize.py)."""
    for meta in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata", {})):
        for k in ("helm.sh/chart", "app.kubernetes.io/managed-by"):
            (meta.get("labels") or {}).pop(k, None)
    return doc


def check_kustomize_is_the_chart(docs, helm_docs, overlay):
    """kustomize and the chart install the same objects (one implementation)."""
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    chart = {key(d): strip_helm(d) for d in helm_docs
             if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})}
    ours = {key(d): d for d in docs if d["kind"] not in ("Namespace", "CustomResourceDefinition")}
    check(set(ours) == set(chart), f"{overlay}: the chart's objects: {sorted(set(ours) ^ set(chart))}")
    for k in sorted(set(ours) & set(chart)):
        check(ours[k] == chart[k], f"{overlay}: {k[0]}/{k[1]} differs from the chart's")
    ns = one(docs, "Namespace", "runner-fence")
    check(bool(ns) and ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
          f"{overlay}: namespace runner-fence enforces the restricted Pod Security Standard")
    check(bool(one(docs, "CustomResourceDefinition", "runnerfencepolicies.runner-fence.dev")), f"{overlay}: the CRD")


def main():
    rendered, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    fixtures = {p.name: json.loads(p.read_text()) for p in sorted((root / "tests/data").glob("*.json"))}
    checked = []
    # What the controller applies, for the reference policy in both modes.
    for mode in ("enforce", "audit"):
        path = rendered / f"render-{mode}.yaml"
        if path.exists():
            docs = load(path)
            check_webhooks(docs, f"render-{mode}", fixtures, mode == "audit")
            check_backstop(docs, f"render-{mode}", mode == "audit")
            checked.append(path.stem)
    # The chart with the settings a deployment uses (helm-*.yaml, scripts/check-chart.sh),
    # and the kustomize manifests, which must install exactly the chart's objects.
    for path in sorted(rendered.glob("helm-*.yaml")):
        check_deployment(load(path), path.stem)
        checked.append(path.stem)
    for overlay, chart in (("base", "managed"), ("cert-manager", "cert-manager")):
        path = rendered / f"kustomize-{overlay}.yaml"
        if not path.exists():
            continue
        docs = load(path)
        check_deployment(docs, f"kustomize-{overlay}")
        helm_path = rendered / f"helm-{chart}.yaml"
        check(helm_path.exists(), f"kustomize-{overlay}: {helm_path.name} to compare with")
        if helm_path.exists():
            check_kustomize_is_the_chart(docs, load(helm_path), f"kustomize-{overlay}")
        checked.append(path.stem)
    check(len(checked) >= 3, f"rendered manifests in {rendered} (found {checked})")
    print(f"checked: {', '.join(checked)}")
    if failures:
        for f in failures:
            print(f"FAIL {f}")
        print(f"0 passed, {len(failures)} failed")
        sys.exit(1)
    print("manifest safety checks passed")


if __name__ == "__main__":
    main()
