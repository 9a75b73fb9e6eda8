//! The report as terminal tables. What to do before enforcing comes first;
//! the sections that name objects to act on never cut them.

use super::{JobPod, PodState, Report};

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

/// A job pod's state in the words of the report.
fn state_text(p: &JobPod) -> String {
    match p.state {
        PodState::Gated => format!("gated ({})", p.scheduling_gates.join(", ")),
        PodState::Pending => "pending".into(),
        PodState::Bound => format!("on {}", p.node.as_deref().unwrap_or("?")),
        PodState::Finished => "finished".into(),
    }
}

/// The report as terminal tables. What to do before enforcing comes first;
/// the new sections never cut the names and reasons they list.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    if !r.delete_or_fix_before_enforcing.is_empty() {
        o.push_str(&format!(
            "DELETE OR FIX THESE BEFORE ENFORCING ({}): existing pods that enforce mode would deny; enforcing does not remove them\n",
            r.delete_or_fix_before_enforcing.len()
        ));
        for p in r.job_pods.iter().filter(|p| p.would_deny) {
            // Whole: the names and the reason are what to act on.
            o.push_str(&format!(
                "  {:<72} {:<24} {}\n",
                format!("{}/{}", p.namespace, p.name),
                state_text(p),
                deny_reason(p)
            ));
        }
        o.push('\n');
    }
    o.push_str(&format!(
        "PROTECTED NODES ({} of {} nodes)\n",
        r.protected_nodes.len(),
        r.nodes_seen
    ));
    o.push_str(&format!("  {:<45} {:<30} {}\n", "NAME", "WHY", "TAINTS"));
    for n in &r.protected_nodes {
        o.push_str(&format!(
            "  {:<45} {:<30} {}\n",
            cut(&n.name, 45),
            cut(&n.reason, 30),
            cut(&n.taints.join(","), 40)
        ));
    }
    let on: Vec<&JobPod> = r.on_protected().collect();
    o.push_str(&format!("\nJOB PODS ON PROTECTED NODES ({})\n", on.len()));
    for p in &on {
        o.push_str(&format!(
            "  {}/{} on {}\n",
            p.namespace,
            cut(&p.name, 60),
            p.node.as_deref().unwrap_or("?")
        ));
    }
    o.push_str(&format!(
        "\nJOB PODS ({}; policy mode {})\n  {:<16} {:<52} {:<13} {:<6} {:<6} {}\n",
        r.job_pods.len(),
        r.mode,
        "NAMESPACE",
        "POD",
        "PROFILE",
        "DENY",
        "PATCH",
        "WHY"
    ));
    for p in &r.job_pods {
        let why = p
            .messages
            .first()
            .cloned()
            .or_else(|| p.changes.first().cloned())
            .unwrap_or_default();
        o.push_str(&format!(
            "  {:<16} {:<52} {:<13} {:<6} {:<6} {}\n",
            cut(&p.namespace, 16),
            cut(&p.name, 52),
            cut(p.profile.as_deref().unwrap_or(""), 13),
            if p.would_deny { "yes" } else { "no" },
            if p.would_patch { "yes" } else { "no" },
            cut(
                why.trim_start_matches("runner-fence denied the job pod: "),
                70
            )
        ));
    }
    o.push_str(&format!("\nRUNNER-FENCE WEBHOOKS ({})\n", r.webhooks.len()));
    for w in &r.webhooks {
        o.push_str(&format!(
            "  {:<11} {:<22} {:<32} failurePolicy={:<6} caBundle={}\n",
            w.kind,
            cut(&w.configuration, 22),
            cut(&w.webhook, 32),
            w.failure_policy,
            if w.ca_bundle { "set" } else { "MISSING" }
        ));
    }
    if r.webhooks.is_empty() {
        o.push_str("  none found: job pods are not guarded\n");
    }
    o.push_str(&format!("\nIN-TREE BACKSTOP: {}\n", r.backstop.summary()));
    for i in &r.backstop.issues {
        o.push_str(&format!("  {i}\n"));
    }
    o.push_str(&format!(
        "\nWEBHOOK SERVING ({} issues)\n",
        r.serving.issues.len()
    ));
    for t in &r.serving.targets {
        let deployments: Vec<String> = t
            .deployments
            .iter()
            .map(|d| format!("Deployment {} {}/{} Ready", d.name, d.ready, d.replicas))
            .collect();
        let endpoints = t
            .ready_endpoints
            .map(|n| format!("{n} ready endpoints"))
            .into_iter();
        let certs = t.certificates.iter().map(|c| {
            format!(
                "{} valid until {}",
                c.source,
                super::serving::date(c.not_after)
            )
        });
        o.push_str(&format!("  {}\n", t.target));
        for line in deployments.into_iter().chain(endpoints).chain(certs) {
            o.push_str(&format!("    {line}\n"));
        }
        for n in &t.notes {
            o.push_str(&format!("    note: {n}\n"));
        }
    }
    for i in &r.serving.issues {
        o.push_str(&format!("  {i}\n"));
    }
    o.push_str(&format!(
        "\nCOVERAGE GAPS ({}): what the policy covers that the cluster does not send to runner-fence\n",
        r.coverage_gaps.len()
    ));
    for g in &r.coverage_gaps {
        let scope = [g.namespace.as_str(), g.request.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        o.push_str(&format!(
            "  {:<11} {:<40} {}\n",
            g.webhook.as_str(),
            if scope.is_empty() {
                "-".to_string()
            } else {
                cut(&scope, 40)
            },
            g.reason
        ));
    }
    match &r.job_pods_outside_fence_listed_by {
        Some(first) => o.push_str(&format!(
            "\nJOB PODS OUTSIDE THE FENCE: listed under RunnerFencePolicy {first} (they are outside every policy's namespaces)\n"
        )),
        None => o.push_str(&format!(
            "\nJOB PODS OUTSIDE THE FENCE ({}): GitLab Runner job pods in namespaces the policy does not cover\n",
            r.job_pods_outside_fence.len()
        )),
    }
    for p in &r.job_pods_outside_fence {
        let node = match (&p.node, p.on_protected_node) {
            (Some(n), true) => format!("on protected node {n}"),
            (Some(n), false) => format!("on {n}"),
            (None, _) => "not scheduled".into(),
        };
        let from = [
            p.runner.as_ref().map(|r| format!("runner {r}")),
            p.job_id.as_ref().map(|j| format!("job {j}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        o.push_str(&format!(
            "  {:<72} {:<36} {}\n",
            format!("{}/{}", p.namespace, p.name),
            cut(&node, 36),
            from
        ));
    }
    if !r.job_pods_outside_fence.is_empty() {
        o.push_str(
            "  add their namespaces to match.namespaces (`ci-job-*` for namespace_per_job)\n",
        );
    }
    o.push_str(&format!(
        "\nRUNNER SERVICE ACCOUNTS REACHING OUTSIDE THE FENCE ({})\n",
        r.runner_reach.len()
    ));
    for x in &r.runner_reach {
        o.push_str(&format!("  {x}\n"));
    }
    if !r.unreadable.is_empty() {
        o.push_str(&format!(
            "\nUNREADABLE ({}): checks audit could not complete\n",
            r.unreadable.len()
        ));
        for u in &r.unreadable {
            o.push_str(&format!("  {u}\n"));
        }
    }
    o
}

/// The first reason enforce mode would deny the pod: as created, else as
/// stored when it becomes schedulable.
fn deny_reason(p: &JobPod) -> String {
    if let Some(f) = p.findings.first() {
        return f.message.clone();
    }
    if let Some(f) = p.when_schedulable.first() {
        let when = match p.state {
            PodState::Gated => "when its gates are removed (no mutation then)",
            _ => "as stored (no mutation runs on an existing pod)",
        };
        return format!("{when}: {}", f.message);
    }
    p.messages
        .first()
        .map(|m| {
            m.trim_start_matches("runner-fence denied the job pod: ")
                .to_string()
        })
        .unwrap_or_default()
}
