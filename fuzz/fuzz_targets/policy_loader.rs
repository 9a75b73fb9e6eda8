//! Any text through the policy loader: an error or a policy, never a panic; and
//! everything generated from a loaded policy renders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = runner_fence::core::policy::parse(text, "fuzz.yaml") {
        let _ = runner_fence::core::policy::lint(&p);
        let _ = runner_fence::core::render::runner_config(&p, None);
        let opts = runner_fence::core::render::webhooks::Options::service("runner-fence", "runner-fence");
        let _ = runner_fence::core::render::webhooks::render_yaml(&p, &opts);
        let _ = runner_fence::core::render::admission_policy::render_yaml(&p, "runner-fence");
    }
});
