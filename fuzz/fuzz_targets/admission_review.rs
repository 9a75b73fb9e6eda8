//! Any body through the whole admission layer, both endpoints, as the server
//! calls it: never a panic, and every answered review echoes its request's uid.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runner_fence::webhook::admission;
use runner_fence::core::engine::Endpoint;
use runner_fence::core::nodes::{NodeInfo, NodeSnapshot};
use runner_fence::core::policy::Policy;

fn setup() -> &'static (Policy, NodeSnapshot) {
    static S: OnceLock<(Policy, NodeSnapshot)> = OnceLock::new();
    S.get_or_init(|| {
        let nodes = NodeSnapshot::new([
            NodeInfo { name: "gitlab-1".into(), labels: [("workload".to_string(), "gitlab".to_string())].into(), taints: vec![] },
            NodeInfo { name: "runner-1".into(), labels: [("workload".to_string(), "gitlab-runner".to_string())].into(), taints: vec![] },
        ]);
        (runner_fence::core::policy::embedded().expect("reference policy"), nodes)
    })
}

fuzz_target!(|body: &[u8]| {
    let (policy, nodes) = setup();
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        for n in [None, Some(nodes)] {
            if let Ok(r) = admission::handle(policy, endpoint, body, n) {
                assert_eq!(serde_json::to_value(&r.response).expect("json")["response"]["uid"].as_str(), Some(r.request.uid()));
                assert_eq!(serde_json::to_value(&r.response).expect("json")["response"]["allowed"].as_bool(), Some(r.decision.allowed()));
            }
        }
    }
});
