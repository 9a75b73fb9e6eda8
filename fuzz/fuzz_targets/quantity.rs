//! Kubernetes quantities: parse never panics; a parsed quantity equals itself
//! parsed again from its text, and comparison is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runner_fence::core::quantity::Quantity;

fuzz_target!(|data: (&str, &str)| {
    let (a, b) = data;
    let (Ok(x), y) = (Quantity::parse(a), Quantity::parse(b)) else { return };
    let again = Quantity::parse(x.as_str()).expect("a parsed quantity re-parses");
    assert_eq!(again, x);
    if let Ok(y) = y {
        assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
        assert_eq!(x == y, x.cmp(&y).is_eq());
    }
});
